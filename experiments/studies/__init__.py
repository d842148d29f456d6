"""``study``: the three studies reproduced and broken: the study engine (cells, resume), the studies themselves, their reports and their command."""

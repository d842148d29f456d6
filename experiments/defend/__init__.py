"""``defend``: a defense evaluated by the engine (:mod:`experiments.engine`): the squeezers, the trained and the generative defenses, their adaptive attacks, tables, files and figures."""

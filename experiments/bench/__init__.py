"""Speed and agreement measurements: own attacks and defenses against every library (``make bench``, ``python -m advbridge.experiments.bench.attacks``)."""

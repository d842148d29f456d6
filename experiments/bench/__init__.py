"""Speed and agreement measurements: own attacks and defenses against every library (``make bench`` = ``python cli.py bench``)."""

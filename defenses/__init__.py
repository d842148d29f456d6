"""In-house defenses, grouped as ART groups its defences, by where they act.

- ``defenses.preprocessor``: input transformations in front of the classifier (feature squeezing).
"""

"""In-house defenses, grouped as ART groups its defences, by where they act.

- ``defenses.preprocessor``: input transformations in front of the classifier (feature squeezing).
"""

if (
    __name__ != "advbridge.defenses"
):  # the folder is advbridge/defenses (a link): a bare ``import defenses`` would load a second copy
    raise ImportError(f"import advbridge.defenses, not {__name__}: the card's folders are subpackages of advbridge")

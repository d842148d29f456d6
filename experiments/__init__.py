if (
    __name__ != "advbridge.experiments"
):  # the folder is advbridge/experiments (a link): a bare ``import experiments`` would load a second copy
    raise ImportError(f"import advbridge.experiments, not {__name__}: the card's folders are subpackages of advbridge")

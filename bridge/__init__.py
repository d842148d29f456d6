"""The bridge between advbridge and the reference libraries: attack and defense specs, the runner, one adapter
per library (:mod:`advbridge.bridge.adapters`), I/O, provenance and ``torchrun`` support."""

if (
    __name__ != "advbridge.bridge"
):  # the folder is advbridge/bridge (a link): a bare ``import bridge`` would load a second copy
    raise ImportError(f"import advbridge.bridge, not {__name__}: the card's folders are subpackages of advbridge")

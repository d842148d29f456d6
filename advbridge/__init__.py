"""advbridge: adversarial attacks and defenses for image classifiers, cross-validated against ART, torchattacks,
foolbox and adv-lib through one adapter interface.

The repository keeps the design card's folders at its top level (``bridge/``, ``own_attacks/``, ``defenses/``,
``zoo/``, ``experiments/``); ``advbridge/bridge`` and its siblings are committed links to them, so the one
import path ``advbridge.bridge...`` is a real path in a checkout (editors, mypy, grep) and installed (a wheel
holds the files), and no generic top-level name (``bridge``, ``zoo``...) is ever imported.
"""

from __future__ import annotations

__version__ = "0.1.0"

#: The public API, imported on first use (``import advbridge`` itself loads no torch): name -> (module, attribute).
_API = {
    "compare": ("advbridge.api", "compare"),
    "evaluate_defense": ("advbridge.api", "evaluate_defense"),
    "audit": ("advbridge.api", "audit"),
    "fgsm": ("advbridge.own_attacks", "fgsm"),
    "pgd": ("advbridge.own_attacks", "pgd"),
    "deepfool": ("advbridge.own_attacks", "deepfool"),
    "ddn": ("advbridge.own_attacks", "ddn"),
    "BitDepth": ("advbridge.defenses.preprocessor", "BitDepth"),
    "MedianFilter": ("advbridge.defenses.preprocessor", "MedianFilter"),
    "Resample": ("advbridge.defenses.preprocessor", "Resample"),
    "PreprocessedClassifier": ("advbridge.defenses.preprocessor", "PreprocessedClassifier"),
    "SqueezeDetector": ("advbridge.defenses.detector", "SqueezeDetector"),
    "BPDA": ("advbridge.defenses.preprocessor.bpda", "BPDA"),
    "AttackSpec": ("advbridge.bridge.spec", "AttackSpec"),
    "AdvBridgeError": ("advbridge.bridge.errors", "AdvBridgeError"),
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        module, attribute = _API[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'advbridge' has no attribute {name!r}")

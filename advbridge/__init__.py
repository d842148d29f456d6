"""advbridge: adversarial attacks and defenses for image classifiers, cross-validated against ART, torchattacks,
foolbox and adv-lib through one adapter interface.

The repository keeps the design card's folders at its top level (``bridge/``, ``own_attacks/``, ``defenses/``,
``zoo/``, ``experiments/``); installed, they are subpackages of this package (``advbridge.bridge``...) and add
no top-level names of their own. In a checkout the same names resolve to those folders (see ``__path__``).
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"


def _checkout_root() -> Path | None:
    """The repository root when this package is imported from a checkout (not an installed wheel)."""
    root = Path(__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if (root / "bridge" / "__init__.py").is_file() and pyproject.is_file():
        if 'name = "advbridge"' in pyproject.read_text(encoding="utf-8"):
            return root
    return None


# In a checkout, advbridge.bridge, advbridge.zoo... are the card's top-level folders. Installed, they are
# inside this package's folder and found there first.
if (_root := _checkout_root()) is not None and str(_root) not in __path__:
    __path__.append(str(_root))

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

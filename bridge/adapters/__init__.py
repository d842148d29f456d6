"""Adapter registry. Library modules are imported on first use (ART alone takes seconds to import)."""

from __future__ import annotations

import importlib

from advbridge.bridge.adapters.base import Adapter, describe
from advbridge.bridge.errors import check_name

#: advbridge's names of the libraries, ``own`` first: agreement is always measured against it.
LIBRARIES = ("own", "art", "foolbox", "torchattacks", "advlib")

_CLASSES = {
    "own": ("advbridge.bridge.adapters.own", "OwnAdapter"),
    "art": ("advbridge.bridge.adapters.art", "ArtAdapter"),
    "foolbox": ("advbridge.bridge.adapters.foolbox", "FoolboxAdapter"),
    "torchattacks": ("advbridge.bridge.adapters.torchattacks", "TorchattacksAdapter"),
    "advlib": ("advbridge.bridge.adapters.advlib", "AdvlibAdapter"),
}


def get_adapter(name: str) -> Adapter:
    """The adapter of library ``name`` (one of :data:`LIBRARIES`)."""
    check_name("library", name, LIBRARIES)
    module, cls = _CLASSES[name]
    return getattr(importlib.import_module(module), cls)()


__all__ = ["LIBRARIES", "Adapter", "describe", "get_adapter"]

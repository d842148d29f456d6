"""A user's own classifier, evaluated as it is, never trained: a Python factory and a weights file loaded strictly.

- ``--model path/to/file.py:factory`` or ``--model package.module:factory``: ``factory()`` returns an
  ``nn.Module`` that maps images in [0, 1] (N, C, H, W) to logits (N, K), its normalization inside (or given
  by ``mean``/``std``, then applied by :class:`~advbridge.zoo.models.NormalizedClassifier`).
- ``--checkpoint FILE`` (``.safetensors`` or a ``torch.save`` state dict, read by
  :func:`~advbridge.zoo.models.read_state_dict`: ``weights_only=True``, never pickled code): loaded with
  every key and shape checked; a missing, unexpected or mis-shaped tensor is refused by name
  (:class:`~advbridge.bridge.errors.CheckpointError`), so a model is never half-loaded. With a timm name
  instead of a factory the file holds that backbone's (or our wrapped classifier's) tensors.

The model's card (``source: user``) records the factory, the file and its sha256, and the clean accuracy on
the evaluated images, for the ``failed_training`` check.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from advbridge.bridge.errors import CheckpointError, InvalidParameterError

_FACTORY = re.compile(r"^(?P<source>.+):(?P<name>[A-Za-z_]\w*)$")
_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def is_factory(model: str | None) -> bool:
    """Whether ``model`` names a factory (``file.py:name`` or ``package.module:name``) rather than a timm name."""
    return model is not None and _FACTORY.match(model) is not None


def load_factory(spec: str) -> Callable[..., Any]:
    """The callable ``spec`` names: ``path/to/file.py:name`` (the file imported under a private module name,
    its folder first on ``sys.path`` meanwhile, for its own imports) or ``package.module:name``.

    Raises:
        InvalidParameterError: a malformed spec, a missing file or module, or a name that is not callable.
    """
    match = _FACTORY.match(spec)
    if match is None:
        raise InvalidParameterError(
            f"expected --model as path/to/file.py:factory or package.module:factory, got {spec!r}"
        )
    source, name = match["source"], match["name"]
    if source.endswith(".py"):
        path = Path(source).expanduser().resolve()
        if not path.is_file():
            raise InvalidParameterError(f"expected a Python file for --model {spec!r}, got no file at {path}")
        module_name = f"advbridge_user_model_{abs(hash(str(path)))}"
        loader = importlib.util.spec_from_file_location(module_name, path)
        assert loader is not None and loader.loader is not None
        module = importlib.util.module_from_spec(loader)
        sys.path.insert(0, str(path.parent))
        try:
            loader.loader.exec_module(module)
        finally:
            sys.path.remove(str(path.parent))
    elif _MODULE.match(source):
        try:
            module = importlib.import_module(source)
        except ModuleNotFoundError as exc:
            raise InvalidParameterError(f"expected an importable module for --model {spec!r}: {exc}") from None
    else:
        raise InvalidParameterError(
            f"expected --model as path/to/file.py:factory or package.module:factory, got {spec!r}"
        )
    factory = getattr(module, name, None)
    if not callable(factory):
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise InvalidParameterError(
            f"expected a callable {name!r} in {source}, got {factory!r}; callables there: {', '.join(found)}"
        )
    return factory


def load_strict(model: nn.Module, state: Mapping[str, Tensor], path: str | os.PathLike) -> None:
    """Load ``state`` into ``model`` only if every key and shape matches; else raise :class:`CheckpointError`
    naming the missing, unexpected and mis-shaped tensors (nothing is loaded)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs the model's {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]  # fmt: skip
    problems = [
        f"{label}: {', '.join(items[:8])}{f' (+{len(items) - 8} more)' if len(items) > 8 else ''}"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes))
        if items
    ]
    if problems:
        raise CheckpointError(f"refused {path}: it does not fit the model ({'; '.join(problems)})")
    model.load_state_dict(dict(state), strict=True)


def build_factory_model(
    spec: str, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> nn.Module:
    """``factory()`` of ``spec``, checked to be an ``nn.Module``, wrapped with ``mean``/``std`` normalization when
    given (the factory's model then sees normalized images)."""
    model = load_factory(spec)()
    if not isinstance(model, nn.Module):
        raise InvalidParameterError(f"expected {spec} to return a torch.nn.Module, got {type(model).__name__}")
    if (mean is None) != (std is None):
        raise InvalidParameterError(f"expected both --mean and --std or neither, got mean {mean} and std {std}")
    if mean is not None and std is not None:
        from advbridge.zoo.models import NormalizedClassifier

        model = NormalizedClassifier(model, mean, std, num_classes=0, in_chans=len(mean), model_name=spec)
    return model


def load_checkpoint_file(model: nn.Module, checkpoint: str | os.PathLike) -> str:
    """Read ``checkpoint`` safely and load it strictly into ``model`` (or, for our normalization wrapper, into
    its backbone when the file has the bare backbone's keys); returns the file's sha256."""
    from advbridge.zoo.checkpoints import file_sha256
    from advbridge.zoo.models import read_state_dict

    state = read_state_dict(checkpoint)
    backbone = getattr(model, "backbone", None)
    own_keys = set(model.state_dict())
    target = model if backbone is None or set(state) & own_keys == set(state) else backbone
    load_strict(target, state, checkpoint)
    return file_sha256(checkpoint)

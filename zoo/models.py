"""Classifiers: any timm backbone behind one normalization wrapper, plus two small in-house nets.

Every attack sees the same function: images in [0, 1] to logits. Normalization lives inside the model
(:class:`NormalizedClassifier`), never in the data pipeline, so every library attacks the same thing.

The in-house nets are registered in timm's registry when this module is imported, so
``timm.create_model("advbridge_mnist_cnn")`` and ``timm.list_models("advbridge*")`` find them:

- ``advbridge_mnist_cnn``: conv32-pool-conv64-pool-fc128-fc for 28×28 grey digits (about 0.42 M parameters).
- ``advbridge_cifar_cnn``: the 6-conv net of CIFAR-10 robustness studies: three blocks of
  [conv3×3, ReLU, conv3×3, ReLU, maxpool2] with widths 32/64/128, then one linear layer.

ReLUs are never ``inplace``: the attack runner registers backward hooks on these models.
"""

from __future__ import annotations

import difflib
import logging
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import Tensor, nn

from advbridge.bridge.errors import (
    CheckpointError,
    InvalidInputError,
    InvalidParameterError,
    UnknownNameError,
    check_name,
)

logger = logging.getLogger(__name__)

FINETUNE_MODES = ("all", "head")
OWN_MODELS = ("advbridge_mnist_cnn", "advbridge_cifar_cnn")


class NormalizedClassifier(nn.Module):
    """``forward(x) = backbone((x - mean) / std)``: a classifier on images in [0, 1].

    Args:
        backbone: a module mapping normalized images to logits.
        mean: per-channel mean (one value is broadcast to every channel).
        std: per-channel standard deviation, all > 0.
        num_classes: number of logits (default: ``backbone.num_classes``).
        in_chans: image channels (default: ``len(mean)``).
        model_name: the timm name, kept for cards and tables.

    Shape:
        x: ``[N, in_chans, H, W]`` in [0, 1]; output: ``[N, num_classes]`` logits.
    """

    mean: Tensor  # buffers registered in __init__ (nn.Module's __getattr__ is typed Tensor | Module)
    std: Tensor

    def __init__(
        self,
        backbone: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        num_classes: int | None = None,
        in_chans: int | None = None,
        model_name: str = "",
    ) -> None:
        super().__init__()
        in_chans = in_chans or len(mean)
        for label, values in (("mean", mean), ("std", std)):
            if len(values) not in (1, in_chans):
                raise InvalidParameterError(f"expected {label} with 1 or {in_chans} values, got {tuple(values)}")
        if min(std) <= 0:
            raise InvalidParameterError(f"expected std > 0, got {tuple(std)}")
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).expand(in_chans).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).expand(in_chans).reshape(1, -1, 1, 1))
        # timm backbones keep num_classes as a plain int attribute (nn.Module's __getattr__ types it Tensor | Module)
        self.num_classes = num_classes if num_classes is not None else int(backbone.num_classes)  # type: ignore[arg-type]
        self.in_chans = in_chans
        self.model_name = model_name

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise InvalidInputError(f"expected images [N, {self.in_chans}, H, W], got shape {tuple(x.shape)}")
        return self.backbone((x - self.mean) / self.std)

    def extra_repr(self) -> str:
        return f"model_name={self.model_name!r}, num_classes={self.num_classes}, in_chans={self.in_chans}"


class _SmallCNN(nn.Module):
    """timm-style plumbing shared by the in-house nets (``get_classifier``, ``reset_classifier``...)."""

    features: nn.Sequential
    head: nn.Sequential
    fc: nn.Module  # a Linear layer, or an Identity after reset_classifier(0)
    num_classes: int
    num_features: int

    def get_classifier(self) -> nn.Module:
        """The last linear layer (what ``set_trainable(model, "head")`` trains)."""
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the last layer by a fresh one with ``num_classes`` outputs (0: no layer)."""
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: Tensor) -> Tensor:
        """Feature maps before pooling."""
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Logits from feature maps (or the features before the last layer if ``pre_logits``)."""
        x = self.head(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


class MnistCNN(_SmallCNN):
    """conv32-pool-conv64-pool-fc128-fc for 28×28 digits; other sizes are pooled to 7×7 first.

    Args:
        num_classes: number of logits.
        in_chans: image channels.
        drop_rate: dropout before the last layer (training only).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes, self.num_features = num_classes, 128
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(7), nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(drop_rate)
        )
        self.fc = nn.Linear(128, num_classes)


class CifarCNN(_SmallCNN):
    """Three blocks of [conv3×3, ReLU, conv3×3, ReLU, maxpool2], then a linear classifier.

    Feature maps are average-pooled to 4×4 before the classifier (the identity at 32×32), so any input side
    divisible by 8 works, and so do 64×64 images.

    Args:
        num_classes: number of logits.
        in_chans: image channels.
        widths: channels of the three blocks.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, widths: Sequence[int] = (32, 64, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width in widths:
            layers += [nn.Conv2d(in_chans, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1)]
            layers += [nn.ReLU(), nn.MaxPool2d(2)]
            in_chans = width
        self.num_classes, self.num_features = num_classes, widths[-1] * 16
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.fc = nn.Linear(self.num_features, num_classes)


def _cfg(in_chans: int, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> dict:
    # No url / hf_hub_id: timm lists these as architectures without pretrained weights.
    return {
        "num_classes": 10,
        "input_size": (in_chans, size, size),
        "mean": mean,
        "std": std,
        "first_conv": "features.0",
        "classifier": "fc",
    }


default_cfgs = generate_default_cfgs(
    {
        "advbridge_mnist_cnn": _cfg(1, 28, (0.1307,), (0.3081,)),
        "advbridge_cifar_cnn": _cfg(3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    }
)


@register_model
def advbridge_mnist_cnn(pretrained: bool = False, **kwargs) -> MnistCNN:
    """Small CNN for 28×28 grey digits (see :class:`MnistCNN`)."""
    return build_model_with_cfg(MnistCNN, "advbridge_mnist_cnn", pretrained, **kwargs)


@register_model
def advbridge_cifar_cnn(pretrained: bool = False, **kwargs) -> CifarCNN:
    """The 6-conv CIFAR-10 net (see :class:`CifarCNN`)."""
    return build_model_with_cfg(CifarCNN, "advbridge_cifar_cnn", pretrained, **kwargs)


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read tensors from a ``.safetensors`` file or a ``torch.save`` file, never running pickled code.

    ``torch.load`` runs with ``weights_only=True``; common wrappers (``{"state_dict": ...}``,
    ``{"model": ...}``) and the ``module.`` prefix of ``DataParallel`` are unwrapped.

    Raises:
        CheckpointError: missing, unreadable, unsafe (needs code execution) or without tensors.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"expected a weights file, got no file at {path}")
    state: object  # a dict of tensors from safetensors; anything from torch.load, checked below
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"could not read safetensors file {path}: {exc}") from exc
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise CheckpointError(
                f"refused to load {path}: it holds pickled objects that need code execution, which could run "
                "arbitrary code; only plain tensors are accepted (weights_only=True). Re-save the state dict "
                "from a trusted source (torch.save(model.state_dict(), ...) or safetensors)"
            ) from exc
        except (RuntimeError, EOFError, OSError, ValueError) as exc:
            raise CheckpointError(f"could not read weights file {path}: {exc}") from exc
    if isinstance(state, dict):
        for key in ("state_dict", "model", "model_state_dict", "state_dict_ema"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    tensors = {k.removeprefix("module."): v for k, v in state.items()} if isinstance(state, dict) else {}
    tensors = {k: v for k, v in tensors.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(f"expected a state dict of tensors in {path}, got {type(state).__name__} without any")
    return tensors


def load_backbone_weights(backbone: nn.Module, path: str | os.PathLike) -> list[str]:
    """Load a checkpoint into ``backbone``, skipping tensors whose shapes do not fit.

    Keys may carry the ``backbone.`` prefix of our own checkpoints. A different ``num_classes`` skips the
    classifier head, a different ``in_chans`` skips the stem; both are logged as warnings.

    Returns:
        The names of the loaded tensors.

    Raises:
        CheckpointError: if the file cannot be read or no tensor matches the model.
    """
    state = read_state_dict(path)
    if any(k.startswith("backbone.") for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    target = backbone.state_dict()
    loaded = [k for k, v in state.items() if k in target and target[k].shape == v.shape]
    mismatched = [
        f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}"
        for k, v in state.items()
        if k in target and target[k].shape != v.shape
    ]
    if not loaded:
        raise CheckpointError(
            f"expected weights for {type(backbone).__name__} in {path}, got no matching tensor "
            f"(file keys: {', '.join(list(state)[:5])}...; model keys: {', '.join(list(target)[:5])}...)"
        )
    if mismatched:
        logger.warning("skipped %d tensors of %s with other shapes: %s", len(mismatched), path, "; ".join(mismatched))
    unused = [k for k in state if k not in target]
    missing = [k for k in target if k not in state]
    if unused or missing:
        logger.warning(
            "%s: %d unused tensors %s; %d model tensors not in the file %s",
            path,
            len(unused),
            unused[:5],
            len(missing),
            missing[:5],
        )
    backbone.load_state_dict({**target, **{k: state[k] for k in loaded}})
    logger.info("loaded %d/%d tensors from %s", len(loaded), len(target), path)
    return loaded


def _network_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError]
    try:
        from huggingface_hub.errors import HfHubHTTPError

        errors.append(HfHubHTTPError)
    except ImportError:
        pass
    return tuple(errors)


def _unknown_model(name: str) -> UnknownNameError:
    names = timm.list_models()
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return UnknownNameError(
        f"unknown model {name!r}{hint} accepted: any of the {len(names)} names of timm.list_models(), "
        f"e.g. {', '.join(OWN_MODELS)}, resnet18"
    )


def create_classifier(
    model_name: str,
    *,
    num_classes: int,
    in_chans: int,
    mean: Sequence[float],
    std: Sequence[float],
    pretrained: bool = False,
    weights: str | os.PathLike | None = None,
    image_size: int | None = None,
) -> NormalizedClassifier:
    """Build a timm backbone by name and wrap it with its normalization.

    Args:
        model_name: any name of ``timm.list_models()`` (tags such as ``resnet18.a1_in1k`` allowed).
        num_classes: number of logits.
        in_chans: image channels.
        mean: per-channel mean of the data the model expects.
        std: per-channel standard deviation.
        pretrained: download timm's pretrained weights (needs a network).
        weights: a local ``.safetensors`` / ``.pt`` file to load; mismatched head or stem tensors are skipped.
        image_size: passed as ``img_size`` to models that take it (ViTs...); ignored by others.

    Returns:
        The classifier on [0, 1] images, in eval mode.

    Raises:
        UnknownNameError: unknown model name (with a did-you-mean).
        InvalidParameterError: bad sizes, or both ``pretrained`` and ``weights``.
        CheckpointError: pretrained weights unavailable, or an unreadable / unsafe / mismatched weights file.
    """
    if not isinstance(model_name, str) or not timm.is_model(model_name):
        raise _unknown_model(str(model_name))
    for label, value in (("num_classes", num_classes), ("in_chans", in_chans)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidParameterError(f"expected {label} as an int >= 1, got {value!r}")
    if pretrained and weights is not None:
        raise InvalidParameterError(f"expected pretrained=True or weights=FILE, got both (weights={weights})")
    if pretrained and not timm.models.is_model_pretrained(model_name):
        raise CheckpointError(f"timm has no pretrained weights for {model_name!r}; train one or pass --weights FILE")
    # None values are dropped, as timm does, so that unset options never override a model's defaults.
    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is not None and image_size == cfg.input_size[-1]:
        image_size = None  # the model's own size: nothing to pass
    kwargs: dict[str, Any] = {"num_classes": num_classes, "in_chans": in_chans, "img_size": image_size}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        try:
            backbone = timm.create_model(model_name, pretrained=pretrained, **kwargs)
        except TypeError as exc:
            if "img_size" not in str(exc):
                raise
            kwargs.pop("img_size")  # this architecture has no img_size argument (CNNs adapt by themselves)
            backbone = timm.create_model(model_name, pretrained=pretrained, **kwargs)
    except _network_errors() as exc:
        if not pretrained:
            raise
        raise CheckpointError(
            f"could not download pretrained weights for {model_name!r} ({type(exc).__name__}: {exc}); "
            "without a network pass a local file instead: --weights FILE (weights=FILE)"
        ) from exc
    if weights is not None:
        load_backbone_weights(backbone, weights)
    model = NormalizedClassifier(backbone, mean, std, num_classes=num_classes, in_chans=in_chans, model_name=model_name)
    return model.eval()


def set_trainable(model: nn.Module, mode: str) -> int:
    """Choose what fine-tuning updates: ``"all"`` parameters or only the classifier ``"head"``.

    Args:
        model: a :class:`NormalizedClassifier` or a timm backbone (needs ``get_classifier()`` for ``"head"``).
        mode: ``"all"`` or ``"head"``.

    Returns:
        The number of trainable parameters.
    """
    check_name("finetune mode", mode, FINETUNE_MODES)
    backbone = model.backbone if isinstance(model, NormalizedClassifier) else model
    for p in backbone.parameters():
        p.requires_grad_(mode == "all")
    if mode == "head":
        if not hasattr(backbone, "get_classifier"):
            raise InvalidParameterError(f"expected a timm model with get_classifier(), got {type(backbone).__name__}")
        # checked by hasattr above (nn.Module's __getattr__ types the method Tensor | Module)
        head_params = list(backbone.get_classifier().parameters())  # type: ignore[operator]
        if not head_params:
            raise InvalidParameterError(f"expected a classifier head with parameters in {type(backbone).__name__}")
        for p in head_params:
            p.requires_grad_(True)
    return sum(p.numel() for p in backbone.parameters() if p.requires_grad)

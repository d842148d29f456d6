"""Checks on images and labels shared by every public entry point.

Each failure raises :class:`~bridge.errors.InvalidInputError` with the bad value and what is accepted.
"""

from __future__ import annotations

import torch
from torch import Tensor

from advbridge.bridge.errors import InvalidInputError


def check_inputs(x: object) -> Tensor:
    """Check a batch an attack accepts: a float tensor of shape ``(N, ...)`` (at least 2-D: feature vectors
    ``(N, D)``, signals ``(N, C, L)``, images ``(N, C, H, W)``, volumes...), N >= 1, finite, in [0, 1]."""
    return _check_batch(x, "inputs", "(N, ...) with at least 2 dimensions", lambda ndim: ndim >= 2)


def check_images(x: object, *, in_chans: int | None = None) -> Tensor:
    """Check a batch of images: a float tensor of shape ``(N, C, H, W)``, N >= 1, finite, in [0, 1]."""
    x = _check_batch(x, "images", "(N, C, H, W)", lambda ndim: ndim == 4)
    if in_chans is not None and x.shape[1] != in_chans:
        raise InvalidInputError(f"expected {in_chans} channel(s) for this model, got shape {tuple(x.shape)}")
    return x


def _check_batch(x: object, what: str, shape: str, ndim_ok) -> Tensor:
    if not isinstance(x, Tensor):
        raise InvalidInputError(f"expected {what} as a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise InvalidInputError(f"expected floating-point {what} in [0, 1], got dtype {x.dtype}")
    if not ndim_ok(x.ndim):
        raise InvalidInputError(f"expected {what} of shape {shape}, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise InvalidInputError(f"expected a non-empty batch of {what}, got 0 {what}")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise InvalidInputError(f"expected finite pixel values, got {bad} NaN/Inf value(s)")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise InvalidInputError(f"expected pixel values in [0, 1], got min {lo:.4g}, max {hi:.4g}")
    return x


def check_labels(y: object, n: int, *, num_classes: int | None = None) -> Tensor:
    """Check labels: an integer tensor of shape ``(n,)`` with values in ``[0, num_classes)``."""
    if not isinstance(y, Tensor):
        raise InvalidInputError(f"expected labels as a torch.Tensor, got {type(y).__name__}")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise InvalidInputError(f"expected integer class labels, got dtype {y.dtype}")
    if y.ndim != 1 or y.shape[0] != n:
        raise InvalidInputError(f"expected labels of shape ({n},) to match {n} images, got shape {tuple(y.shape)}")
    if num_classes is not None and n and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise InvalidInputError(
            f"expected labels in [0, {num_classes - 1}], got min {int(y.min())}, max {int(y.max())}"
        )
    return y.long()

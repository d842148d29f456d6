"""Small helpers shared by the in-house attacks."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bridge.errors import InvalidParameterError


def check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InvalidParameterError(f"expected {name} > 0, got {value!r}")
    return float(value)


def check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidParameterError(f"expected steps >= 1 (an integer), got {steps!r}")
    return steps


def loss_input_gradient(model: nn.Module, inputs: Tensor, labels: Tensor) -> Tensor:
    """∇_x of the summed cross-entropy, w.r.t. the input only.

    The sum (not the mean) keeps each sample's gradient independent of the batch size. ``autograd.grad``
    with the input as the only target skips the weight gradients, so one call costs one forward and
    one input-backward pass: the floor that every gradient attack pays.
    """
    x = inputs.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), labels, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def batch_view(values: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-sample vector ``(N,)`` to broadcast against ``like`` ``(N, ...)``."""
    return values.view(-1, *([1] * (like.ndim - 1)))


def flat_norm(t: Tensor, p: float) -> Tensor:
    """Per-sample ``p``-norm of a batch, shape ``(N,)``."""
    return t.flatten(1).norm(p=p, dim=1)


def channels_last_copy(x: Tensor) -> Tensor:
    """A copy of ``x`` in channels-last layout when it is a 4-D batch (a plain copy otherwise).

    Convolutions on channels-last inputs run oneDNN's NHWC kernels on CPU: measured 27 % less time for
    one forward and nine input-backward passes of the MNIST CNN (500 digits, 2 cores), 8 % for the CIFAR
    CNN, none for resnet18, with identical gradients. Row indexing keeps the layout, so the minimal-norm
    attacks copy their working batch once; results are returned in the default layout.
    """
    return x.clone(memory_format=torch.channels_last) if x.dim() == 4 else x.clone()

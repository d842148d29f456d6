"""The margin loss and the success rule every evaluation of advbridge uses (defend's adaptive attacks, the
audit's remedies, its path tracker and its indicators).

The margin (Carlini & Wagner 2017, "Towards Evaluating the Robustness of Neural Networks", S&P, f₆):

    L(z, y) = z_y − max_{j≠y} z_j,

below 0 exactly when the sample is misclassified; attacks ascend −L. With a ``reject`` class (a detector seen
as one classifier, :class:`~advbridge.defenses.detector.RejectingClassifier`) the reject logit counts with the
true class: ``L = max(z_y, z_reject) − max_{j∉{y, reject}} z_j``, below 0 when fooled and not detected.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


def margin_loss(logits: Tensor, labels: Tensor, reject: int | None = None) -> Tensor:
    """``L = z_y − max_{j≠y} z_j`` per row (module docstring); with ``reject``, the detector-aware margin.

    Shape:
        logits ``(N, K)``, labels ``(N,)`` → ``(N,)``.
    """
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    if reject is not None:
        true = torch.maximum(true, logits[:, reject])
        others = others.index_fill(1, torch.tensor([reject], device=logits.device), float("-inf"))
    return true - others.amax(1)


def fooled(pred: Tensor, labels: Tensor, reject: int | None = None) -> Tensor:
    """Misclassified, and not rejected (when there is a reject class)."""
    wrong = pred != labels
    return wrong if reject is None else wrong & (pred != reject)


def margin_objective(model: nn.Module, reject: int | None = None) -> Callable[[Tensor, Tensor], Tensor]:
    """The objective an attack ascends on ``model``: ``−L(model(x), y)`` per sample (module docstring)."""
    return lambda x, y: -margin_loss(model(x), y, reject)


def cross_entropy_objective(model: nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
    """The per-sample cross-entropy of ``model`` as an objective ``(x, y) -> (N,)``."""
    return lambda x, y: torch.nn.functional.cross_entropy(model(x), y, reduction="none")

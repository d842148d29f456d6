"""The modules the audit attacks besides the model itself: BPDA through a surrogate (:class:`StraightThrough`),
log-probabilities of a probability-output model (:class:`LogOutputs`), the BPDA variant a system declares
(:func:`declared_bpda`), and the radius of an unbounded attack (:func:`unbounded_eps`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from advbridge.defenses.preprocessor.bpda import BPDA


class StraightThrough(nn.Module):
    """BPDA with the surrogate as the differentiable approximation of the whole system (Athalye et al. 2018,
    Sec. 4.1, generalized): forward, the system's outputs; backward, the surrogate's gradient."""

    def __init__(self, system: nn.Module, surrogate: nn.Module) -> None:
        super().__init__()
        self.system, self.surrogate = system, surrogate

    def forward(self, x: Tensor) -> Tensor:
        approx = self.surrogate(x)
        with torch.no_grad():
            exact = self.system(x.detach()).to(approx.dtype)
        if exact.shape[1] > approx.shape[1]:  # a detector's reject logit: no gradient from the surrogate
            approx = torch.nn.functional.pad(approx, (0, exact.shape[1] - approx.shape[1]))
        return approx + (exact - approx).detach()


class LogOutputs(nn.Module):
    """log of a model's probability outputs (clamped at 1e-30): logits up to a constant per row."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).clamp_min(1e-30).log()


def unbounded_eps(norm: str, x: Tensor) -> float:
    """An eps no perturbation inside [0, 1] exceeds: 1 (L∞) or √d (L2)."""
    return 1.0 if norm == "Linf" else math.sqrt(x[0].numel())


def declared_bpda(model: nn.Module) -> nn.Module | None:
    """The BPDA variant a system declares: its own ``bpda`` module (a detector's), or ``classifier(BPDA(preprocess))``
    for a system that declares ``preprocess`` and ``classifier``; ``None`` when it declares neither."""
    own = getattr(model, "bpda", None)
    if isinstance(own, nn.Module):
        return own.eval()
    preprocess, classifier = getattr(model, "preprocess", None), getattr(model, "classifier", None)
    if isinstance(preprocess, nn.Module) and isinstance(classifier, nn.Module):
        return nn.Sequential(BPDA(preprocess), classifier).eval()
    return None

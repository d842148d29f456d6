"""The construction of the binarization test's problems (Zimmermann et al. 2022, Sec. 3; the test itself and its
full description: :mod:`~advbridge.experiments.audit.binarization`): the frozen features at the defended model's
last linear layer (:func:`find_head`, :func:`head_features`), the inner points within η·ε and the boundary point
at ε (:func:`inner_points`, :func:`boundary_point`), the two-class readout with its decision boundary moved next
to the boundary point and its logits rescaled (:func:`fit_readout`), and the binarized model (:class:`Binarized`):
the defended model with its last layer's output replaced by the readouts.

References:
    Zimmermann, Brendel, Tramèr, Carlini. Increasing Confidence in Adversarial Robustness Evaluations. NeurIPS
    2022, Sec. 3. https://arxiv.org/abs/2206.13991; google-research/active-adversarial-tests,
    ``active_tests/decision_boundary_binarization.py`` (``_create_raw_data``,
    ``_train_logistic_regression_classifier``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from torch import Tensor, nn

from advbridge.experiments.audit.tracker import distances

#: How close the readout's decision boundary is moved to the boundary point (their case studies' 0.999).
CLOSENESS = 0.999
#: Images per forward pass while computing features.
CHUNK = 500


# -- features ---------------------------------------------------------------------------------------------------
@dataclass
class Head:
    """Where the readout goes: ``module``, the defended model's last linear layer (its input: the features φ),
    found as ``where``; ``None`` when the model's outputs are the features (the readout is applied after it)."""

    where: str
    module: nn.Module | None = None


def _declared_head(module: nn.Module) -> nn.Module | None:
    """``module.get_classifier()`` when it is a layer from features to outputs (``out_features``)."""
    getter = getattr(module, "get_classifier", None)
    head = getter() if callable(getter) else None
    return head if isinstance(head, nn.Module) and isinstance(getattr(head, "out_features", None), int) else None


def find_head(model: nn.Module, outputs: int) -> Head:
    """The defended model's last linear layer: the ``get_classifier()`` of the model or of its first submodule
    that has one (timm's API; a :class:`~advbridge.zoo.models.NormalizedClassifier`'s backbone, the classifier
    inside a wrapper), else the last ``nn.Linear`` of the first ``nn.Sequential`` ending in one, with
    ``outputs`` outputs; else the logits (also for a model with a reject class, whose reject logit is computed
    from its classifier's)."""
    if getattr(model, "reject_class", None) is None:
        for name, module in model.named_modules():
            head = _declared_head(module)
            if head is not None and head.out_features == outputs:
                return Head(f"{name + '.' if name else ''}get_classifier()", head)
        for name, module in model.named_modules():
            if isinstance(module, nn.Sequential) and len(module) and isinstance(module[-1], nn.Linear):
                if module[-1].out_features == outputs:
                    return Head(f"{name or 'model'}[-1]", module[-1])
    return Head("logits (no last linear layer found)")


def _rows(rows: int, problems: int) -> Tensor:
    """The problem of each row the head sees: ``rows`` a multiple of the batch (a defense that stacks several
    passes of its input, e.g. mixup draws, stacks them in batch order)."""
    if rows % problems:
        raise ValueError(f"expected a multiple of the {problems} problems' rows at the last layer, got {rows}")
    return torch.arange(rows) % problems


@torch.no_grad()
def head_features(model: nn.Module, head: Head, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """φ of ``points`` (the inputs of the last layer, or the outputs), the model's logits there, and the point
    each row belongs to (several rows per point when the defense stacks several passes)."""
    phis, logits, owners = [], [], []
    for offset, chunk in zip(range(0, len(points), CHUNK), points.split(CHUNK)):
        if head.module is None:
            out = model(chunk).float()
            phis.append(out.flatten(1))
            logits.append(out.flatten(1))
            owners.append(torch.arange(len(chunk)) + offset)
            continue
        seen: list[tuple[Tensor, Tensor]] = []
        handle = head.module.register_forward_hook(lambda m, i, o, seen=seen: seen.append((i[0].detach(), o.detach())))
        try:
            model(chunk)
        finally:
            handle.remove()
        if not seen:
            raise ValueError(f"the last layer ({head.where}) was not called")
        for phi, out in seen:
            phis.append(phi.float().flatten(1))
            logits.append(out.float())
            owners.append(_rows(len(phi), len(chunk)) + offset)
    return torch.cat(phis), torch.cat(logits), torch.cat(owners)


# -- the points --------------------------------------------------------------------------------------------------
def _clipped_at(x: Tensor, directions: Tensor, targets: Tensor) -> Tensor:
    """Points x + t·u clipped to [0, 1] at L2 distance ``targets`` from ``x`` (clipping-aware, the reference's
    ``clipping_aware_rescaling``), t per direction by bisection (the clipped distance grows with t); a target out
    of reach leaves the farthest point of that direction (its distance below the target).

    Shape:
        x ``(C, ...)``, directions ``(M, C, ...)`` of unit L2 norm, targets ``(M,)``; returns ``(M, C, ...)``.
    """
    x64, view = x.double(), (-1, *[1] * x.dim())

    def reach(t: Tensor) -> Tensor:
        return ((x64 + t.view(view) * directions).clamp(0, 1) - x64).flatten(1).norm(dim=1)

    low = torch.zeros_like(targets)
    high = torch.full_like(targets, math.sqrt(x.numel()) * 2)  # past it every pixel is clipped
    for _ in range(60):
        mid = (low + high) / 2
        short = reach(mid) < targets
        low, high = torch.where(short, mid, low), torch.where(short, high, mid)
    return (x64 + high.view(view) * directions).clamp(0, 1)


def inner_points(x: Tensor, count: int, eps: float, norm: str, generator: torch.Generator, eta: float) -> Tensor:
    """``count`` points in the ball of radius η·ε around ``x`` (one image ``(C, ...)``), in [0, 1]: L∞, uniform
    in the box, clipped; L2, uniform in the ball, each at its drawn distance after clipping (clipping-aware).

    Shape:
        returns ``(count, C, ...)``.
    """
    shape = (count, *x.shape)
    if norm == "Linf":
        delta = (2 * torch.rand(shape, generator=generator, dtype=torch.float64) - 1) * (eta * eps)
        return (x.double() + delta).clamp(0, 1).to(x.dtype)
    u = torch.randn(shape, generator=generator, dtype=torch.float64)
    u = u / u.flatten(1).norm(dim=1).view(-1, *[1] * x.dim())
    radius = torch.rand(count, generator=generator, dtype=torch.float64) ** (1 / x.numel())
    return _clipped_at(x, u, eta * eps * radius).to(x.dtype)


def boundary_point(x: Tensor, eps: float, norm: str, generator: torch.Generator) -> Tensor | None:
    """One point at distance exactly ε from ``x`` after clipping to [0, 1] (module docstring, step 1); ``None``
    when the clipped ball has no such point in the drawn direction."""
    x64 = x.double()
    if norm == "Linf":
        signs = torch.randint(0, 2, x.shape, generator=generator, dtype=torch.int64).double() * 2 - 1
        point = (x64 + eps * signs).clamp(0, 1)
    else:
        u = torch.randn(x.shape, generator=generator, dtype=torch.float64)
        point = _clipped_at(x, (u / u.norm())[None], torch.tensor([eps], dtype=torch.float64))[0]
    if abs(float(distances((point - x64)[None], norm)) - eps) > 1e-6 * eps:
        return None
    return point.to(x.dtype)


# -- the readout -------------------------------------------------------------------------------------------------
def fit_readout(
    phi: np.ndarray, labels: np.ndarray, model_logits: np.ndarray, closeness: float = CLOSENESS
) -> tuple[np.ndarray, np.ndarray] | None:
    """The two-class readout ``(W (2, D), b (2,))`` of steps 2–4 (module docstring), or ``None`` when the
    logistic regression does not separate every training point."""
    mean, scale = phi.mean(0), phi.std(0) + 1e-12  # standardized for the solver, folded back below
    regression = LogisticRegression(C=np.inf, max_iter=10000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        regression.fit((phi - mean) / scale, labels)
    w = regression.coef_[0] / scale
    c = float(regression.intercept_[0] - (regression.coef_[0] * mean / scale).sum())
    weight, bias = np.stack([-w, w]), np.array([-c, c])
    logits = phi @ weight.T + bias
    if not np.array_equal(logits.argmax(1), labels):
        return None
    difference = logits[:, 0] - logits[:, 1]
    lowest = float(difference[labels == 1].max())  # the boundary point's (its least confident draw): below 0
    bias = bias + np.array([-closeness * lowest / 2, closeness * lowest / 2])
    factor = float(logits.max() - logits.min()) / max(float(model_logits.max() - model_logits.min()), 1e-12)
    offset = float(model_logits.min()) - float(logits.min()) / factor
    return weight / factor, bias / factor + offset


class Readouts(nn.Module):
    """One two-class linear readout per problem: row r of a batch of features goes through readout r mod P.

    Shape:
        ``(R, D)`` features, R a multiple of the P problems (:func:`_rows`) → ``(R, 2)``.
    """

    weight: Tensor
    bias: Tensor

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight.float())
        self.register_buffer("bias", bias.float())

    def forward(self, phi: Tensor) -> Tensor:
        index = _rows(len(phi), len(self.weight)).to(phi.device)
        phi = phi.flatten(1).to(self.weight.dtype)
        return torch.einsum("rd,rkd->rk", phi, self.weight[index]) + self.bias[index]


class Binarized(nn.Module):
    """The defended model with its last linear layer's output replaced by the problems' readouts (or the
    readouts after its outputs): every other part of its forward pass, randomness included, as it is."""

    def __init__(self, model: nn.Module, head: Head, readouts: Readouts) -> None:
        super().__init__()
        self.model, self.readouts = model, readouts
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        if self.head.module is None:
            return self.readouts(self.model(x))
        handle = self.head.module.register_forward_hook(lambda m, i, o: self.readouts(i[0]))
        try:
            return self.model(x)
        finally:
            handle.remove()

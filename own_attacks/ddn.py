"""DDN, decoupled direction and norm (Rony et al. 2019), L2, untargeted or targeted.

The direction and the norm of δ are updated separately (Alg. 1). For k = 0 .. steps−1:

    α_k = 0.01 + (1 − 0.01)·(1 + cos(π k / steps)) / 2              (cosine-annealed step)
    g   = ∇_δ ±CE(f(x + δ), y) / ‖·‖₂      (a zero gradient is replaced by Gaussian noise)
    keep x + δ as the best adversarial so far if it is adversarial and ‖δ‖₂ < best
    δ  ← δ + α_k·g
    ε  ← ε·(1 − γ) if x + δ_old was adversarial else ε·(1 + γ),  ε ≤ ‖max(x, 1 − x)‖₂
    δ  ← ε·δ/‖δ‖₂                           (rescaled to exactly ε)
    x + δ ← clip_[0,1](x + δ), then quantized to ``levels`` values if given

The best adversarial iterate is returned; a sample never found adversarial comes back as its last
iterate (never silently as the clean input; the runner recomputes success). Without quantization this
is foolbox's ``DDNAttack`` and adv-lib's ``ddn(levels=None)``; adv-lib quantizes after the clamp, as here.

References:
    Rony, Hafemann, Oliveira, Ben Ayed, Sabourin, Granger. Decoupling Direction and Norm for Efficient
    Gradient-Based L2 Adversarial Attacks and Defenses. CVPR 2019, Alg. 1. https://arxiv.org/abs/1811.09600
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advbridge.bridge.errors import InvalidParameterError
from advbridge.bridge.validation import check_inputs, check_labels
from advbridge.own_attacks import _common
from advbridge.own_attacks._common import (
    batch_view,
    flat_norm,
    in_default_layout_if_needed,
    in_layout_of,
    working_layout,
)


def ddn(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    *,
    steps: int = 100,
    gamma: float = 0.05,
    init_norm: float = 1.0,
    levels: int | None = None,
    targeted: bool = False,
    generator: torch.Generator | None = None,
    channels_last: bool = True,
) -> Tensor:
    """Minimal-L2 attack with decoupled direction and norm updates.

    Args:
        model: maps images in [0, 1] to logits.
        inputs: clean images in [0, 1].
        labels: true labels, or targets when ``targeted``.
        steps: iterations.
        gamma: norm update factor γ.
        init_norm: initial ε.
        levels: quantize every iterate to this many values per pixel (256 for 8-bit images); ``None`` = no.
        targeted: reach ``labels`` instead of leaving them.
        generator: random generator for the noise that replaces zero gradients.
        channels_last: run the model on a channels-last copy (faster on CPU; rounding differs from
            the default layout, see ``own_attacks._common.working_layout``).

    Shape:
        inputs ``(N, ...)`` (any shape with a batch dimension: ``(N, D)``, ``(N, C, L)``, ``(N, C, H, W)``...),
        labels ``(N,)``; returns the shape of ``inputs``.

    References:
        Rony et al. 2019, https://arxiv.org/abs/1811.09600
    """
    check_inputs(inputs)
    labels = check_labels(labels, len(inputs))
    steps = _common.check_steps(steps)
    _common.check_positive("init_norm", init_norm)
    if not 0 < gamma < 1:
        raise InvalidParameterError(f"expected 0 < gamma < 1, got {gamma!r}")
    if levels is not None and levels < 2:
        raise InvalidParameterError(f"expected levels >= 2 or None, got {levels!r}")

    def attack(channels_last: bool) -> Tensor:
        x0 = inputs.detach()
        n = len(x0)
        sign = -1.0 if targeted else 1.0
        worst_norm = flat_norm(torch.maximum(x0, 1 - x0), 2)
        eps = torch.full((n,), float(init_norm), dtype=x0.dtype, device=x0.device)
        delta = torch.zeros_like(x0)
        best_l2 = torch.full((n,), math.inf, dtype=x0.dtype, device=x0.device)
        best = x0.clone()
        found = torch.zeros(n, dtype=torch.bool, device=x0.device)

        for k in range(steps):
            alpha = 0.01 + (1 - 0.01) * (1 + math.cos(math.pi * k / steps)) / 2
            x_adv = working_layout(x0 + delta, channels_last).requires_grad_(True)
            logits = model(x_adv)
            loss = sign * F.cross_entropy(logits, labels, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_adv)
            pred = logits.detach().argmax(1)
            is_adv = pred == labels if targeted else pred != labels
            l2 = flat_norm(delta, 2)
            improved = is_adv & (l2 < best_l2)
            best_l2 = torch.where(improved, l2, best_l2)
            best = torch.where(batch_view(improved, best), x_adv.detach(), best)
            found |= is_adv

            grad_norm = flat_norm(grad, 2)
            zero = grad_norm < 1e-12
            grad = grad / batch_view(grad_norm.clamp_min(1e-12), grad)
            if zero.any():
                noise = torch.randn(grad[zero].shape, dtype=grad.dtype, device=grad.device, generator=generator)
                grad[zero] = noise / batch_view(flat_norm(noise, 2), noise)
            delta = torch.add(delta, grad, alpha=alpha)  # one rounding, as adv-lib's add_(g, alpha=α)

            eps = torch.minimum(torch.where(is_adv, (1 - gamma) * eps, (1 + gamma) * eps), worst_norm)
            delta = delta * batch_view(eps / flat_norm(delta, 2).clamp_min(1e-12), delta)
            x_new = (x0 + delta).clamp(0, 1)
            if levels is not None:
                x_new = (x_new * (levels - 1)).round() / (levels - 1)
            delta = x_new - x0

        return in_layout_of(torch.where(batch_view(found, best), best, x0 + delta).detach(), inputs)

    return in_default_layout_if_needed(attack, channels_last)

"""PGD, projected gradient descent on the cross-entropy (Madry et al. 2018), L∞ and L2.

Each of the ``steps`` iterations (δ = x_adv − x):

    L∞:  x_adv ← x_adv + α · sign(g)
    L2:  x_adv ← x_adv + α · (g / max(‖g‖₂, 1e-12))
    project:  δ ← clip(δ, −eps, eps)  (L∞)   or   δ ← δ · min(1, eps / ‖δ‖₂)  (L2)
    clip:     x_adv ← clip_[0,1](x + δ)

with g = ∇_x CE(f(x_adv), y) (or −∇_x CE(f(x_adv), t) when targeted). The order "step, project, clip"
is torchattacks' and foolbox's; ART clips before projecting (``clip_before_projection=True``), which
only matters for L2, where the two orders give different points. The last iterate is returned, as
in all three references.

Random start: L∞ draws δ ~ U(−eps, eps) per pixel (torchattacks' and foolbox's draw, so the same
``torch.manual_seed`` gives the same start); L2 draws δ uniformly in the eps ball (Voelker et al.
2017: the first n coordinates of a uniform point on the unit sphere of R^(n+2)).

References:
    Madry, Makelov, Schmidt, Tsipras, Vladu. Towards Deep Learning Models Resistant to Adversarial
    Attacks. ICLR 2018, eq. (2). https://arxiv.org/abs/1706.06083
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from advbridge.bridge.errors import InvalidParameterError
from advbridge.bridge.validation import check_inputs, check_labels
from advbridge.own_attacks._common import (
    batch_view,
    check_positive,
    check_steps,
    flat_norm,
    in_default_layout_if_needed,
    in_layout_of,
    keep_working_layout,
    loss_input_gradient,
    working_layout,
)


def _random_start(inputs: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    if norm == "Linf":
        return torch.empty_like(inputs).uniform_(-eps, eps, generator=generator)
    n = inputs[0].numel()
    sphere = torch.randn(len(inputs), n + 2, dtype=inputs.dtype, device=inputs.device, generator=generator)
    sphere = sphere / sphere.norm(dim=1, keepdim=True)
    return eps * sphere[:, :n].view_as(inputs)


def _project(delta: Tensor, eps: float, norm: str) -> Tensor:
    if norm == "Linf":
        return delta.clamp(-eps, eps)
    factor = torch.clamp_max(eps / flat_norm(delta, 2), 1.0)
    return delta * batch_view(factor, delta)


def pgd(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    *,
    eps: float,
    norm: str = "Linf",
    steps: int = 40,
    step_size: float | None = None,
    random_start: bool = False,
    targeted: bool = False,
    clip_before_projection: bool = False,
    generator: torch.Generator | None = None,
    loss: Callable[[Tensor, Tensor], Tensor] | None = None,
    success: Callable[[Tensor, Tensor], Tensor] | None = None,
    channels_last: bool = True,
) -> Tensor:
    """Projected gradient descent in the L∞ or L2 ball of radius ``eps`` around ``inputs``.

    Args:
        model: maps images in [0, 1] to logits.
        inputs: clean images.
        labels: true labels, or targets when ``targeted``.
        eps: radius of the ball.
        norm: ``"Linf"`` or ``"L2"``.
        steps: iterations.
        step_size: absolute step α; default ``2.5 · eps / steps`` (Madry et al. 2018, Sec. 5).
        random_start: start at a random point of the ball (see module docstring).
        targeted: minimize the loss of ``labels``.
        clip_before_projection: ART's order (clip to [0, 1], then project); default is project, then clip.
        generator: torch random generator for the start; ``None`` uses the global one.
        loss: the objective to ascend instead of the cross-entropy, ``loss(x_adv, labels) -> (N,)`` per
            sample (an adaptive attack's: a margin loss, a detector-aware loss...); ``model`` is then unused.
        success: ``success(x_adv, labels) -> (N,)`` bool, checked after every step; when given, each sample
            returns its last successful iterate (its last iterate if none was): the objective of an adaptive
            attack need not be monotone in what success means (fooling a classifier *and* a detector).
        channels_last: run the steps on a channels-last copy of a 4-D batch (oneDNN's NHWC convolutions on
            CPU: each step 1.3-2.5× faster on the MNIST CNN). The gradients' rounding differs from the
            default layout, so a pixel whose gradient is within rounding of 0 can take the other sign and the
            path part from the references'; ``channels_last=False`` does their arithmetic (L∞ without random
            start: bitwise equal to torchattacks, foolbox and ART). The random start is drawn in the
            layout of ``inputs``: the same seed gives the references' start either way.

    Shape:
        inputs ``(N, ...)`` (any shape with a batch dimension: ``(N, D)``, ``(N, C, L)``, ``(N, C, H, W)``...),
        labels ``(N,)``; returns the last iterate (or the last successful one, see ``success``), in the
        shape of ``inputs``.

    References:
        Madry et al. 2018, https://arxiv.org/abs/1706.06083
    """
    check_inputs(inputs)
    labels = check_labels(labels, len(inputs))
    eps = check_positive("eps", eps)
    steps = check_steps(steps)
    if norm not in ("Linf", "L2"):
        raise InvalidParameterError(f"expected norm 'Linf' or 'L2', got {norm!r}")
    alpha = 2.5 * eps / steps if step_size is None else check_positive("step_size", step_size)
    sign = -1.0 if targeted else 1.0

    start = inputs.detach().clone()
    if random_start:
        start = (start + _random_start(inputs, eps, norm, generator)).clamp(0, 1)

    def attack(channels_last: bool) -> Tensor:
        x0 = working_layout(inputs.detach(), channels_last)
        x_adv = working_layout(start, channels_last)
        best, found = None, None
        for _ in range(steps):
            x_adv = keep_working_layout(x_adv, channels_last)
            if loss is None:
                grad = loss_input_gradient(model, x_adv, labels)
            else:
                grad = _objective_gradient(loss, x_adv, labels)
            if norm == "Linf":
                x_adv = x_adv + (sign * alpha) * grad.sign()
            else:
                grad_norm = flat_norm(grad, 2).clamp_min(1e-12)
                x_adv = x_adv + (sign * alpha) * (grad / batch_view(grad_norm, grad))
            if clip_before_projection:
                x_adv = x0 + _project(x_adv.clamp(0, 1) - x0, eps, norm)
            else:
                x_adv = (x0 + _project(x_adv - x0, eps, norm)).clamp(0, 1)
            if success is not None:
                with torch.no_grad():
                    now = success(x_adv, labels)
                best = x_adv.detach().clone() if best is None else torch.where(batch_view(now, x_adv), x_adv, best)
                found = now if found is None else found | now
        if success is not None:
            assert best is not None and found is not None  # set by the first step (check_steps: steps >= 1)
            x_adv = torch.where(batch_view(found, x_adv), best, x_adv)
        return in_layout_of(x_adv.detach(), inputs)

    return in_default_layout_if_needed(attack, channels_last)


def _objective_gradient(loss: Callable[[Tensor, Tensor], Tensor], inputs: Tensor, labels: Tensor) -> Tensor:
    """∇_x of the summed per-sample objective ``loss(x, labels)`` (each sample's gradient is its own)."""
    x = inputs.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(x, labels).sum(), x)
    return grad

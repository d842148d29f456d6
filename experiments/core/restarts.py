"""PGD with random restarts: the adaptive attack of ``defend`` and the remedy attack of the audit.

Each restart r runs :func:`~advbridge.own_attacks.pgd` ascending ``loss`` with its own generator seeded
``seed + r``; each sample keeps the first restart that fools the model (Madry et al. 2018, Sec. 3: restarts
from random points in the ball; a sample counts as broken if any restart breaks it). Later restarts run on every
sample (the batch shape stays fixed, so a restart's arithmetic does not depend on which samples fell earlier)
and the loop ends once every sample is fooled.

References:
    Madry, Makelov, Schmidt, Tsipras, Vladu. Towards Deep Learning Models Resistant to Adversarial Attacks.
    ICLR 2018. https://arxiv.org/abs/1706.06083
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from advbridge.experiments.core.losses import fooled
from advbridge.own_attacks import pgd
from advbridge.own_attacks._common import batch_view


def pgd_restarts(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str,
    steps: int,
    step_size: float,
    restarts: int,
    loss: Callable[[Tensor, Tensor], Tensor],
    seed: int = 0,
    reject: int | None = None,
    clean_first: bool = False,
) -> Tensor:
    """PGD ascending ``loss(x_adv, y)`` from ``restarts`` starts (module docstring).

    Args:
        model: whose prediction decides success (:func:`~advbridge.experiments.core.losses.fooled`, with its
            ``reject`` class when it has one); ``loss`` may call it or anything else.
        clean_first: the first restart starts at ``x`` itself (the audit's: a deterministic first run), and a
            sample no restart fools is returned as ``x``; otherwise every restart starts at a random point and
            such a sample keeps the first restart's point (defend's).

    Shape:
        x ``(N, ...)`` in [0, 1], y ``(N,)``; returns ``(N, ...)``.
    """

    if restarts < 1:
        raise ValueError(f"expected restarts >= 1, got {restarts}")

    def success(x_adv: Tensor, labels: Tensor) -> Tensor:
        return fooled(model(x_adv).argmax(1), labels, reject)

    best = x.clone() if clean_first else None
    found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for restart in range(restarts):
        generator = torch.Generator(device=x.device).manual_seed(seed + restart)
        x_r = pgd(
            model, x, y, eps=eps, norm=norm, steps=steps, step_size=step_size,
            random_start=restart > 0 or not clean_first, generator=generator, loss=loss, success=success,
        )  # fmt: skip
        with torch.no_grad():
            now = success(x_r, y) & ~found
        best = x_r if best is None else torch.where(batch_view(now, x_r), x_r, best)
        found |= now
        if bool(found.all()):
            break
    return x if best is None else best  # (best is set by the first restart)

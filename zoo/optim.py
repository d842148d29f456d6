"""The optimizer and the learning-rate schedule of a resolved :class:`~zoo.train_config.TrainConfig`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from advbridge.bridge.errors import check_resolved
from advbridge.zoo.train_config import TrainConfig


def make_optimizer(cfg: TrainConfig, params: Sequence[Tensor]) -> torch.optim.Optimizer:
    """The optimizer of a resolved config: Adam, or SGD with momentum 0.9; the config's lr and weight decay."""
    lr = check_resolved(cfg.lr, "lr", "TrainConfig")
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=cfg.weight_decay)


def make_schedule(
    cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule of a resolved config, to be stepped once per batch.

    ``cyclic`` sets, before the s-th step (0-based), lr · interp((s + 1) / steps_per_epoch, [0, 2E/5, E],
    [0, 1, 0]) for E epochs: ART's ``AdversarialTrainerFBFPyTorch`` schedule (which puts the peak at the
    integer ``2E // 5``: the same when E is a multiple of 5).
    """
    epochs = check_resolved(cfg.epochs, "epochs", "TrainConfig")
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    peak, end = 0.4 * epochs, float(epochs)

    def triangle(step: int) -> float:
        t = (step + 1) / steps_per_epoch
        return t / peak if t <= peak else max(0.0, (end - t) / (end - peak))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, triangle)

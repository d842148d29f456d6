"""Training-time defenses by any library's trainer, cached: the adapter layer's counterpart of the runner
for training (each library's trainer behind its adapter; ours is :func:`defenses.trainer.train_own`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advbridge.bridge.adapters import get_adapter
from advbridge.bridge.defense_spec import TrainingDefenseSpec
from advbridge.bridge.errors import UnsupportedDefenseError
from advbridge.defenses.trainer.adversarial import REVISIONS
from advbridge.zoo.datasets import dataset_info
from advbridge.zoo.train_config import TrainConfig
from advbridge.zoo.training import get_or_train


def defense_key(spec: TrainingDefenseSpec, library: str) -> dict[str, Any]:
    """What a resolved ``spec`` adds to the cache key and the card: the spec, and whose trainer unless ours;
    for ours, the revision of its algorithm where it changed (:data:`defenses.trainer.adversarial.REVISIONS`)."""
    if library != "own":
        return {**spec.to_dict(), "trainer": library}
    revision = REVISIONS.get(spec.defense)
    return spec.to_dict() if revision is None else {**spec.to_dict(), "revision": revision}


def train_defended(
    config: TrainConfig,
    spec: TrainingDefenseSpec,
    *,
    library: str = "own",
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    """The classifier of ``config`` trained with ``spec`` (resolved for the dataset) by ``library``'s trainer,
    from the model cache when it is there; the resolved spec and the library are part of the cache key and
    of the card. A library without that trainer raises :class:`~bridge.errors.UnsupportedDefenseError`."""
    family = dataset_info(config.dataset, config.data_root, config.image_size).family
    adapter = get_adapter(library)
    spec = adapter.training_spec(spec.resolved(family, warm_start=config.weights is not None or config.pretrained))
    resolved = config.resolved()
    reason = adapter.training_unsupported_reason(spec, resolved)
    if reason is not None:  # before the cache is looked at
        raise UnsupportedDefenseError(f"{library} cannot train {spec.describe()}: {reason}")
    return get_or_train(
        resolved,
        progress=progress,
        device=device,
        defense=defense_key(spec, library),
        make=lambda cfg: adapter.train_defense(cfg, spec, progress=progress, device=device),
        make_is_distributed=library == "own",  # ours runs on every rank under torchrun; ART's on rank 0
    )

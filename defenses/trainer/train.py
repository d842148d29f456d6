"""Train (or take from the cache) a classifier with a training-time defense, by any library's trainer."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bridge.adapters import get_adapter
from bridge.defense_spec import TrainingDefenseSpec
from bridge.errors import UnsupportedDefenseError
from defenses.trainer.adversarial import AdversarialObjective, adversarial_validation
from defenses.trainer.distillation import distillation_objective, temperature_objective
from zoo.datasets import dataset_info
from zoo.training import TrainConfig, get_or_train, train


def defense_key(spec: TrainingDefenseSpec, library: str) -> dict[str, Any]:
    """What a resolved ``spec`` adds to the cache key and the card: the spec, and whose trainer unless ours."""
    return spec.to_dict() if library == "own" else {**spec.to_dict(), "trainer": library}


def teacher(
    config: TrainConfig, temperature: float, *, progress: bool = True, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Distillation's teacher: the classifier of ``config`` trained at ``temperature`` (cached)."""
    return get_or_train(
        config,
        progress=progress,
        device=device,
        objective=temperature_objective(temperature),
        defense={"defense": "distill-teacher", "temperature": temperature},
    )


def train_own(
    config: TrainConfig, spec: TrainingDefenseSpec, *, progress: bool = True, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Our training of a resolved ``config`` with a resolved ``spec`` (not cached; the teacher is).

    Adversarial training runs channels-last (its cost is the attack's convolutions) and early-stops on
    adversarial validation accuracy. Distillation first trains (or
    takes from the cache) the teacher at the temperature, then the student on its soft labels; the
    student's card names the teacher's weights (``teacher_sha256``) and test accuracy.
    """
    if spec.adversarial:
        return train(
            config,
            progress=progress,
            device=device,
            objective=AdversarialObjective(spec),
            validate=adversarial_validation(spec),
            channels_last=True,
        )
    model_t, card_t = teacher(config, spec.temperature, progress=progress, device=device)
    model, card = train(
        config, progress=progress, device=device, objective=distillation_objective(model_t, spec.temperature)
    )
    return model, {**card, "teacher_sha256": card_t["sha256"], "teacher_accuracy": card_t["accuracy"]}


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

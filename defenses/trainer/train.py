"""Train (or take from the cache) a classifier with a training-time defense."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bridge.defense_spec import TrainingDefenseSpec
from defenses.trainer.adversarial import adversarial_objective, adversarial_validation
from defenses.trainer.distillation import distillation_objective, temperature_objective
from zoo.datasets import dataset_info
from zoo.training import TrainConfig, get_or_train


def train_defended(
    config: TrainConfig,
    spec: TrainingDefenseSpec,
    *,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    """The classifier of ``config`` trained with ``spec`` (resolved for the dataset), cached under both.

    Adversarial training early-stops on adversarial validation accuracy. Distillation first trains (or
    takes from the cache) the teacher at the temperature, then the student on its soft labels; the card
    of the student names the teacher's weights (``teacher_sha256``).
    """
    family = dataset_info(config.dataset, config.data_root, config.image_size).family
    spec = spec.resolved(family)
    if spec.adversarial:
        return get_or_train(
            config,
            progress=progress,
            device=device,
            objective=adversarial_objective(spec),
            validate=adversarial_validation(spec),
            defense=spec.to_dict(),
        )
    teacher, teacher_card = get_or_train(
        config,
        progress=progress,
        device=device,
        objective=temperature_objective(spec.temperature),
        defense={"defense": "distill-teacher", "temperature": spec.temperature},
    )
    return get_or_train(
        config,
        progress=progress,
        device=device,
        objective=distillation_objective(teacher, spec.temperature),
        defense={**spec.to_dict(), "teacher_sha256": teacher_card["sha256"]},
    )

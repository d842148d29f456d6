"""Our training of a classifier with a training-time defense (adversarial training, distillation)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advbridge.bridge.defense_spec import TrainingDefenseSpec
from advbridge.bridge.errors import check_resolved
from advbridge.defenses.trainer.adversarial import AdversarialObjective, adversarial_validation
from advbridge.defenses.trainer.distillation import distillation_objective, temperature_objective
from advbridge.zoo.models import NormalizedClassifier
from advbridge.zoo.train_config import TrainConfig
from advbridge.zoo.training import get_or_train, train


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
) -> tuple[NormalizedClassifier, dict[str, Any]]:
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
    temperature = check_resolved(spec.temperature, "temperature", f"{spec.defense} spec")
    model_t, card_t = teacher(config, temperature, progress=progress, device=device)
    model, card = train(
        config, progress=progress, device=device, objective=distillation_objective(model_t, temperature)
    )
    return model, {**card, "teacher_sha256": card_t["sha256"], "teacher_accuracy": card_t["accuracy"]}

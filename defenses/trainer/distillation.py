"""Defensive distillation (Papernot, McDaniel, Wu, Jha, Swami 2016, Sec. IV):

1. a teacher trained at temperature T: softmax(z/T), cross-entropy on the labels;
2. a student of the same architecture trained at T on the teacher's soft labels
   p_T(x) = softmax(z_teacher(x)/T): L = −Σ_j p_T(x)_j · log softmax(z_student(x)/T)_j;
3. the student deployed at T = 1, its logits unchanged (so its softmax is ~T times sharper: the saturation
   that masks cross-entropy gradients, Carlini & Wagner 2016).

References:
    Papernot et al. Distillation as a Defense to Adversarial Perturbations against Deep Neural Networks.
    IEEE S&P 2016. https://arxiv.org/abs/1511.04508
    Carlini, Wagner. Defensive Distillation is Not Robust to Adversarial Examples. 2016.
    https://arxiv.org/abs/1607.04311
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advbridge.defenses.trainer.adversarial import attacking


def temperature_objective(temperature: float):
    """The teacher's loss: cross-entropy of softmax(z/T) against the labels."""

    def objective(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, tuple[int, int]]]:
        logits = model(x)
        return F.cross_entropy(logits / temperature, y), {"clean": (int((logits.argmax(1) == y).sum()), len(y))}

    return objective


def distillation_objective(teacher: nn.Module, temperature: float):
    """The student's loss: cross-entropy of softmax(z/T) against the teacher's softmax(z_teacher/T)."""

    def objective(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, tuple[int, int]]]:
        with attacking(teacher), torch.no_grad():
            soft = (teacher(x) / temperature).softmax(1)
        logits = model(x)
        loss = -(soft * (logits / temperature).log_softmax(1)).sum(1).mean()
        agree = int((logits.argmax(1) == soft.argmax(1)).sum())
        return loss, {"clean": (int((logits.argmax(1) == y).sum()), len(y)), "teacher_agreement": (agree, len(y))}

    return objective

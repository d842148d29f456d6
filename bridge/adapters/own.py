"""advbridge's own attacks (``own_attacks``): the spec maps one-to-one onto their keyword arguments.

DeepFool runs with its documented defaults (source = true label, overshoot on the accumulated
perturbation, the reference 1e-4 step term); the options that reproduce each library's convention
are arguments of :func:`own_attacks.deepfool`, used by the agreement tests.

Defenses: every squeezer of :mod:`defenses.preprocessor` with either backward pass, and the
feature-squeezing detector (its squeezers; :class:`defenses.detector.SqueezeDetector` puts them together).
Training-time defenses: every :class:`~bridge.defense_spec.TrainingDefenseSpec`, by :mod:`defenses.trainer`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor, nn

from advbridge.bridge.adapters.base import Adapter
from advbridge.bridge.defense_spec import DefenseSpec, TrainingDefenseSpec
from advbridge.bridge.spec import AttackSpec
from advbridge.own_attacks import ddn, deepfool, fgsm, pgd

if TYPE_CHECKING:
    from advbridge.defenses.preprocessor.squeezing import Backward
    from advbridge.zoo.models import NormalizedClassifier


class OwnAdapter(Adapter):
    """Own attacks. ``channels_last=False`` runs them in the references' memory layout, hence arithmetic
    (bitwise equal FGSM and L∞ PGD); the default runs 4-D batches channels-last, the faster layout on CPU."""

    name = "own"
    distribution = "advbridge"

    def __init__(self, channels_last: bool = True) -> None:
        self.channels_last = channels_last

    def unsupported_reason(self, spec: AttackSpec) -> str | None:
        return None

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, spec: AttackSpec, num_classes: int) -> Tensor:
        if spec.attack == "fgsm":
            assert spec.eps is not None  # AttackSpec requires the eps of a budget attack
            return fgsm(model, x, y, eps=spec.eps, targeted=spec.targeted, channels_last=self.channels_last)
        if spec.attack == "deepfool":
            return deepfool(
                model,
                x,
                y,
                norm=spec.norm.value,
                steps=spec.steps,
                overshoot=spec.overshoot,
                candidates=spec.candidates,
                channels_last=self.channels_last,
            )
        if spec.attack == "ddn":
            return ddn(
                model,
                x,
                y,
                steps=spec.steps,
                gamma=spec.gamma,
                init_norm=spec.init_norm,
                levels=spec.levels,
                targeted=spec.targeted,
                channels_last=self.channels_last,
            )
        assert spec.eps is not None  # pgd, the last of ATTACKS: AttackSpec requires the eps of a budget attack
        return pgd(
            model,
            x,
            y,
            eps=spec.eps,
            norm=spec.norm.value,
            steps=spec.steps,
            step_size=spec.effective_step_size,
            random_start=spec.random_start,
            targeted=spec.targeted,
            channels_last=self.channels_last,
        )

    def defense_unsupported_reason(self, spec: DefenseSpec, backward: str = "exact") -> str | None:
        return None

    def _build_defense(self, spec: DefenseSpec, backward: str) -> nn.Module:
        from advbridge.defenses.preprocessor import build_squeezer

        squeezer_backward = cast("Backward", backward)  # each squeezer refuses another name (check_name)
        if spec.detector:
            return nn.ModuleList([build_squeezer(s, squeezer_backward) for s in spec.squeezer_specs()])
        return build_squeezer(spec, squeezer_backward)

    def training_unsupported_reason(self, spec: TrainingDefenseSpec, config) -> str | None:
        return None

    def _train_defense(
        self, config, spec: TrainingDefenseSpec, *, progress: bool, device: str | torch.device
    ) -> tuple[NormalizedClassifier, dict[str, Any]]:
        from advbridge.defenses.trainer import train_own

        return train_own(config, spec, progress=progress, device=device)

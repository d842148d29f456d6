"""advbridge's own attacks (``own_attacks``): the spec maps one-to-one onto their keyword arguments."""

from __future__ import annotations

from torch import Tensor, nn

from bridge.adapters.base import Adapter
from bridge.spec import AttackSpec
from own_attacks import fgsm, pgd


class OwnAdapter(Adapter):
    name = "own"
    distribution = "advbridge"

    def unsupported_reason(self, spec: AttackSpec) -> str | None:
        if spec.attack not in ("fgsm", "pgd"):
            return f"no in-house {spec.attack} yet"
        return None

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, spec: AttackSpec, num_classes: int) -> Tensor:
        if spec.attack == "fgsm":
            return fgsm(model, x, y, eps=spec.eps, targeted=spec.targeted)
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
        )

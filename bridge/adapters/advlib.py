"""adv-lib 0.2.8 adapter.

| advbridge      | adv-lib ``pgd_linf``                     |
|----------------|------------------------------------------|
| eps            | ``ε``                                    |
| step_size      | ``absolute_step_size``                   |
| steps          | ``steps``                                |
| random_start   | ``random_init`` (its default is True)    |
| targeted       | ``targeted=True``, labels = targets      |

Semantic differences:
- ``pgd_linf`` returns the *last adversarial iterate seen*, or the clean input where it never found
  one (others return the last iterate); success is checked before each update, so the final update is
  never evaluated;
- no L2 PGD (``apgd`` is a different attack) and no FGSM: ``pgd_linf(steps=1)`` always returns the
  clean input, so FGSM is reported unsupported, not emulated;
- ``df`` (DeepFool, ``norm=2``/``float('inf')``): all classes, source = true label, overshoot per step,
  (|f|/max(‖w‖, 1e-6) + 1e-4) step; batched with per-sample early stop; returns the *clean input*
  where it failed; targeted only warns and returns the inputs, so targeted DeepFool is refused upstream;
- ``ddn(γ, init_norm, levels)``: its default ``levels=256`` quantizes every iterate; we pass the spec's
  ``levels`` (``None`` = no quantization); strict ``<`` best tracking; the clean input where it failed.
"""

from __future__ import annotations

from torch import Tensor, nn

from advbridge.bridge.adapters.base import Adapter
from advbridge.bridge.spec import AttackSpec, Norm


class AdvlibAdapter(Adapter):
    name = "advlib"
    distribution = "adv-lib"
    no_defenses = "adv-lib 0.2.8 has no input-transformation or detection defenses (attacks and utilities only)"

    def unsupported_reason(self, spec: AttackSpec) -> str | None:
        if spec.attack == "fgsm":
            return "adv-lib has no FGSM (pgd_linf with steps=1 returns the clean input, so it is not emulated)"
        if spec.attack == "pgd" and spec.norm is Norm.L2:
            return "adv-lib has no L2 PGD (only pgd_linf; apgd is a different attack)"
        if spec.attack == "deepfool" and spec.candidates is not None:
            return "adv-lib's df always uses all classes (no candidates option)"
        return None

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, spec: AttackSpec, num_classes: int) -> Tensor:
        from adv_lib.attacks import ddn, df, pgd_linf

        if spec.attack == "deepfool":
            p = 2 if spec.norm is Norm.L2 else float("inf")
            return df(model, x, y, steps=spec.steps, overshoot=spec.overshoot, norm=p)
        if spec.attack == "ddn":
            return ddn(
                model,
                x,
                y,
                targeted=spec.targeted,
                steps=spec.steps,
                γ=spec.gamma,
                init_norm=spec.init_norm,
                levels=spec.levels,
            )
        return pgd_linf(
            model,
            x,
            y,
            ε=spec.eps,
            targeted=spec.targeted,
            steps=spec.steps,
            random_init=spec.random_start,
            absolute_step_size=spec.effective_step_size,
        )

"""foolbox 3.3.4 adapter.

| advbridge      | foolbox                                              |
|----------------|------------------------------------------------------|
| eps            | ``epsilons=`` at call time                           |
| step_size      | ``abs_stepsize``                                     |
| steps          | ``steps``                                            |
| random_start   | ``random_start`` (its PGD default is True)           |
| targeted       | criterion ``TargetedMisclassification(targets)``     |
| norm           | class: ``LinfPGD`` / ``L2PGD``, ``FGSM`` (L∞ only)   |

Semantic differences:
- calls return ``(raw, clipped, success)``; we take ``clipped`` (foolbox issue #632) and ignore its
  ``success`` (the runner recomputes success on the same model);
- the loss is the *summed* cross-entropy, like ours;
- L2 random start is uniform in the ball (like ours, but a different draw);
- ``PyTorchModel`` would move the model to ``cuda:0``; we pass the inputs' device explicitly;
- FGSM is untargeted only (foolbox raises ValueError for a targeted criterion).
- DeepFool (``L2DeepFoolAttack``/``LinfDeepFoolAttack``, ``loss="logits"``): candidates = top-k of the
  *clean* logits (its default k = 10; ``candidates=None`` here passes None = all classes), source =
  clean arg-max, stop criterion = misclassification of the label; overshoot on the accumulated,
  unclipped perturbation (x = clip(x0 + (1+η)·Σr)); adds 1e-4 to each distance and 1e-8 to norms;
  runs (k−1) forward+backward passes per step on the whole batch until every sample is done;
- DDN (``DDNAttack(init_epsilon, steps, gamma)``): never quantizes (``levels`` is refused); best
  tracking with ``<=``; returns the clean input where it failed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

from advbridge.bridge.adapters.base import Adapter
from advbridge.bridge.spec import AttackSpec, Norm

if TYPE_CHECKING:
    from foolbox.attacks.base import Attack


class FoolboxAdapter(Adapter):
    name = "foolbox"
    distribution = "foolbox"
    no_defenses = "foolbox 3 has no defenses (attacks, criteria and model wrappers only)"

    def unsupported_reason(self, spec: AttackSpec) -> str | None:
        if spec.attack == "fgsm" and spec.targeted:
            return "foolbox's FGSM is untargeted only"
        if spec.attack == "ddn" and spec.levels is not None:
            return "foolbox's DDN never quantizes (levels must be None)"
        return None

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, spec: AttackSpec, num_classes: int) -> Tensor:
        import foolbox as fb

        fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=x.device)
        criterion = fb.criteria.TargetedMisclassification(y) if spec.targeted else fb.criteria.Misclassification(y)
        attack: Attack  # DDN and DeepFool are minimization attacks, FGSM and PGD fixed-epsilon ones
        if spec.attack in ("deepfool", "ddn"):
            if spec.attack == "ddn":
                attack = fb.attacks.DDNAttack(init_epsilon=spec.init_norm, steps=spec.steps, gamma=spec.gamma)
            else:
                deepfool = fb.attacks.L2DeepFoolAttack if spec.norm is Norm.L2 else fb.attacks.LinfDeepFoolAttack
                attack = deepfool(steps=spec.steps, candidates=spec.candidates, overshoot=spec.overshoot)
            _, clipped, _ = attack(fmodel, x, criterion, epsilons=None)
            return clipped
        if spec.attack == "fgsm":
            attack = fb.attacks.FGSM()
        else:
            pgd = fb.attacks.LinfPGD if spec.norm is Norm.LINF else fb.attacks.L2PGD
            attack = pgd(abs_stepsize=spec.effective_step_size, steps=spec.steps, random_start=spec.random_start)
        _, clipped, _ = attack(fmodel, x, criterion, epsilons=spec.eps)
        return clipped

"""torchattacks 3.5.1 adapter.

| advbridge      | torchattacks                                   |
|----------------|------------------------------------------------|
| eps            | ``eps``                                        |
| step_size      | ``alpha``                                      |
| steps          | ``steps``                                      |
| random_start   | ``random_start`` (its default is True)         |
| targeted       | ``set_mode_targeted_by_label()``, labels = targets |
| norm           | class: ``PGD`` (L∞) / ``PGDL2`` (L2)           |

Semantic differences:
- the loss is the *mean* cross-entropy (gradients scaled by 1/N): no effect on sign steps; for L2 the
  direction is g/(‖g‖+1e-10) instead of g/max(‖g‖, 1e-12);
- PGDL2's random start is a Gaussian direction times U(0, 1)·eps, not uniform in the ball (issue #161);
- attacks switch the model to eval mode and back (the runner checks the mode is restored);
- ``set_normalization_used`` is never called: normalization lives inside the model.
- DeepFool (L2 only, all classes, untargeted): loops over samples in Python with a full Jacobian
  (K backward passes per sample per step), moves away from the *true label*, applies the overshoot
  per step (x ← clip(x + (1+η)·r)) with r = |f|/‖w‖²·w and no 1e-4 term, so with η = 0.02 and
  clipping it can stop exactly on the boundary; misclassified inputs come back unchanged;
- no DDN.
- AutoAttack (:meth:`TorchattacksAdapter.autoattack`, used by ``defend`` against adversarial training):
  ``AutoAttack(version="standard")`` = APGD-CE, APGD-T, FAB-T (multi-targeted) and Square (5,000 queries),
  one restart each, each attack run only on the samples the previous ones left correct (``MultiAttack``);
  ``n_classes`` must be given (its default is 10). Its APGD-T (targeted DLR) needs >= 4 classes and FAB-T a target
  class besides the label (AutoAttack's ``check_n_classes``): below 4 classes the audit runs
  :meth:`TorchattacksAdapter.apgd` instead, the ensemble's first attack, APGD-CE, as that ensemble runs it.
- Square (:meth:`TorchattacksAdapter.square`, the audit's black-box attack; Andriushchenko et al. 2020):
  ``Square(norm, eps, n_queries, n_restarts=1, p_init=0.8, loss="margin")``; queries count forward passes only.
"""

from __future__ import annotations

from torch import Tensor, nn

from advbridge.bridge.adapters.base import Adapter
from advbridge.bridge.spec import AttackSpec, Norm


class TorchattacksAdapter(Adapter):
    name = "torchattacks"
    distribution = "torchattacks"
    no_defenses = "torchattacks has no defenses (attacks only)"

    def unsupported_reason(self, spec: AttackSpec) -> str | None:
        if spec.attack in ("fgsm", "pgd"):
            return None
        if spec.attack == "deepfool":
            if spec.norm is Norm.LINF:
                return "torchattacks' DeepFool is L2 only"
            if spec.candidates is not None:
                return "torchattacks' DeepFool always uses all classes (no candidates option)"
            return None
        return f"torchattacks has no {spec.attack.upper()}"

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, spec: AttackSpec, num_classes: int) -> Tensor:
        import torchattacks

        if spec.attack == "fgsm":
            attack = torchattacks.FGSM(model, eps=spec.eps)
        elif spec.attack == "deepfool":
            attack = torchattacks.DeepFool(model, steps=spec.steps, overshoot=spec.overshoot)
        else:
            cls = torchattacks.PGD if spec.norm is Norm.LINF else torchattacks.PGDL2
            attack = cls(
                model, eps=spec.eps, alpha=spec.effective_step_size, steps=spec.steps, random_start=spec.random_start
            )
        if spec.targeted:
            attack.set_mode_targeted_by_label(quiet=True)
        return attack(x, y)

    def autoattack(
        self, model: nn.Module, x: Tensor, y: Tensor, *, norm: str, eps: float, num_classes: int, seed: int = 0
    ) -> Tensor:
        """torchattacks' standard AutoAttack (Croce & Hein 2020) at ``norm`` ("Linf" or "L2") and ``eps``; the
        model in eval mode meanwhile, its mode restored."""
        import torchattacks

        was_training = model.training
        model.eval()
        try:
            attack = torchattacks.AutoAttack(
                model, norm=norm, eps=eps, version="standard", n_classes=num_classes, seed=seed
            )
            return attack(x, y).detach().to(dtype=x.dtype)
        finally:
            model.train(was_training)

    def apgd(
        self, model: nn.Module, x: Tensor, y: Tensor, *, norm: str, eps: float, loss: str = "ce", seed: int = 0
    ) -> Tensor:
        """torchattacks' APGD (Croce & Hein 2020) at ``norm`` and ``eps`` on ``loss`` (``"ce"``: any number of
        classes; ``"dlr"``: >= 3), one restart at torchattacks' default steps: the first attack of its standard
        AutoAttack; the model in eval mode meanwhile, its mode restored."""
        import torchattacks

        was_training = model.training
        model.eval()
        try:
            attack = torchattacks.APGD(model, norm=norm, eps=eps, loss=loss, n_restarts=1, seed=seed)
            return attack(x, y).detach().to(dtype=x.dtype)
        finally:
            model.train(was_training)

    def square(
        self, model: nn.Module, x: Tensor, y: Tensor, *, norm: str, eps: float, queries: int, seed: int = 0
    ) -> Tensor:
        """torchattacks' Square attack (score-based, no gradients) at ``norm`` and ``eps`` with at most ``queries``
        queries per image; the model in eval mode meanwhile, its mode restored."""
        import torchattacks

        was_training = model.training
        model.eval()
        try:
            attack = torchattacks.Square(
                model, norm=norm, eps=eps, n_queries=queries, n_restarts=1, p_init=0.8, loss="margin", seed=seed
            )
            return attack(x, y).detach().to(dtype=x.dtype)
        finally:
            model.train(was_training)

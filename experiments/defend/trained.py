"""The evaluation of a training-time defense: each library's trained model, its undefended twin, and attacks
that gradient masking cannot fool.

For the undefended twin (``defense_library`` ``undefended``) and each trained model it runs, with the
``mode`` column of :mod:`experiments.defend.report`:

- ``none``: clean accuracy;
- ``transfer`` (trained models only): the attack computed on the undefended twin by each attack library;
- ``white-box``: the attack (cross-entropy for FGSM/PGD) on the model itself, by each attack library;
- ``adaptive`` (own attacks, and torchattacks' AutoAttack):

  - budget attacks (FGSM/PGD): PGD on the margin loss (Carlini & Wagner 2017, f₆) from ``restarts`` random
    starts, a sample counting as broken if any restart breaks it;
  - adversarial training: AutoAttack (Croce & Hein 2020: APGD-CE, APGD-T, FAB-T, Square), through the
    torchattacks adapter; for FGSM training also FGSM itself, for the catastrophic-overfitting check
    (Wong et al. 2020, Sec. 5: FGSM accuracy far above PGD accuracy means the model learned to mask FGSM);
  - distillation: PGD on the cross-entropy of z/T (undoing the temperature, Carlini & Wagner 2016) and
    DeepFool, which works on logits (counted within the budget when the attack has one);

- ``worst-case``: per sample, over every attacked row of that model.

References:
    Carlini, Wagner. Towards Evaluating the Robustness of Neural Networks. S&P 2017.
    https://arxiv.org/abs/1608.04644
    Croce, Hein. Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks. ICML 2020. https://arxiv.org/abs/2003.01690
    Wong, Rice, Kolter. Fast is better than free. ICLR 2020. https://arxiv.org/abs/2001.03994
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn

from advbridge.bridge.adapters.torchattacks import TorchattacksAdapter
from advbridge.bridge.defense_spec import TrainingDefenseSpec, UserDefenseSpec
from advbridge.bridge.spec import AttackSpec, Norm
from advbridge.experiments.core.losses import cross_entropy_objective, margin_objective
from advbridge.experiments.core.restarts import pgd_restarts
from advbridge.experiments.engine import (
    TRANSFER_REASON,
    Cell,
    EvaluationOptions,
    FamilyEvaluation,
    Row,
    Subject,
)
from advbridge.experiments.flags import UNDEFENDED, objective_zero_gradient_share  # UNDEFENDED: the twin's rows
from advbridge.own_attacks import deepfool, fgsm

#: Catastrophic overfitting: FGSM accuracy this far above PGD accuracy, and PGD accuracy below half of it.
OVERFITTING_GAP = 0.1
#: PGD steps of the adaptive attacks when the attack itself is a single step (FGSM).
ADAPTIVE_STEPS = 40

#: ``(name, run, objective)`` of one adaptive attack (see :meth:`TrainedEvaluation.adaptive_attacks`).
AdaptiveAttack = tuple[str, Callable[[Tensor, Tensor, int], Tensor], Callable[[Tensor, Tensor], Tensor] | None]


def adaptive_budget(attack: AttackSpec) -> dict:
    """The PGD budget of the adaptive attacks: the run's PGD, or for a single step (FGSM) :data:`ADAPTIVE_STEPS`
    steps of 2.5·eps/steps."""
    assert attack.eps is not None  # a budget attack (FGSM/PGD): AttackSpec requires its eps
    steps = attack.steps if attack.attack == "pgd" else ADAPTIVE_STEPS
    step_size = attack.effective_step_size if attack.attack == "pgd" else 2.5 * attack.eps / steps
    return {"eps": attack.eps, "norm": attack.norm.value, "steps": steps, "step_size": step_size}


def margin_pgd(
    model: nn.Module,
    budget: dict,
    restarts: int,
    label: str = "",
    objective: Callable[[Tensor, Tensor], Tensor] | None = None,
    detail: str = "",
) -> tuple[str, Callable[[Tensor, Tensor, int], Tensor], Callable[[Tensor, Tensor], Tensor]]:
    """``(name, run, objective)`` of PGD on the margin loss of ``model`` (or on ``objective``) from ``restarts``
    random starts: the adaptive attack every defense gets; ``label`` and ``detail`` complete its name."""
    objective = objective or margin_objective(model)

    def run(x: Tensor, y: Tensor, seed: int) -> Tensor:
        return pgd_restarts(model, x, y, restarts=restarts, loss=objective, seed=seed, **budget)

    return f"pgd-margin{label} ({restarts} restarts × {budget['steps']} steps{detail})", run, objective


def scaled_cross_entropy(model: nn.Module, temperature: float) -> Callable[[Tensor, Tensor], Tensor]:
    return lambda x, y: F.cross_entropy(model(x) / temperature, y, reduction="none")


class TrainedEvaluation(FamilyEvaluation):
    """The cells of one ``defend`` run of a training-time defense."""

    def __init__(
        self,
        spec: TrainingDefenseSpec | UserDefenseSpec,
        attack: AttackSpec,
        undefended: nn.Module,
        defended: Mapping[str, nn.Module | str],
        x: Tensor,
        y: Tensor,
        *,
        num_classes: int,
        options: EvaluationOptions,
    ) -> None:
        super().__init__(spec, attack, undefended, x, y, num_classes, options)
        self.undefended, self.defended = undefended, dict(defended)  # the classifier, each library's model
        self.checks: dict[str, dict] = {}

    @property
    def budget(self) -> bool:
        return not self.attack.minimal

    # ------------------------------------------------------------------ one model
    def subject(self, library: str, model: nn.Module | str) -> Subject:
        """The twin or one library's trained model: transfer (trained models only) and white-box rows with
        every attack library, then the adaptive attacks; a trained model gets the overfitting check."""

        def rows(clean_ok: Tensor) -> Iterator[Row]:
            assert not isinstance(model, str)  # a reason instead of a model gets no rows (the engine skips it)
            ce_zero = objective_zero_gradient_share(cross_entropy_objective(model), self.x, self.y)
            for mode in ("transfer", "white-box") if library != UNDEFENDED else ("white-box",):
                for attack_library in self.attack_libraries:
                    if mode == "transfer":
                        yield Row(mode, attack_library, ce_zero, reason=TRANSFER_REASON, transfer=True)
                    else:
                        yield Row(mode, attack_library, ce_zero, target=model)
            for name, run, objective in self.adaptive_attacks(model):
                zero = math.nan if objective is None else objective_zero_gradient_share(objective, self.x, self.y)
                attack_library = "torchattacks" if name.startswith("autoattack") else "own"
                yield Row(
                    "adaptive", attack_library, zero, attack=name, run=run, within_budget=name.startswith("deepfool")
                )

        n_rows = 0 if isinstance(model, str) else 2 * len(self.attack_libraries) + len(self.adaptive_attacks(model))
        after = None if library == UNDEFENDED else partial(self.overfitting_check, library)
        return Subject(library, model, rows, n_rows=n_rows, worst_case_attack="all", after=after)

    def adaptive_attacks(self, model: nn.Module) -> list[AdaptiveAttack]:
        """``(name, run, objective)`` of the adaptive attacks for this defense and attack: ``run(x, y, seed)``
        attacks one batch; ``objective`` (the ascended per-sample loss, for ``zero_grad_share``) is ``None``
        for attacks without one of ours."""
        a = self.attack
        distill = not self.spec.adversarial
        attacks: list[AdaptiveAttack] = []
        if self.budget:
            eps = a.eps
            assert eps is not None  # a budget attack: AttackSpec requires its eps
            budget = adaptive_budget(a)
            attacks.append(margin_pgd(model, budget, self.restarts))
            if distill:
                scaled = scaled_cross_entropy(model, self.spec.temperature)
                attacks.append(
                    (
                        f"pgd-ce(z/T), T={self.spec.temperature:g}",
                        lambda x, y, seed: pgd_restarts(model, x, y, restarts=1, loss=scaled, seed=seed, **budget),
                        scaled,
                    )
                )
            elif self.autoattack:
                attacks.append(
                    (
                        "autoattack (standard)",
                        lambda x, y, seed: TorchattacksAdapter().autoattack(
                            model, x, y, norm=a.norm.value, eps=eps, num_classes=self.num_classes, seed=seed
                        ),
                        None,
                    )
                )
            if self.spec.defense in ("adv-fgsm", "adv-fgsm-rs") and a.attack != "fgsm":
                attacks.append(("fgsm", lambda x, y, seed: fgsm(model, x, y, eps=eps), None))
        if distill or not self.budget:
            norm = "Linf" if self.budget and a.norm is Norm.LINF else "L2"
            attacks.append(
                (
                    f"deepfool ({norm}, logits)",
                    lambda x, y, seed: deepfool(model, x, y, norm=norm, steps=50, overshoot=0.02),
                    None,
                )
            )
        return attacks

    def overfitting_check(self, library: str, cells: Sequence[Cell] | None = None) -> None:
        """Catastrophic overfitting (FGSM training): FGSM accuracy against the adaptive PGD accuracy, on the
        ``cells`` of ``library``'s model (default: every cell of the evaluation)."""
        if self.spec.defense not in ("adv-fgsm", "adv-fgsm-rs"):
            return
        cells = self.cells if cells is None else cells
        rows = {c.attack: c for c in cells if c.defense_library == library and c.mode == "adaptive"}
        fgsm_cell = rows.get("fgsm") or next(
            (c for c in cells if c.defense_library == library and c.mode == "white-box" and
             self.attack.attack == "fgsm" and c.attack_library == "own"), None,
        )  # fmt: skip
        pgd_cell = next((c for name, c in rows.items() if name.startswith("pgd-margin")), None)
        if fgsm_cell is None or pgd_cell is None or fgsm_cell.robust is None or pgd_cell.robust is None:
            return
        fgsm_acc, pgd_acc = float(fgsm_cell.robust.double().mean()), float(pgd_cell.robust.double().mean())
        gap = fgsm_acc - pgd_acc
        # Wong et al.'s catastrophic overfitting: PGD accuracy collapses while FGSM accuracy stays high,
        # not the ordinary gap between a single step and an iterative attack
        flagged = gap > OVERFITTING_GAP and pgd_acc < fgsm_acc / 2
        self.checks[library] = {
            "catastrophic_overfitting": flagged,
            "fgsm_acc": fgsm_acc,
            "pgd_acc": pgd_acc,
            "gap": gap,
            "threshold": OVERFITTING_GAP,
        }
        verdict = "catastrophic overfitting" if flagged else "no catastrophic overfitting"
        pgd_cell.reason = f"{pgd_cell.reason}; {verdict}: FGSM acc {fgsm_acc:.3f} vs PGD {pgd_acc:.3f}".lstrip("; ")

    # ------------------------------------------------------------------ all of it
    def subjects(self) -> list[Subject]:
        """The undefended twin, then each library's trained model."""
        models = {UNDEFENDED: self.undefended, **self.defended}
        return [self.subject(library, model) for library, model in models.items()]

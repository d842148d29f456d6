"""``defend --defense-module FILE.py:factory``: a user's defended system, evaluated by the same engine as the
built-in defenses, next to its undefended twin (``--model``, with ``--checkpoint``: the surrogate the transfer
rows are computed on).

Rows, as for a trained defense (:class:`~advbridge.experiments.defend.trained.TrainedEvaluation`): clean,
transfer (each library's attack on the twin, fed to the system), white-box (each library on the system as
it is), adaptive (PGD on the margin loss from random restarts, AutoAttack), worst case. What the system
declares adds adaptive rows (Athalye et al. 2018; Tramèr et al. 2020):

- ``preprocess`` and ``classifier`` attributes (the system is ``classifier(preprocess(x))``): margin PGD
  through :class:`~advbridge.defenses.preprocessor.bpda.BPDA` (the transformation's backward replaced by the
  identity), for a transformation whose gradient is useless or absent;
- ``randomized = True``: margin PGD on the expectation over ``eot`` draws (EOT, Athalye et al., eq. 4).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from torch import nn

from advbridge.bridge import distributed
from advbridge.bridge.defense_spec import UserDefenseSpec
from advbridge.bridge.errors import InvalidParameterError
from advbridge.bridge.io import OutputPrefix
from advbridge.bridge.spec import AttackSpec
from advbridge.defenses.preprocessor.bpda import BPDA
from advbridge.experiments.core.losses import margin_objective
from advbridge.experiments.defend.generative import eot_objective
from advbridge.experiments.defend.report import results_table, write_defend
from advbridge.experiments.defend.run_trained import save_accuracy_figure
from advbridge.experiments.defend.trained import AdaptiveAttack, TrainedEvaluation, adaptive_budget, margin_pgd
from advbridge.experiments.engine import EvaluationOptions
from advbridge.experiments.flags import training_checks
from advbridge.zoo.user_models import build_factory_model

#: The defense library of the user's system in the table.
USER = "user"


def load_defense_module(spec: UserDefenseSpec) -> nn.Module:
    """The user's system built by the factory of ``spec``, checked (:func:`check_defense_module`)."""
    return check_defense_module(build_factory_model(spec.module), spec.module)


def check_defense_module(system: nn.Module, name: str) -> nn.Module:
    """The user's system in eval mode, checked: an ``nn.Module``; ``preprocess`` and ``classifier`` both modules
    or both absent."""
    if not isinstance(system, nn.Module):
        raise InvalidParameterError(f"expected the defense as a torch.nn.Module, got {type(system).__name__}")
    parts = [getattr(system, part, None) for part in ("preprocess", "classifier")]
    if any(p is not None for p in parts) and not all(isinstance(p, nn.Module) for p in parts):
        raise InvalidParameterError(
            f"expected {name} to declare both preprocess and classifier as modules (for BPDA) or neither"
        )
    return system.eval()


class UserDefenseEvaluation(TrainedEvaluation):
    """The twin and the user's system: the rows of a trained model, and the adaptive attacks it declares."""

    def adaptive_attacks(self, model: nn.Module) -> list[AdaptiveAttack]:
        attacks = super().adaptive_attacks(model)
        if model is self.undefended or not self.budget:
            return attacks
        budget = adaptive_budget(self.attack)
        preprocess = getattr(model, "preprocess", None)
        if isinstance(preprocess, nn.Module):
            classifier = model.classifier
            assert isinstance(classifier, nn.Module)  # check_defense_module: both modules or neither
            bpda = nn.Sequential(BPDA(preprocess), classifier).eval()
            objective = margin_objective(bpda)
            attacks.append(margin_pgd(bpda, budget, self.restarts, label="-bpda", objective=objective))
        if getattr(model, "randomized", False):
            draws = self.spec.eot
            objective = eot_objective(margin_objective(model), draws)
            attacks.append(
                margin_pgd(model, budget, self.restarts, label="-eot", objective=objective, detail=f", {draws} draws")
            )
        return attacks


def run_defend_module(
    spec: UserDefenseSpec,
    attack: AttackSpec,
    workload,
    options: EvaluationOptions,
    *,
    out: str | Path | OutputPrefix | None = None,
    system: nn.Module | None = None,
) -> tuple[pd.DataFrame, list[Path]]:
    """Evaluate the user's system of ``spec`` (or ``system`` itself, from Python) against the workload's model as
    its twin; returns (results, paths)."""
    prefix = OutputPrefix.writable(out)
    system = load_defense_module(spec) if system is None else check_defense_module(system, spec.module)
    system = system.to(workload.x.device)
    evaluation = UserDefenseEvaluation(
        spec, attack, workload.model, {USER: system}, workload.x, workload.y, num_classes=workload.info.num_classes,
        options=options,
    )  # fmt: skip
    cells = evaluation.run()
    clean = next(c for c in cells if c.defense_library == USER and c.mode == "none")
    assert clean.robust is not None  # the clean cell of a model (not a reason) has it
    system_card = {"num_classes": workload.info.num_classes, "accuracy": float(clean.robust.double().mean())}
    training = training_checks(workload.card, **{USER: system_card})
    table = results_table(cells, spec, attack, workload.context, training)
    paths: list[Path] = []
    if prefix is not None and distributed.world().main:
        declared = [name for name in ("preprocess", "randomized") if getattr(system, name, None)]
        paths = write_defend(
            prefix, spec, attack, workload, cells, table, training,
            sections=[f"User defense: {spec.module} (declares: {', '.join(declared) or 'nothing'}); "
                      f"undefended twin: {workload.context['model']}"],
            figures={"figure": lambda path: save_accuracy_figure(table, spec, path)},
            **options.metadata("restarts", "autoattack"),
        )  # fmt: skip
    return table, paths

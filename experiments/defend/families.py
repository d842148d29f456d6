"""The defense families ``defend`` evaluates, registered next to what they evaluate the way timm registers its
models (``@register_defense(...)`` on the family; :mod:`experiments.registry` imports this module, not its
clients): for each, the spec from the request, its checks before any work (and the implementations to evaluate,
checked once), and its evaluation and files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from advbridge.bridge.defense_spec import (
    GENERATIVE_DEFENSES,
    TRAINING_DEFENSES,
    DefenseSpec,
    GenerativeDefenseSpec,
    TrainingDefenseSpec,
    UserDefenseSpec,
)
from advbridge.bridge.errors import InvalidParameterError
from advbridge.bridge.io import OutputPrefix
from advbridge.bridge.spec import AttackSpec
from advbridge.experiments.defend.report import COLUMNS, format_table
from advbridge.experiments.defend.squeezers import AGREEMENT_COLUMNS, check_defense_libraries
from advbridge.experiments.engine import EvaluationOptions
from advbridge.experiments.options import generator_config, recipe, training_spec
from advbridge.experiments.registry import register_defense
from advbridge.experiments.requests import DefendRequest
from advbridge.experiments.workload import DEFAULT_MODELS, Workload
from advbridge.zoo.datasets import dataset_info


class DefenseFamily:
    """A registered family of defenses, as ``defend`` uses it: ``spec`` (the resolved spec from the options:
    by default ``spec_type`` filled with the options named in ``spec_fields``), ``check`` (the options, before
    any work: by default ``--restarts``), ``run`` (the family's evaluation and files: ``(table, lines, paths)``);
    ``role`` names the classifier in the header, ``columns`` are the printed table's."""

    role: str
    columns: list[str] = ["attack", *COLUMNS]
    spec_type: type
    spec_fields: tuple[str, ...] = ()

    def spec(self, request: DefendRequest, family: str) -> Any:
        given = {k: getattr(request, k) for k in self.spec_fields if getattr(request, k) is not None}
        return self.spec_type(defense=request.defense, **given).resolved(family)

    def check(self, request: DefendRequest, spec: Any) -> list[str] | None:
        """The family's own options, before any work (the shared ones are checked by ``defend`` and by the
        request); returns the implementations to evaluate (``None``: the family's own choice)."""
        return None

    def run(
        self, request: DefendRequest, spec: Any, attack: AttackSpec, workload: Workload, options: EvaluationOptions,
        out: OutputPrefix, defense_libraries: list[str] | None,
    ) -> tuple[pd.DataFrame, list[str], list[Path]]:  # fmt: skip
        """The family's evaluation and its files: ``(table, lines printed under it, paths written)``."""
        raise NotImplementedError

    def libraries(self, defense: str) -> list[str]:
        """The libraries that implement ``defense`` at its defaults (``cli.py list``): ours only by default."""
        return ["own"]


@register_defense("squeeze-detect", kind="detector", summary="Xu et al.'s feature-squeezing detector")
@register_defense(
    "bit-depth", "median", "resample", kind="squeezer", summary="a feature squeezer in front of the classifier"
)
class Squeezers(DefenseFamily):
    """Feature squeezers and the squeezing detector: every library's implementation, on the classifier."""

    role, columns = "model", COLUMNS
    spec_type, spec_fields = DefenseSpec, ("bits", "size", "factor", "mode", "threshold", "fpr")

    def check(self, request: DefendRequest, spec: DefenseSpec) -> list[str]:
        return check_defense_libraries(spec, request.defense_libraries)

    def libraries(self, defense: str) -> list[str]:
        return check_defense_libraries(DefenseSpec(defense=defense).resolved("mnist"))

    def run(self, request, spec, attack, workload, options, out, defense_libraries):
        from advbridge.experiments.defend.squeezers import run_defend

        table, agreement, paths = run_defend(spec, attack, workload, options, defense_libraries=defense_libraries,
                                             out=out)  # fmt: skip
        lines = [
            "\nimplementations of the defense (squeezed images vs own):",
            format_table(agreement, AGREEMENT_COLUMNS),
        ]
        return table, lines, paths


TRAINED_SUMMARY = "trained into the classifier (adversarial training, defensive distillation)"


@register_defense(*TRAINING_DEFENSES, kind="training", summary=TRAINED_SUMMARY)
class TrainedDefenses(DefenseFamily):
    """Training-time defenses: each library's trained model and the undefended twin."""

    role = "undefended model"

    def spec(self, request: DefendRequest, family: str) -> TrainingDefenseSpec:
        spec = training_spec(
            request, request.train_eps, request.train_norm, request.train_steps, request.train_step_size
        )
        return spec.resolved(family, warm_start=request.from_undefended)

    @staticmethod
    def given(request: DefendRequest) -> dict[str, Any]:
        """The defended models' training options given on the command line (``None``: the twin's)."""
        return {"epochs": request.train_epochs, "max_train": request.train_max, "lr": request.train_lr,
                "optimizer": request.train_optimizer, "schedule": request.train_schedule,
                "clip_grad_norm": request.train_clip_grad_norm}  # fmt: skip

    def check(self, request: DefendRequest, spec: TrainingDefenseSpec) -> list[str]:
        """The defended models' options, checked by building their config now (before the twin is trained); a
        user's model cannot be the twin (advbridge trains the defended models from the twin's recipe)."""
        from advbridge.zoo.train_config import TrainConfig
        from advbridge.zoo.user_models import is_factory

        user_file = request.checkpoint is not None and not Path(request.checkpoint).expanduser().is_dir()
        if is_factory(request.model) or user_file:
            raise InvalidParameterError(
                f"expected a model advbridge trains (a timm name or a cache folder) with --defense {spec.defense}, "
                "got your own model; evaluate your defended model with --defense-module FILE.py:factory"
            )
        from advbridge.experiments.defend.run_trained import check_training_libraries

        info = dataset_info(request.dataset, data_root=request.data_root)
        config = TrainConfig(dataset=request.dataset, model=request.model or DEFAULT_MODELS[info.family],
                             data_root=request.data_root, **recipe(spec, **self.given(request)))  # fmt: skip
        return check_training_libraries(spec, config, request.defense_libraries)

    def libraries(self, defense: str) -> list[str]:
        from advbridge.experiments.defend.run_trained import check_training_libraries
        from advbridge.zoo.train_config import TrainConfig

        spec = TrainingDefenseSpec(defense=defense).resolved("mnist")
        config = TrainConfig(dataset="mnist-5k", model=DEFAULT_MODELS["mnist"], **recipe(spec))
        return check_training_libraries(spec, config)

    def run(self, request, spec, attack, workload, options, out, defense_libraries):
        from advbridge.experiments.defend.run_trained import defended_config, run_defend_trained

        config = defended_config(
            workload.card, from_undefended=request.from_undefended, data_root=request.data_root,
            **recipe(spec, **self.given(request)),
        )  # fmt: skip
        table, checks, paths = run_defend_trained(
            spec, attack, workload, config, options, defense_libraries=defense_libraries, out=out
        )
        lines = [
            f"{library}: {'CATASTROPHIC OVERFITTING' if c['catastrophic_overfitting'] else 'no catastrophic overfitting'}"
            f" (FGSM accuracy {c['fgsm_acc']:.3f}, PGD {c['pgd_acc']:.3f})"
            for library, c in checks.items()
        ]
        return table, lines, paths


GENERATIVE_SUMMARY = "with a generative model (purification, labelling, reconstruction-error detection)"


@register_defense(*GENERATIVE_DEFENSES, kind="generative", summary=GENERATIVE_SUMMARY)
class GenerativeDefenses(DefenseFamily):
    """Defenses with a generator (ours only): purification, labelling, reconstruction-error detection."""

    role = "classifier"
    spec_type, spec_fields = GenerativeDefenseSpec, ("sample", "eot", "refine_steps", "refine_lr", "threshold", "fpr")

    def check(self, request: DefendRequest, spec: GenerativeDefenseSpec) -> list[str]:
        if request.defense_libraries and {s.strip() for s in request.defense_libraries.split(",")} - {"own", ""}:
            raise InvalidParameterError(
                f"expected --defense-libraries own for {spec.defense} (no reference library has it), "
                f"got {request.defense_libraries}"
            )
        generator_config(request, spec.generator, epochs=request.gen_epochs, max_train=request.gen_max_train)
        return ["own"]

    def run(self, request, spec, attack, workload, options, out, defense_libraries):
        from advbridge.experiments.defend.run_generative import run_defend_generative

        generator = generator_config(
            request, spec.generator, epochs=request.gen_epochs, max_train=request.gen_max_train
        )
        table, checks, paths = run_defend_generative(spec, attack, workload, generator, options, out=out)
        lines = ["checks: " + ", ".join(f"{k} {v:.3f}" for k, v in checks.items())] if checks else []
        return table, lines, paths


class UserDefense(DefenseFamily):
    """``--defense-module``: a user's defended system against its undefended twin (``--model``)."""

    role = "undefended twin"

    def spec(self, request: DefendRequest, family: str) -> UserDefenseSpec:
        if request.defense_module is None:
            raise InvalidParameterError("expected --defense-module FILE.py:factory")
        return UserDefenseSpec(module=request.defense_module, eot=request.eot)

    def run(self, request, spec, attack, workload, options, out, defense_libraries):
        from advbridge.experiments.defend.user import run_defend_module

        table, paths = run_defend_module(spec, attack, workload, options, out=out)
        return table, [], paths

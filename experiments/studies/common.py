"""What the three studies share: the user's options and budget, the workloads, the cells of trained defenses
and squeezers, the models' cards."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from advbridge.bridge.errors import InvalidParameterError
from advbridge.bridge.io import OutputPrefix
from advbridge.experiments.defend.squeezers import run_defend
from advbridge.experiments.engine import EvaluationOptions
from advbridge.experiments.studies.budgets import BUDGETS, LIBRARIES, SCALED
from advbridge.experiments.studies.engine import CellSystem, StudyCell
from advbridge.experiments.workload import Workload, default_device
from advbridge.zoo.checkpoints import CARD_FILE, checkpoint_dir
from advbridge.zoo.datasets import dataset_info, load_tensors
from advbridge.zoo.training import TrainConfig


@dataclass(frozen=True)
class StudyOptions:
    """What a user may change in a study: data, scale, budget entries, libraries, the backbone."""

    data_root: str | None = None
    scale: float = 1.0
    budget: dict[str, Any] | None = None  # entries of BUDGETS to override
    libraries: tuple[str, ...] | None = None
    model: str | None = None  # animals10-fs-dd: the timm backbone (default resnet18)
    dataset: str | None = None  # animals10-fs-dd: "cifar10-animals" (default, offline) or "animals10"
    pretrained: bool = False  # animals10-fs-dd with animals10: timm's pretrained weights (online)
    weights: str | None = None  # animals10-fs-dd: start from these weights instead of the vehicle pretraining
    finetune: str = "all"
    attack_batch_size: int | None = None
    progress: bool = True


def resolved_budget(name: str, options: StudyOptions) -> dict[str, Any]:
    """The study's budget: its defaults, ``scale`` applied, then the given entries."""
    if not (isinstance(options.scale, (int, float)) and math.isfinite(options.scale) and options.scale > 0):
        raise InvalidParameterError(f"expected scale > 0, got {options.scale!r}")
    budget = dict(BUDGETS[name])
    for key in SCALED:
        if key in budget:
            budget[key] = max(1, round(budget[key] * options.scale))
    for key, value in (options.budget or {}).items():
        if key not in budget:
            raise InvalidParameterError(f"expected a budget entry of {name} ({', '.join(budget)}), got {key!r}")
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidParameterError(f"expected {key} as an int >= 1, got {value!r}")
            budget[key] = value
    return budget


def attack_libraries(name: str, options: StudyOptions) -> list[str]:
    from advbridge.experiments.compare import parse_libraries

    return parse_libraries(",".join(options.libraries)) if options.libraries else list(LIBRARIES[name])


def make_workload(model, card: dict, dataset: str, n: int, data_root: str | None, offset: int = 0) -> Workload:
    """``n`` seeded test images of ``dataset`` (after the first ``offset``) with a trained model."""
    x, y = load_tensors(dataset, "test", n=offset + n, data_root=data_root, seed=0)
    device = default_device()
    info = dataset_info(dataset, data_root=data_root)
    return Workload(
        model=model.to(device).eval(), x=x[offset:].to(device), y=y[offset:].to(device), info=info, card=card
    )


def cached_cards(models: Mapping[str, tuple[TrainConfig, dict | None]]) -> dict[str, dict]:
    """The cards of those ``{name: (config, defense key)}`` models that are in the model cache (never trains:
    the report of a study with unfinished cells lists what exists)."""
    cards = {}
    for name, (config, defense) in models.items():
        resolved = config.resolved()
        key = resolved.cache_fields() if defense is None else {**resolved.cache_fields(), "defense": defense}
        card_file = checkpoint_dir(resolved.dataset, resolved.model, key) / CARD_FILE
        if card_file.is_file():
            cards[name] = json.loads(card_file.read_text())
    return cards


def by_library(none: str, defended: str) -> Callable[[pd.Series], str]:
    """Row label: the undefended twin's rows ``none``, ours ``defended``, another library's ``defended (lib)``."""

    def label(row: pd.Series) -> str:
        library = row["defense_library"]
        if library == "undefended":
            return none
        return defended if library == "own" else f"{defended} ({library})"

    return label


def fixed_label(text: str) -> Callable[[pd.Series], str]:
    """Row label: ``text`` for every row."""
    return lambda row: text


def evaluation_options(libraries, options, **fields) -> EvaluationOptions:
    """The engine's options of a study cell: the study's attack libraries, progress and attack batch size."""
    return EvaluationOptions(libraries, show_progress=options.progress, batch_size=options.attack_batch_size, **fields)


def trained_cell(name, attack_label, spec, attack, workload, config, libraries, budget, none, defended, options):
    from advbridge.experiments.defend.run_trained import run_defend_trained

    def run(prefix: OutputPrefix) -> pd.DataFrame:
        evaluation = evaluation_options(libraries, options, restarts=budget["restarts"])
        return run_defend_trained(
            spec, attack, workload(), config(), evaluation, defense_libraries=["own"], out=prefix
        )[0]

    def system() -> CellSystem:
        from advbridge.bridge.training import train_defended

        cell = workload()
        model, _ = train_defended(config(), spec, library="own", progress=options.progress)
        label = f"{spec.defense} trained from {cell.card.get('model', 'the classifier')}"
        return CellSystem(model.to(cell.x.device).eval(), cell.model, cell, attack, label)

    return StudyCell(name, attack_label, run, by_library(none, defended), system)


def squeezer_system(spec, attack, workload, *, calibration=None) -> Callable[[], CellSystem]:
    """``system()`` of a squeezer or detector cell: the squeezer (exact backward) in front of ``workload().model``, or
    the squeezing detector next to it (threshold the spec's, else calibrated on ``calibration()``)."""

    def system() -> CellSystem:
        from advbridge.experiments.audit.command import applied

        cell = workload()
        held_out = None if calibration is None else calibration()
        module = applied(spec, cell.model, held_out, cell.info.num_classes)
        relation = "beside" if spec.detector else "in front of"
        label = f"{spec.describe()} {relation} {cell.card.get('model', 'the classifier')}"
        return CellSystem(module, cell.model, cell, attack, label)

    return system


def squeezer_run(spec, attack, workload, libraries, options, *, source=None, calibration=None):
    """``run(prefix)`` of a squeezer or detector cell: ``run_defend`` on ``workload()`` (``source()``: the
    transfer attacks' model; ``calibration()``: the detector's held-out clean images), own implementation."""

    def run(prefix: OutputPrefix) -> pd.DataFrame:
        evaluation = evaluation_options(libraries, options, calibration=None if calibration is None else calibration())
        source_model = None if source is None else source()
        return run_defend(
            spec, attack, workload(), evaluation, defense_libraries=["own"], out=prefix, source=source_model
        )[0]

    return run


# ---------------------------------------------------------------------------------------------- study 002

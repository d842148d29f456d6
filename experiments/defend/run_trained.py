"""``defend`` for training-time defenses (adversarial training, defensive distillation).

Each library's trainer (``own``, ``art``) trains the defended model, or takes it from the model cache, with
the undefended twin's config (dataset, model, seed, batch size...) and the defense's own budget; then
:class:`~experiments.defend.trained.TrainedEvaluation` attacks the twin and every trained model. The
tables and files are those of :func:`experiments.defend.report.run_defend`; the figure is robust accuracy per
model and attack; the JSON has each model's card and the catastrophic-overfitting checks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path

import pandas as pd

from advbridge.bridge import distributed
from advbridge.bridge.adapters import LIBRARIES, get_adapter
from advbridge.bridge.defense_spec import TrainingDefenseSpec
from advbridge.bridge.errors import UnsupportedDefenseError, check_names
from advbridge.bridge.io import OutputPrefix, atomic_write
from advbridge.bridge.spec import AttackSpec
from advbridge.bridge.training import train_defended
from advbridge.experiments.defend.report import results_table, write_defend
from advbridge.experiments.defend.trained import TrainedEvaluation
from advbridge.experiments.engine import EvaluationOptions
from advbridge.experiments.flags import EVERY_ROW, UNDEFENDED, training_checks
from advbridge.zoo.checkpoints import WEIGHTS_FILE, checkpoint_dir
from advbridge.zoo.train_config import TrainConfig

log = logging.getLogger(__name__)


def check_training_libraries(
    spec: TrainingDefenseSpec, config: TrainConfig, names: Sequence[str] | str | None = None
) -> list[str]:
    """Validated names of the libraries whose trainer runs the resolved ``spec`` (``own`` first); ``None`` =
    every library that has it. A library named that cannot train it raises :class:`UnsupportedDefenseError`."""
    config = config.resolved()

    def reason(name: str) -> str | None:
        return get_adapter(name).training_unsupported_reason(spec, config)

    if names is None:
        return [n for n in LIBRARIES if reason(n) is None]
    names = check_names("library", names, LIBRARIES)
    names = ["own"] + [n for n in names if n != "own"]
    for name in names:
        why = reason(name)
        if why is not None:
            having = ", ".join(n for n in LIBRARIES if reason(n) is None)
            raise UnsupportedDefenseError(f"{name} cannot train {spec.describe()}: {why}; libraries that can: {having}")
    return names


def defended_config(
    card: dict, *, from_undefended: bool = False, data_root: str | None = None, **overrides
) -> TrainConfig:
    """The training config of the defended models: the undefended twin's (from its card), with ``overrides``
    (``epochs``, ``max_train``...: ``None`` keeps the twin's) and, with ``from_undefended``, starting from the
    twin's weights (adversarial fine-tuning)."""
    known = {f.name for f in fields(TrainConfig)}
    twin = TrainConfig(**{k: v for k, v in card["config"].items() if k in known})
    twin = replace(twin, data_root=data_root)
    changes = {k: v for k, v in overrides.items() if v is not None}
    if from_undefended:
        folder = checkpoint_dir(twin.dataset, twin.model, twin.cache_fields())
        changes["weights"] = str(folder / WEIGHTS_FILE)
    return replace(twin, **changes)


def run_defend_trained(
    spec: TrainingDefenseSpec,
    attack: AttackSpec,
    workload,
    config: TrainConfig,
    options: EvaluationOptions,
    *,
    defense_libraries: Sequence[str] | None = None,
    out: str | Path | OutputPrefix | None = None,
) -> tuple[pd.DataFrame, dict, list[Path]]:
    """Train (or take from the cache) the defended models of a resolved ``spec`` with ``config`` and
    evaluate them and the workload's (undefended) model; returns (results, checks, paths written)."""
    libraries = check_training_libraries(spec, config, defense_libraries)
    prefix = OutputPrefix.writable(out)
    defended, cards = {}, {}
    for library in libraries:
        model, card = train_defended(config, spec, library=library, progress=options.show_progress)
        defended[library], cards[library] = model.to(workload.x.device).eval(), card
    evaluation = TrainedEvaluation(
        spec, attack, workload.model, defended, workload.x, workload.y, num_classes=workload.info.num_classes,
        options=options,
    )  # fmt: skip
    cells = evaluation.run()
    training = training_checks(workload.card, **cards)
    table = results_table(cells, spec, attack, workload.context, training)
    paths: list[Path] = []
    if prefix is not None and distributed.world().main:  # under torchrun rank 0 writes
        models = "\n".join(
            f"- {lib}: clean test accuracy {c['accuracy']:.4f}, {c.get('train_samples')} training samples, "
            f"{c.get('epochs_run')} epochs, {c.get('train_seconds')} s "
            f"({'undefended twin' if lib == UNDEFENDED else c.get('art_trainer') or 'own trainer'})"
            + (" — did not learn" if training.get(lib, training[EVERY_ROW]).failed else "")
            for lib, c in {UNDEFENDED: workload.card, **cards}.items()
        )
        paths = write_defend(
            prefix, spec, attack, workload, cells, table, training,
            sections=[f"Trained models:\n\n{models}"],
            figures={"figure": lambda path: save_accuracy_figure(table, spec, path)},
            **options.metadata("restarts", "autoattack"),
            defense_libraries=libraries,
            undefended_card={k: v for k, v in workload.card.items() if k != "history"},
            cards=cards,
            checks=evaluation.checks,
        )  # fmt: skip
    return table, evaluation.checks, paths


def save_accuracy_figure(
    table: pd.DataFrame, spec, path: Path, subtitle: str = "the undefended twin and each library's trained model"
) -> Path:
    """Robust accuracy of each model (undefended twin and each library's) under each attack and mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = table[(table["status"] == "ok") & table["robust_acc"].notna()].copy()
    ok["row"] = ok["mode"] + ": " + ok["attack"] + " [" + ok["attack_library"].replace("", "-") + "]"
    modes = ["none", "transfer", "white-box", "adaptive", "worst-case"]
    ok = ok.assign(order=ok["mode"].map(modes.index)).sort_values("order", kind="stable")
    pivot = ok.pivot_table(index="row", columns="defense_library", values="robust_acc", sort=False)
    order = [c for c in [UNDEFENDED, *LIBRARIES] if c in pivot.columns]
    pivot = pivot[order]
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(pivot) * len(order) / 2 + 1.5))
    pivot.plot.barh(ax=ax, width=0.8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy of the model (clean and under attack)")
    ax.set_ylabel("")
    ax.set_title(f"{spec.describe()}\n{subtitle}", fontsize=9)
    ax.legend(title="model", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path

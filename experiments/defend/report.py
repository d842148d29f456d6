"""``defend``: a defense, each library's implementation of it, and attacks that do and do not know it.

Two tables (tidy, one row per cell):

- agreement: one row per (squeezer, library): status, ``max_abs_diff_vs_own`` of the squeezed images
  (for the detector: of each of its squeezers), time;
- results: one row per (``defense``, ``defense_library``, ``mode``, ``attack``, ``attack_library``) with
  ``mode`` one of

  - ``none``: clean images through the defended system;
  - ``transfer``: the attack computed on the undefended classifier, then fed to the defense (what the
    studies did);
  - ``white-box``: the defended system attacked with its exact gradients (for bit depth: zero almost
    everywhere, so a naive attack looks defeated; ``zero_grad_share`` says so);
  - ``adaptive``: the attack that knows the defense (BPDA through non-differentiable squeezers; for the
    detector, :func:`~experiments.defend.adaptive.detector_aware_pgd` with BPDA);
  - ``worst-case``: per sample, robust only if no ran cell of that defense implementation broke it;

  and ``clean_acc``, ``robust_acc`` (the share of samples classified correctly both clean and under attack,
  by the whole system: for a detector, an adversarial example counts only if it fools the classifier and
  is not flagged), ``success_rate`` (over clean-correct samples), median L2/L∞ of the successful
  perturbations, ``zero_grad_share`` (share of samples whose gradient of the attacked objective at the clean
  input is exactly zero: a gradient-masking flag), and for the detector ``detection_rate`` (on successful
  adversarial examples), ``fpr`` (on the clean images), ``roc_auc`` and ``threshold``; and the
  gradient-masking flags as measured values (:mod:`experiments.flags`: ``random_outputs``,
  ``probability_outputs``, ``saturated_softmax`` of the defended system, ``single_step_gap``,
  ``weaker_beats_white_box``, ``unbounded_incomplete``, ``non_monotone_eps``), ``flags`` naming those raised.

For a minimal-norm attack (DeepFool, DDN) ``<out>-eps.csv`` has every row's robust accuracy at a grid of eps
(:func:`robust_by_eps`), from the same run.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from advbridge.bridge.defense_spec import DefenseSpec, GenerativeDefenseSpec, TrainingDefenseSpec, UserDefenseSpec
from advbridge.bridge.io import OutputPrefix, atomic_write_text
from advbridge.bridge.provenance import provenance
from advbridge.bridge.spec import AttackSpec, standard_eps
from advbridge.experiments.compare import format_table as compare_format_table
from advbridge.experiments.compare import results_prefix
from advbridge.experiments.engine import Cell
from advbridge.experiments.flags import EVERY_ROW, FLAG_COLUMNS, add_table_flags
from advbridge.experiments.minimal import DEFAULT_GRID_FACTORS
from advbridge.zoo.training_check import TrainingCheck

log = logging.getLogger(__name__)

#: The resolved spec of any defense family (what a results table describes).
AnyDefenseSpec = DefenseSpec | TrainingDefenseSpec | GenerativeDefenseSpec | UserDefenseSpec

COLUMNS = [
    "defense_library",
    "mode",
    "attack_library",
    "status",
    "n",
    "clean_acc",
    "robust_acc",
    "success_rate",
    "median_l2",
    "median_linf",
    *FLAG_COLUMNS[:3],
    "zero_grad_share",
    *FLAG_COLUMNS[4:-1],
    "detection_rate",
    "fpr",
    "roc_auc",
    "threshold",
    "flags",
    "reason",
]
#: Every file a ``defend`` run can write, as tails of its output prefix, in the order they are listed.
TAILS = {
    "results": ".csv",
    "agreement": "-agreement.csv",
    "markdown": ".md",
    "metadata": ".json",
    "figure": ".png",
    "eps": "-eps.csv",
    "images": "-images.png",
    "roc": "-roc.png",
    "scores": "-scores.png",
}


def _median(values: Tensor) -> float:
    values = values[torch.isfinite(values)]
    return float(values.median()) if len(values) else math.nan


def cell_row(cell: Cell) -> dict:
    row: dict[str, object] = dict.fromkeys(COLUMNS, math.nan)
    row.update(
        defense_library=cell.defense_library,
        mode=cell.mode,
        attack_library=cell.attack_library,
        status=cell.status,
        reason=cell.reason,
        zero_grad_share=cell.zero_grad_share if cell.status == "ok" else math.nan,
        **(cell.model_flags if cell.status == "ok" else {}),
    )
    if cell.robust is None:
        return row
    assert cell.clean_ok is not None  # a cell with robust has clean_ok (judge, worst_case_cell, the clean cell)
    n = len(cell.robust)
    row.update(n=n, clean_acc=float(cell.clean_ok.double().mean()), robust_acc=float(cell.robust.double().mean()))
    if cell.fooled is not None and cell.clean_ok.any():
        row["success_rate"] = float(cell.fooled.sum() / cell.clean_ok.sum())
    if cell.norms is not None and cell.fooled is not None:
        row["median_l2"] = _median(cell.norms[0][cell.fooled])
        row["median_linf"] = _median(cell.norms[1][cell.fooled])
    if cell.detection:
        row.update({k: v for k, v in cell.detection.items() if k in COLUMNS})
    return row


def results_table(
    cells: Sequence[Cell],
    spec: AnyDefenseSpec,
    attack: AttackSpec,
    context: dict,
    training: Mapping[str, TrainingCheck] | None = None,
) -> pd.DataFrame:
    """The tidy rows of a ``defend`` run with every flag; ``training``: the models' training checks
    (:func:`experiments.flags.training_checks`), for ``failed_training``."""
    table = pd.DataFrame([cell_row(c) for c in cells], columns=COLUMNS)
    attack_name = [c.attack or ("none" if c.mode == "none" else attack.attack) for c in cells]
    tidy = {
        **context,
        "defense": spec.describe(),
        "attack": attack_name,
        "norm": attack.norm.value,
        "eps": attack.eps,
        "steps": attack.steps,
        "seed": attack.seed,
    }
    for i, (key, value) in enumerate(tidy.items()):
        table.insert(i, key, value)
    flagged = add_table_flags(table, training)
    return flagged[list(tidy) + COLUMNS]


def failed_training_note(checks: Mapping[str, TrainingCheck]) -> str:
    """Markdown, one paragraph per model behind a table that did not learn (empty when every model learned):
    its rows measure no defense."""
    lines = []
    for key, check in checks.items():
        if check.failed:
            rows = "the defended system" if key == EVERY_ROW else f"the {key} model"
            lines.append(
                f"> **No defense was evaluated for {rows}**: its {check.kind} did not learn "
                f"({'; '.join(check.reasons)}). Its rows are flagged `failed_training`: their numbers measure a "
                "model that did not learn, not robustness.\n"
            )
    return "".join(f"{line}\n" for line in lines)


def robust_by_eps(cells: Sequence[Cell], attack: AttackSpec, context: dict, grid: Sequence[float]) -> pd.DataFrame:
    """Tidy robust accuracy at each eps of ``grid`` for every cell with per-sample perturbations: a sample is
    robust at eps if the system is right on it and no successful perturbation of norm ≤ eps (the attack's
    norm) was found for it. For a minimal-norm attack this is the robust-accuracy-vs-eps curve of one run."""
    index = 0 if attack.norm.value == "L2" else 1
    rows = []
    for cell in cells:
        if cell.robust is None or cell.fooled is None or cell.norms is None or cell.clean_ok is None:
            continue
        size = cell.norms[index]
        for eps in grid:
            robust = cell.clean_ok & ~(cell.fooled & (size <= eps))
            rows.append(
                {
                    **context,
                    "defense_library": cell.defense_library,
                    "mode": cell.mode,
                    "attack": cell.attack or attack.attack,
                    "attack_library": cell.attack_library,
                    "norm": attack.norm.value,
                    "eps": float(eps),
                    "robust_acc": float(robust.double().mean()),
                }
            )
    return pd.DataFrame(rows)


def eps_grid_for(attack: AttackSpec, family: str) -> list[float]:
    """The eps grid of :func:`robust_by_eps`: multiples of the family's standard budget in the attack's norm."""
    return [f * standard_eps(family, attack.norm) for f in DEFAULT_GRID_FACTORS]


def eps_texts(cells: Sequence[Cell], attack: AttackSpec, workload) -> dict[str, str]:
    """``{"eps": CSV}`` of :func:`robust_by_eps` for a minimal-norm attack, else nothing (the ``-eps.csv`` file)."""
    if not attack.minimal:
        return {}
    grid = eps_grid_for(attack, workload.info.family)
    return {"eps": robust_by_eps(cells, attack, workload.context, grid).to_csv(index=False)}


def format_table(table: pd.DataFrame, columns: Sequence[str], *, markdown: bool = False) -> str:
    """:func:`experiments.compare.format_table` for defend's tables: columns without a value are left out."""
    return compare_format_table(table, columns, markdown=markdown, drop_empty=True, reason_width=80)


def default_out(dataset: str, spec: DefenseSpec, attack: AttackSpec) -> str:
    """``results/defend-<dataset>-<defense>-<attack>-<norm>``: runs of other defenses and attacks keep their files."""
    return results_prefix(f"defend-{dataset}-{spec.defense}-{attack.attack}-{attack.norm.value}")


def run_info(spec, attack: AttackSpec, workload, files: Sequence[Path], **extra) -> dict:
    """The JSON metadata of a ``defend`` run: the specs, the workload, ``extra``, provenance, the files."""
    info = {
        "defense": spec.to_dict(),
        "attack": attack.to_dict(),
        **workload.context,
        "n": len(workload.x),
        **extra,
        **provenance(),
    }
    return {**info, "files": [p.name for p in files]}


def write_defend(
    prefix: OutputPrefix,
    spec,
    attack: AttackSpec,
    workload,
    cells: Sequence[Cell],
    table: pd.DataFrame,
    training: Mapping[str, TrainingCheck],
    *,
    texts: Mapping[str, str] | None = None,
    sections: Sequence[str] = (),
    figures: Mapping[str, Callable[..., Path | list[Path]]],
    **meta,
) -> list[Path]:
    """Write one ``defend`` run's files under ``prefix`` (every kind of defense alike): the results CSV (with
    the git revision), the Markdown (header, the note on models that did not learn, the table, ``sections``),
    the JSON (:func:`run_info` with ``meta``; ``training``: the models' training checks, for the note), the eps curves of a minimal-norm attack, ``texts`` (further
    text files by :data:`TAILS` key) and the ``figures`` (by key: ``save(path)``, or ``save(path1, path2)``
    for the detector's ``"roc"`` and ``"scores"``). Returns the paths in :data:`TAILS` order."""
    keys = {"results", "markdown", "metadata", *(texts or {}), *figures} | ({"eps"} if attack.minimal else set())
    files = {k: prefix.file(t) for k, t in TAILS.items() if k in keys or (k == "scores" and "roc" in figures)}
    info = run_info(spec, attack, workload, list(files.values()), **meta)
    header = markdown_header(info, spec, attack, workload) + failed_training_note(training)
    written = {
        "results": table.assign(git_revision=info["git_revision"]).to_csv(index=False),
        "markdown": header
        + format_table(table, ["defense", "attack", *COLUMNS], markdown=True)
        + "".join(f"\n\n{section}" for section in sections)
        + "\n",
        "metadata": json.dumps(info, indent=1, sort_keys=True, default=str) + "\n",
        **eps_texts(cells, attack, workload),
        **(texts or {}),
    }
    paths = [atomic_write_text(files[k], written[k]) for k in files if k in written]
    for key, save in figures.items():
        saved = save(files["roc"], files["scores"]) if key == "roc" else save(files[key])
        paths += saved if isinstance(saved, list) else [saved]
    log.info("wrote %s", ", ".join(str(p) for p in paths))
    return paths


def markdown_header(info: dict, spec, attack: AttackSpec, workload) -> str:
    return (
        f"advbridge {info['git_revision']}: {spec.describe()} vs {attack.attack} {attack.norm.value} "
        f"eps={attack.eps} steps={attack.steps}; {workload.context}; n={len(workload.x)}\n\n"
    )

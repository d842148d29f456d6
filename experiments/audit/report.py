"""The audit's outputs: the rows table, the per-sample distances, the indicators, the card and the figure.

Files under an output prefix (:class:`~advbridge.bridge.io.OutputPrefix`), each written atomically:

- ``<out>.csv``: one row per attack × library × stage (``naive`` or the remedy), with its robust accuracy,
  propagations per sample and optimality (AttackBench, against the lower envelope of every row), then the
  worst-case rows (naive, and after the remedies);
- ``<out>-samples.csv``: the distance each row found for each sample (``inf``: never succeeded), the data
  behind optimality;
- ``<out>-indicators.csv``: every indicator, its value, threshold, whether raised, its remedy, the value after
  it, robust accuracy before → after;
- ``<out>.json``: ``clean_accuracy``, ``worst_case_robust_accuracy``, ``indicators`` (name →
  ``{"value", "threshold", "raised", "remedy", ...}``), the config, the context, provenance;
- ``<out>.md``: the card — the verdict (the worst-case number; whether an indicator stayed raised after its
  remedy), the indicators, the rows;
- ``<out>.png``: robust accuracy vs eps of every row and of the envelope.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from advbridge.bridge.io import OutputPrefix, atomic_write, atomic_write_text
from advbridge.bridge.provenance import provenance
from advbridge.experiments.audit.optimality import envelope, optimality_table, samples_table
from advbridge.experiments.audit.results import NAIVE, Audit

log = logging.getLogger(__name__)

#: Every file an audit writes, as tails of its output prefix.
TAILS = {
    "results": ".csv", "samples": "-samples.csv", "indicators": "-indicators.csv", "metadata": ".json",
    "markdown": ".md", "figure": ".png",
}  # fmt: skip
#: The columns of the printed and Markdown tables.
SHOWN = ["attack", "library", "stage", "status", "robust_acc", "propagations", "max_propagations", "optimality",
         "seconds", "remedy_for"]  # fmt: skip
INDICATOR_COLUMNS = ["indicator", "value", "threshold", "raised", "remedy", "value_after_remedy", "stayed_raised",
                     "robust_accuracy_before", "robust_accuracy_after", "source"]  # fmt: skip


def distance_table(audit: Audit) -> pd.DataFrame:
    """Per-sample distances (index: sample; one column per ok row, named by its key)."""
    return pd.DataFrame({r.key: r.distance.numpy() for r in audit.rows if r.ok and r.distance is not None})


def results_table(audit: Audit) -> pd.DataFrame:
    """One row per attack × library × stage, then the worst case before and after the remedies."""
    distances = distance_table(audit)
    optimality = optimality_table(distances, audit.clean_accuracy) if len(distances.columns) else pd.Series()
    records = []
    for row in audit.rows:
        record = {"attack": row.attack, "library": row.library, "stage": row.stage, "status": row.status,
                  "n": len(audit.clean), "clean_acc": audit.clean_accuracy}  # fmt: skip
        if row.ok:
            # an ok row went through Cascade.finish (or copied a finished row's counts): every tensor is set
            assert row.robust is not None and row.distance is not None
            assert row.forward is not None and row.backward is not None
            propagations = (row.forward + row.backward).double()
            record.update(
                robust_acc=float(row.robust.double().mean()),
                success_rate=float((~row.robust & audit.clean).double().sum() / max(1, int(audit.clean.sum()))),
                median_distance=float(np.median(row.distance[audit.clean].numpy())) if audit.clean.any() else math.nan,
                forward_per_sample=float(row.forward.double().mean()),
                backward_per_sample=float(row.backward.double().mean()),
                propagations=float(propagations.mean()),
                max_propagations=int(propagations.max()),
                hook_forward_per_sample=row.hook_forward / len(audit.clean),
                hook_backward_per_sample=row.hook_backward / len(audit.clean),
                optimality=float(optimality.get(row.key, math.nan)),
            )  # fmt: skip
        record.update(seconds=row.seconds, remedy_for=",".join(row.indicators), reason=row.reason)
        records.append(record)
    for stage, robust in (("worst-case naive", audit.robust_under([NAIVE])), ("worst-case", audit.robust_under())):
        records.append({"attack": stage, "library": "", "stage": "", "status": "ok", "n": len(audit.clean), "remedy_for": "",
                        "clean_acc": audit.clean_accuracy, "robust_acc": float(robust.double().mean()),
                        "reason": "per sample, the worst over the rows" + (" of the naive cascade" if
                                                                               "naive" in stage else "")})  # fmt: skip
    return pd.DataFrame.from_records(records)


def indicator_table(audit: Audit) -> pd.DataFrame:
    return pd.DataFrame.from_records(
        [{"indicator": name, **result.to_dict()} for name, result in audit.indicators.items()]
    )[INDICATOR_COLUMNS]


def verdict(audit: Audit) -> str:
    """The card's first line: the worst-case number, and whether the audit can be trusted."""
    stayed = audit.stayed_raised
    raised = [name for name, r in audit.indicators.items() if r.raised]
    trust = (
        "the model did not learn (clean accuracy at chance): no robustness number of it means anything"
        if "failed_training" in stayed
        else f"indicators still raised after their remedy: {', '.join(stayed)} — do not trust this number"
        if stayed
        else f"indicators raised and remedied: {', '.join(raised)}"
        if raised
        else "no indicator of attack failure raised"
    )
    return (
        f"worst-case robust accuracy {audit.robust_after:.4f} ({audit.config.norm}, eps={audit.config.eps:g}; "
        f"naive cascade {audit.robust_before:.4f}, clean {audit.clean_accuracy:.4f}); {trust}"
    )


def cost_line(audit: Audit) -> str:
    """The audit's cost next to AutoAttack's alone (propagations per sample, wall time)."""
    cost = audit.cost()
    line = f"cost: {cost['propagations_per_sample']:.0f} propagations per sample, {cost['seconds']:.1f} s"
    if cost["autoattack_propagations_per_sample"] is not None:
        line += (f" (AutoAttack standard alone: {cost['autoattack_propagations_per_sample']:.0f} propagations per "
                 f"sample, {cost['autoattack_seconds']:.1f} s)")  # fmt: skip
    return line


def metadata(audit: Audit, context: Mapping | None, files: list[Path]) -> dict:
    best = audit.best_single
    return {
        "clean_accuracy": audit.clean_accuracy,
        "worst_case_robust_accuracy": audit.robust_after,
        "worst_case_robust_accuracy_naive": audit.robust_before,
        "worst_case_robust_accuracy_white_box": audit.robust_white_box,
        "best_single_attack": None if best is None else {"row": best.key, "robust_accuracy": best.robust_accuracy},
        "verdict": verdict(audit),
        "cost": audit.cost(),
        "indicators_stayed_raised": audit.stayed_raised,
        "indicators": {name: result.to_dict() for name, result in audit.indicators.items()},
        "config": {**audit.config.__dict__, "libraries": list(audit.config.libraries)},
        "num_classes": audit.num_classes,
        "n": len(audit.clean),
        **(dict(context) if context else {}),
        **provenance(),
        "files": [p.name for p in files],
    }  # fmt: skip


def curve(distances: np.ndarray, eps_grid: np.ndarray) -> np.ndarray:
    """Robust accuracy at each eps of the grid: the share of samples whose distance exceeds it."""
    return (distances[None, :] > eps_grid[:, None]).mean(1)


def save_figure(audit: Audit, path: Path) -> Path:
    """Robust accuracy vs eps of every ok row and of the lower envelope, up to twice the audit's eps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    distances = distance_table(audit)
    grid = np.linspace(0, 2 * audit.config.eps, 201)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key in distances.columns:
        ax.step(grid, curve(distances[key].to_numpy(), grid), where="post", lw=1, alpha=0.7, label=key)
    if len(distances.columns):
        ax.step(grid, curve(envelope(distances), grid), where="post", lw=2.5, color="black", label="envelope")
    ax.axvline(audit.config.eps, ls="--", color="gray", lw=1)
    ax.set(xlabel=f"eps ({audit.config.norm})", ylabel="robust accuracy", ylim=(-0.02, 1.02))
    ax.legend(fontsize=6, loc="upper right", ncol=2)
    fig.tight_layout()

    def write(tmp: Path) -> None:
        fig.savefig(tmp, format="png", dpi=120)

    try:
        return atomic_write(path, write)
    finally:
        plt.close(fig)


def write_audit(audit: Audit, out: str | Path | OutputPrefix, context: Mapping | None = None) -> list[Path]:
    """Write every file of the audit under ``out`` (module docstring); returns their paths."""
    prefix = OutputPrefix.of(out)
    files = {key: prefix.file(tail) for key, tail in TAILS.items()}
    table, indicators = results_table(audit), indicator_table(audit)
    distances = distance_table(audit)
    labels = {r.key: {"attack": r.attack, "library": r.library, "stage": r.stage} for r in audit.rows if r.ok}
    info = metadata(audit, context, list(files.values()))
    from advbridge.experiments.compare import format_table

    markdown = (
        f"# Audit: {info.get('model', 'model')} on {info.get('dataset', 'images')}\n\n**{verdict(audit)}**\n\n"
        f"n = {len(audit.clean)} images, {audit.num_classes} classes"
        + (f", budget {audit.config.budget} propagations per sample" if audit.config.budget else "")
        + f"\n\n{cost_line(audit)}"
        + "\n\n## Indicators\n\n"
        + indicators.to_markdown(index=False)
        + "\n\n## Rows\n\n"
        + format_table(table, SHOWN, markdown=True, drop_empty=True, reason_width=80)
        + "\n"
    )
    texts = {
        "results": table.assign(git_revision=info["git_revision"]).to_csv(index=False),
        "samples": samples_table(distances, labels).to_csv(index=False),
        "indicators": indicators.to_csv(index=False),
        "metadata": json.dumps(info, indent=1, sort_keys=True, default=str) + "\n",
        "markdown": markdown,
    }
    paths = [atomic_write_text(files[key], text) for key, text in texts.items()]
    paths.append(save_figure(audit, files["figure"]))
    log.info("wrote %s", ", ".join(str(p) for p in paths))
    return paths

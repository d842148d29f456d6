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
- ``<out>-card.json``: the report card (:func:`~advbridge.experiments.audit.card.card`), a RobustBench leaderboard entry's fields (``clean_acc``,
  ``autoattack_acc``, ``external``, ``unreliable``... as RobustBench spells and formats them) and the audit's own:
  clean accuracy, AutoAttack, the best adaptive row, the worst case, each row's contribution to it, the indicators,
  the binarization test, cost, versions and seeds;
- ``<out>.md``: the card a person reads first — the audited system (and its surrogate), the headline numbers, the
  verdict (the worst-case number; whether an indicator stayed raised after its remedy), the warnings, what broke
  the model; then the indicators and the rows;
- ``<out>.png``: robust accuracy vs eps of every row and of the envelope.

Every file is written atomically (:func:`~advbridge.bridge.io.atomic_write`) under its own tail of the prefix.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from advbridge.bridge.io import OutputPrefix, atomic_write, atomic_write_text
from advbridge.bridge.provenance import provenance
from advbridge.experiments.audit.card import card, markdown_card
from advbridge.experiments.audit.optimality import envelope, samples_table
from advbridge.experiments.audit.results import Audit
from advbridge.experiments.audit.tables import distance_table, indicator_table, results_table, verdict

log = logging.getLogger(__name__)

#: Every file an audit writes, as tails of its output prefix.
TAILS = {
    "results": ".csv", "samples": "-samples.csv", "indicators": "-indicators.csv", "metadata": ".json",
    "card": "-card.json", "markdown": ".md", "figure": ".png",
}  # fmt: skip


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
        "warnings": list(audit.warnings),
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
    files = dict(zip(TAILS, prefix.files(TAILS.values()), strict=True))  # distinct tails: no file written twice
    table, indicators = results_table(audit), indicator_table(audit)
    distances = distance_table(audit)
    labels = {r.key: {"attack": r.attack, "library": r.library, "stage": r.stage} for r in audit.rows if r.ok}
    info = metadata(audit, context, list(files.values()))
    texts = {
        "results": table.assign(git_revision=info["git_revision"]).to_csv(index=False),
        "samples": samples_table(distances, labels).to_csv(index=False),
        "indicators": indicators.to_csv(index=False),
        "metadata": json.dumps(info, indent=1, sort_keys=True, default=str) + "\n",
        "card": json.dumps(card(audit, context, list(files.values())), indent=1, allow_nan=False) + "\n",
        "markdown": markdown_card(audit, context, indicators, table),
    }
    paths = [atomic_write_text(files[key], text) for key, text in texts.items()]
    paths.append(save_figure(audit, files["figure"]))
    log.info("wrote %s", ", ".join(str(p) for p in paths))
    return paths

"""``compare``'s outputs: the printed table, the default output names, and the files a run writes.

Files (``out`` is a prefix, see :class:`~bridge.io.OutputPrefix`): ``<out>.csv/-timing.csv/.md/.json/.png``
(:func:`write_table`, :func:`save_figure`), the per-sample distances ``<out>-samples.csv`` for untargeted runs, and
for minimal-norm attacks ``<out>-eps.csv/.md``, ``<out>-robust.png``, ``<out>-norms.png`` (:func:`write_compare`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from torch import Tensor

from advbridge.bridge.io import OutputPrefix, atomic_write, atomic_write_text
from advbridge.bridge.provenance import provenance
from advbridge.bridge.runner import AttackResult, Ran
from advbridge.bridge.spec import AttackSpec
from advbridge.experiments.audit.optimality import samples_table
from advbridge.experiments.compare_table import COLUMNS, sample_distances
from advbridge.experiments.minimal import MINIMAL_FIGURE_TAILS, save_minimal_figures

log = logging.getLogger("advbridge.experiments.compare")  # the command's logger, as before the split

#: Columns that change from run to run (wall-clock time): kept out of ``<out>.csv`` so that the same
#: seed gives the same CSV, and written to ``<out>-timing.csv`` instead.
TIMING_COLUMNS = ["seconds", "images_per_s"]


#: Every file a ``compare`` run writes, as tails of its output prefix (distinct, so none overwrites another).
TABLE_TAILS = {"results": ".csv", "timing": "-timing.csv", "markdown": ".md", "metadata": ".json"}
#: The per-sample distances behind the ``optimality`` column (untargeted runs).
SAMPLES_TAIL = "-samples.csv"
FIGURE_TAIL = ".png"
EPS_TAILS = {"eps_csv": "-eps.csv", "eps_markdown": "-eps.md"}
OUTPUT_TAILS = (*TABLE_TAILS.values(), SAMPLES_TAIL, FIGURE_TAIL, *EPS_TAILS.values(), *MINIMAL_FIGURE_TAILS)
PROGRESS_TAIL = ".progress"


def write_table(
    table: pd.DataFrame, out: str | Path | OutputPrefix, metadata: dict[str, Any] | None = None
) -> list[Path]:
    """Write the results atomically; returns the paths.

    ``<out>.csv``: every column but the timing ones, plus ``git_revision`` (identical for the same
    seed on CPU); ``<out>-timing.csv``: library and timing; ``<out>.md``: the whole table under a
    header with the provenance; ``<out>.json``: ``metadata`` and the provenance.
    """
    prefix = OutputPrefix.of(out)
    info = {**(metadata or {}), **provenance()}
    results = table.drop(columns=TIMING_COLUMNS).assign(git_revision=info["git_revision"])
    timing = table[["library", *TIMING_COLUMNS]]
    texts = {
        "results": results.to_csv(index=False),
        "timing": timing.to_csv(index=False),
        "markdown": _markdown_header(info) + format_table(table, markdown=True) + "\n",
        "metadata": json.dumps(info, indent=1, sort_keys=True, default=str) + "\n",
    }
    return [atomic_write_text(prefix.file(TABLE_TAILS[key]), text) for key, text in texts.items()]


def _markdown_header(info: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    extra = ", ".join(f"{k} {v}" for k, v in info.items() if k not in ("versions", "git_revision", "spec"))
    return f"advbridge {info['git_revision']}; {extra}\n\n{versions}\n\n"


#: What :func:`format_table` shows by default: the per-library columns and the raised flags' names.
SHOWN_COLUMNS = [*COLUMNS[:-1], "flags", "reason"]


def format_table(
    table: pd.DataFrame,
    columns: Sequence[str] = SHOWN_COLUMNS,
    *,
    markdown: bool = False,
    drop_empty: bool = False,
    reason_width: int = 70,
) -> str:
    """Human-readable table: ``columns`` only (default: the per-library ones), numbers rounded, reasons cut
    to ``reason_width`` characters; ``drop_empty`` leaves out columns with no value in any row."""
    shown = table[[c for c in columns if c in table.columns]].copy()
    if drop_empty:
        shown = shown.dropna(axis=1, how="all")
    if "reason" in shown:
        shown["reason"] = shown["reason"].fillna("").astype(str).str.slice(0, reason_width)
    if markdown:
        return shown.to_markdown(index=False, floatfmt=".4g")
    with pd.option_context("display.max_columns", None, "display.width", 250, "display.max_colwidth", reason_width):
        return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def save_figure(results: Sequence[AttackResult], x: Tensor, out: str | Path | OutputPrefix, n_images: int = 4) -> Path:
    """PNG: clean images, then each library's adversarial image and amplified perturbation.

    Under each clean image its predicted class; under each adversarial image the predicted
    class, clean → adversarial (``3→5``, ✓ where the attack succeeded), and the perturbation's L2 and L∞
    norms; the perturbation row says how much it was amplified.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prefix = OutputPrefix.of(out)
    ok = [r for r in results if isinstance(r, Ran)]
    k = min(n_images, len(x))
    fig, axes = plt.subplots(1 + 2 * len(ok), k, figsize=(1.9 * k, 1.9 * (1 + 2 * len(ok))), squeeze=False)

    def show(ax, img: Tensor, title: str, label: str = "") -> None:
        img = img.detach().cpu()
        ax.imshow(img[0] if img.shape[0] == 1 else img.permute(1, 2, 0), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=7)
        ax.set_xlabel(label, fontsize=7)

    clean_pred = ok[0].clean_pred if ok else None
    for j in range(k):
        show(axes[0, j], x[j], "clean", f"pred {int(clean_pred[j])}" if clean_pred is not None else "")
        for i, t in enumerate(ok):
            delta = t.x_adv[j] - x[j]
            scale = float(delta.abs().max()) or 1.0
            label = f"L2 {float(delta.norm()):.3g}  L∞ {float(delta.abs().max()):.3g}"
            mark = " ✓" if bool(t.success[j] & t.clean_correct[j]) else ""
            label = f"{int(t.clean_pred[j])}→{int(t.adv_pred[j])}{mark}\n{label}"
            show(axes[1 + 2 * i, j], t.x_adv[j], f"{t.library} adv", label)
            show(axes[2 + 2 * i, j], 0.5 + delta / (2 * scale), f"{t.library} δ (×{0.5 / scale:.0f})")
    fig.tight_layout()
    path = prefix.file(FIGURE_TAIL)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path


def default_out(dataset: str, spec: AttackSpec) -> str:
    """The output prefix when none is given: one per dataset, attack and threat model, so that runs of
    other attacks do not replace each other's results (``results/compare-mnist-5k-pgd-Linf``)."""
    return results_prefix(f"compare-{dataset}-{spec.attack}-{spec.norm.value}{'-targeted' if spec.targeted else ''}")


def results_prefix(name: str) -> str:
    """``results/<name>`` with every character a file name should not hold replaced by ``_``."""
    return str(Path("results") / re.sub(r"[^A-Za-z0-9._-]+", "_", name))


def write_compare(
    prefix: OutputPrefix,
    table: pd.DataFrame,
    grid: pd.DataFrame | None,
    results: Sequence[AttackResult],
    x: Tensor,
    eps_grid: Sequence[float] | None,
    metadata: dict[str, Any],
) -> list[Path]:
    """Write one ``compare`` run's files under ``prefix`` (see :func:`~advbridge.experiments.compare.run_compare`);
    returns their paths."""
    minimal = grid is not None and not grid.empty
    ok = [r for r in results if isinstance(r, Ran)]
    samples = bool(ok) and not ok[0].spec.targeted
    tails = [*TABLE_TAILS.values(), *((SAMPLES_TAIL,) if samples else ()), FIGURE_TAIL,
             *((*EPS_TAILS.values(), *MINIMAL_FIGURE_TAILS) if minimal else ())]  # fmt: skip
    metadata = {**metadata, "files": [p.name for p in prefix.files(tails)]}  # what belongs to this run
    paths = write_table(table, prefix, metadata)
    if samples:
        labels = {r.library: {"attack": r.spec.attack, "library": r.library} for r in ok}
        text = samples_table(sample_distances(ok), labels).to_csv(index=False)
        paths.append(atomic_write_text(prefix.file(SAMPLES_TAIL), text))
    paths.append(save_figure(results, x.cpu(), prefix))
    if minimal:
        assert grid is not None and eps_grid is not None
        paths.append(atomic_write_text(prefix.file(EPS_TAILS["eps_csv"]), grid.to_csv()))
        paths.append(atomic_write_text(prefix.file(EPS_TAILS["eps_markdown"]), grid.to_markdown(floatfmt=".4g") + "\n"))
        paths += save_minimal_figures(results, eps_grid, prefix)
    others = [p for p in prefix.files(OUTPUT_TAILS) if p not in paths and p.is_file()]
    if others:  # never deleted: another run's prefix may name them (the table of --out x-eps is x-eps.csv)
        log.warning("not from this run, left as they were: %s", ", ".join(str(p) for p in others))
    log.info("wrote %s", ", ".join(str(p) for p in paths))
    return paths

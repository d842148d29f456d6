"""``compare``: the same spec, images and model through every library, in one table.

One row per library. Success is recomputed by the runner on the same model; norms are over the
samples that were correctly classified and that the attack fooled; agreement is measured against
the ``own`` row (``max_abs_diff_vs_own`` over all pixels, ``success_agreement_vs_own`` over samples).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from torch import Tensor, nn

from bridge.adapters import LIBRARIES
from bridge.errors import check_name
from bridge.io import atomic_write, atomic_write_text
from bridge.runner import AttackResult, run_attack
from bridge.spec import AttackSpec

log = logging.getLogger(__name__)

COLUMNS = [
    "library",
    "version",
    "status",
    "n",
    "clean_acc",
    "success_rate",
    "robust_acc",
    "median_l2",
    "mean_l2",
    "median_linf",
    "mean_linf",
    "seconds",
    "images_per_s",
    "forward_per_image",
    "backward_per_image",
    "max_abs_diff_vs_own",
    "success_agreement_vs_own",
    "reason",
]


def parse_libraries(text: str | Sequence[str] | None) -> list[str]:
    """``"own,art"`` or a list → validated library names (``None``/``"all"`` = every library)."""
    if text is None or text == "all":
        return list(LIBRARIES)
    names = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    names = [check_name("library", name, LIBRARIES) for name in names if name]
    if "own" not in names:
        names.insert(0, "own")  # agreement is measured against our own attack
    return names


def compare_libraries(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec,
    libraries: Sequence[str],
    *,
    num_classes: int | None = None,
) -> list[AttackResult]:
    """Run ``spec`` on ``(x, y)`` with each library (``y`` = targets when ``spec.targeted``)."""
    results = []
    for name in libraries:
        log.info("running %s with %s on %d images", spec.attack, name, len(x))
        results.append(run_attack(name, model, x, y, spec, num_classes=num_classes))
    return results


def _median(values: Tensor) -> float:
    return float(values.median()) if len(values) else math.nan


def _mean(values: Tensor) -> float:
    return float(values.mean()) if len(values) else math.nan


def result_row(result: AttackResult, reference: AttackResult | None) -> dict:
    """One table row for ``result``; agreement columns compare with ``reference`` (the own row)."""
    row = dict.fromkeys(COLUMNS, math.nan)
    row.update(library=result.library, version=result.version, status=result.status, reason=result.reason, n=result.n)
    if result.success is None:
        return row
    correct, success = result.clean_correct, result.success
    fooled = correct & success
    row.update(
        clean_acc=float(correct.float().mean()),
        success_rate=float(fooled.sum() / correct.sum()) if correct.any() else math.nan,
        robust_acc=math.nan if result.spec.targeted else float((correct & ~success).float().mean()),
        median_l2=_median(result.l2[fooled]),
        mean_l2=_mean(result.l2[fooled]),
        median_linf=_median(result.linf[fooled]),
        mean_linf=_mean(result.linf[fooled]),
        seconds=result.seconds,
        images_per_s=result.n / result.seconds if result.seconds > 0 else math.nan,
        forward_per_image=result.forward_images / result.n,
        backward_per_image=result.backward_images / result.n,
    )
    if reference is not None and reference.x_adv is not None and result.x_adv is not None:
        row["max_abs_diff_vs_own"] = float((result.x_adv - reference.x_adv).abs().max())
        row["success_agreement_vs_own"] = float((result.success == reference.success).float().mean())
    return row


def summary_table(results: Sequence[AttackResult], context: dict | None = None) -> pd.DataFrame:
    """The comparison table: one row per library, tidy columns for the spec and ``context``."""
    reference = next((r for r in results if r.library == "own" and r.x_adv is not None), None)
    rows = [result_row(r, reference) for r in results]
    table = pd.DataFrame(rows, columns=COLUMNS)
    if results:
        spec = results[0].spec.to_dict()
        tidy = {**(context or {}), **{k: spec[k] for k in ("attack", "norm", "eps", "steps", "targeted", "seed")}}
        for i, (key, value) in enumerate(tidy.items()):
            table.insert(i, key, value)
    return table


def write_table(table: pd.DataFrame, out: str | Path) -> list[Path]:
    """Write ``<out>.csv`` and ``<out>.md`` atomically; returns the paths."""
    out = Path(out)
    csv_path, md_path = out.with_suffix(".csv"), out.with_suffix(".md")
    atomic_write_text(csv_path, table.to_csv(index=False))
    atomic_write_text(md_path, format_table(table, markdown=True) + "\n")
    return [csv_path, md_path]


def format_table(table: pd.DataFrame, *, markdown: bool = False) -> str:
    """Human-readable table: the per-library columns only, numbers rounded."""
    shown = table[[c for c in COLUMNS if c in table.columns]].copy()
    shown["reason"] = shown["reason"].fillna("").astype(str).str.slice(0, 70)
    if markdown:
        return shown.to_markdown(index=False, floatfmt=".4g")
    with pd.option_context("display.max_columns", None, "display.width", 250, "display.max_colwidth", 70):
        return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def save_figure(results: Sequence[AttackResult], x: Tensor, out: str | Path, n_images: int = 4) -> Path:
    """PNG: clean images, then each library's adversarial image and amplified perturbation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if r.x_adv is not None]
    k = min(n_images, len(x))
    fig, axes = plt.subplots(1 + 2 * len(ok), k, figsize=(1.6 * k, 1.6 * (1 + 2 * len(ok))), squeeze=False)

    def show(ax, img: Tensor, title: str) -> None:
        img = img.detach().cpu()
        ax.imshow(img[0] if img.shape[0] == 1 else img.permute(1, 2, 0), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=7)

    for j in range(k):
        show(axes[0, j], x[j], "clean")
        for i, r in enumerate(ok):
            delta = r.x_adv[j] - x[j]
            scale = float(delta.abs().max()) or 1.0
            show(axes[1 + 2 * i, j], r.x_adv[j], f"{r.library} adv")
            show(axes[2 + 2 * i, j], 0.5 + delta / (2 * scale), f"{r.library} δ (×{0.5 / scale:.0f})")
    fig.tight_layout()
    path = Path(out).with_suffix(".png")
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path


def targets_for(y: Tensor, num_classes: int) -> Tensor:
    """The targets used for targeted runs: the next class, ``(y + 1) mod K`` (never the true label)."""
    return (y + 1) % num_classes


def run_compare(
    spec: AttackSpec,
    libraries: Sequence[str],
    workload,
    *,
    out: str | Path | None = None,
) -> pd.DataFrame:
    """Run :func:`compare_libraries` on a :class:`~experiments.workload.Workload`, write CSV/MD/PNG to ``out``."""
    num_classes = workload.info.num_classes
    y = targets_for(workload.y, num_classes) if spec.targeted else workload.y
    results = compare_libraries(workload.model, workload.x, y, spec, libraries, num_classes=num_classes)
    table = summary_table(results, context=workload.context)
    if out is not None:
        paths = write_table(table, out) + [save_figure(results, workload.x, out)]
        log.info("wrote %s", ", ".join(str(p) for p in paths))
    return table

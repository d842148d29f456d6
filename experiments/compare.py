"""``compare``: the same spec, images and model through every library, in one table.

One row per library. Success is recomputed by the runner on the same model; norms are over the
samples that were correctly classified and that the attack fooled; agreement is measured against
the ``own`` row (``max_abs_diff_vs_own`` over all pixels, ``success_agreement_vs_own`` over samples).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from advbridge.bridge import distributed
from advbridge.bridge.adapters import LIBRARIES
from advbridge.bridge.errors import check_names
from advbridge.bridge.io import OutputPrefix, atomic_write, atomic_write_text
from advbridge.bridge.provenance import provenance
from advbridge.bridge.runner import AttackResult, run_attack, warm_up
from advbridge.bridge.spec import AttackSpec
from advbridge.experiments.audit.optimality import optimality_table, samples_table
from advbridge.experiments.flags import add_compare_flags
from advbridge.experiments.minimal import (
    MINIMAL_FIGURE_TAILS,
    WORST_CASE,
    eps_grid_table,
    library_envelope,
    norms_of,
    save_minimal_figures,
)
from advbridge.experiments.progress import ProgressStore, merge_results
from advbridge.experiments.sharding import attack_slices, batch_seeds

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
    "best_count",
    "optimality",
    "reason",
]


def parse_libraries(text: str | Sequence[str] | None) -> list[str]:
    """``"own,art"`` or a list → validated library names (``None``/``"all"`` = every library)."""
    if text is None or text == "all":
        return list(LIBRARIES)
    names = check_names("library", text, LIBRARIES)
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
    batch_size: int | None = None,
    progress: ProgressStore | None = None,
    show_progress: bool = False,
) -> list[AttackResult]:
    """Run ``spec`` on ``(x, y)`` with each library (``y`` = targets when ``spec.targeted``).

    Images go through in batches of ``batch_size`` (all at once when ``None``); batch ``b`` is seeded
    with :func:`~experiments.progress.batch_seed` ``(spec.seed, b)`` for every library, so random
    starts match across libraries. With a ``progress`` store, each finished (library, batch) is saved
    and saved ones are reused.
    """
    slices = attack_slices(len(x), batch_size)
    seeds = batch_seeds(spec.seed, len(slices))
    for s in slices[:1] + slices[1:][-1:]:  # the two batch shapes
        warm_up(model, x[s], y[s])
    mine = distributed.my_batches(len(slices))
    results = []
    with tqdm(total=len(libraries) * len(mine), disable=not show_progress, desc=spec.attack, unit="batch") as bar:
        for name in libraries:
            parts = {}
            for b in mine:
                part = progress.load(name, b, spec) if progress is not None else None
                if part is None:
                    xb, yb = x[slices[b]], y[slices[b]]
                    log.debug("running %s with %s on batch %d (%d images)", spec.attack, name, b, len(xb))
                    part = run_attack(name, model, xb, yb, spec, num_classes=num_classes, seed=seeds[b])
                    if progress is not None:
                        progress.save(b, part)
                parts[b] = part
                bar.update()
                if part.status == "unsupported":  # the library lacks the spec: every batch would say so
                    bar.update(len(mine) - len(parts))
                    break
            # every rank's batches, in order; a library unsupported for the spec stops after its first batch
            merged = distributed.gather_batches(parts)
            results.append(merge_results([merged[b] for b in sorted(merged)]))
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


def worst_case_row(ok: Sequence[AttackResult], best: Tensor) -> dict:
    """The per-sample best ``best`` over the libraries that ran (``ok``), as a table row."""
    correct = ok[0].clean_correct
    broken = torch.isfinite(best)
    row = dict.fromkeys(COLUMNS, math.nan)
    column = "linf" if ok[0].spec.norm.value == "Linf" else "l2"
    row.update(
        library=WORST_CASE,
        version="",
        status="ok",
        n=len(best),
        clean_acc=float(correct.float().mean()),
        success_rate=float(broken.sum() / correct.sum()) if correct.any() else math.nan,
        robust_acc=float((correct & ~broken).float().mean()),
        reason="per sample, the smallest over libraries",
        **{f"median_{column}": _median(best[broken]), f"mean_{column}": _mean(best[broken])},
    )
    return row


def sample_distances(results: Sequence[AttackResult]) -> pd.DataFrame:
    """Per sample (rows) and library (columns): the norm of its adversarial example in the threat model, 0 for a
    sample misclassified before the attack, ``inf`` where it failed (AttackBench's convention)."""
    return pd.DataFrame(
        {r.library: torch.where(r.clean_correct, norms_of(r), torch.zeros(r.n)).double().numpy() for r in results}
    )


def summary_table(results: Sequence[AttackResult], context: dict | None = None) -> pd.DataFrame:
    """The comparison table: one row per library, tidy columns for the spec and ``context``.

    For minimal-norm attacks a ``worst-case`` row is added and ``best_count`` says on how many samples
    each library found the smallest perturbation (within 0.1 %).
    """
    reference = next((r for r in results if r.library == "own" and r.x_adv is not None), None)
    rows = [result_row(r, reference) for r in results]
    ok = [r for r in results if r.success is not None]
    if ok and not ok[0].spec.targeted:
        scores = optimality_table(sample_distances(ok), float(ok[0].clean_correct.double().mean()))
        for row in rows:
            row["optimality"] = scores.get(row["library"], math.nan)
    if ok and ok[0].spec.minimal:
        best, counts = library_envelope(ok)
        for row in rows:
            row["best_count"] = counts.get(row["library"], math.nan)
        rows.append(worst_case_row(ok, best))
    table = pd.DataFrame(rows, columns=COLUMNS)
    if results:
        spec = results[0].spec.to_dict()
        tidy = {**(context or {}), **{k: spec[k] for k in ("attack", "norm", "eps", "steps", "targeted", "seed")}}
        for i, (key, value) in enumerate(tidy.items()):
            table.insert(i, key, value)
    return table


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


def write_table(table: pd.DataFrame, out: str | Path | OutputPrefix, metadata: dict | None = None) -> list[Path]:
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


def _markdown_header(info: dict) -> str:
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
    ok = [r for r in results if r.x_adv is not None]
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
        for i, r in enumerate(ok):
            delta = r.x_adv[j] - x[j]
            scale = float(delta.abs().max()) or 1.0
            label = f"L2 {float(delta.norm()):.3g}  L∞ {float(delta.abs().max()):.3g}"
            if r.adv_pred is not None:
                mark = " ✓" if bool(r.success[j] & r.clean_correct[j]) else ""
                label = f"{int(r.clean_pred[j])}→{int(r.adv_pred[j])}{mark}\n{label}"
            show(axes[1 + 2 * i, j], r.x_adv[j], f"{r.library} adv", label)
            show(axes[2 + 2 * i, j], 0.5 + delta / (2 * scale), f"{r.library} δ (×{0.5 / scale:.0f})")
    fig.tight_layout()
    path = prefix.file(FIGURE_TAIL)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path


def targets_for(y: Tensor, num_classes: int) -> Tensor:
    """The targets used for targeted runs: the next class, ``(y + 1) mod K`` (never the true label)."""
    return (y + 1) % num_classes


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
    results,
    x: Tensor,
    eps_grid: Sequence[float] | None,
    metadata: dict,
) -> list[Path]:
    """Write one ``compare`` run's files under ``prefix`` (see :func:`run_compare`); returns their paths."""
    minimal = grid is not None and not grid.empty
    ok = [r for r in results if r.success is not None]
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


def run_metadata(spec: AttackSpec, libraries: Sequence[str], workload) -> dict:
    """What identifies a ``compare`` run in its JSON (and, with the batch size, its progress store)."""
    return {"spec": spec.to_dict(), **workload.context, "n": len(workload.x), "libraries": list(libraries)}


@dataclass
class CompareRun:
    """One ``compare`` computed: the per-library ``results``, the summary ``table``, for a minimal-norm attack
    robust accuracy at each eps of ``eps_grid`` (``eps_table``), and what :meth:`save` needs."""

    results: list[AttackResult]
    table: pd.DataFrame
    eps_table: pd.DataFrame | None
    eps_grid: list[float] | None
    x: Tensor
    metadata: dict

    def save(self, prefix: str | Path | OutputPrefix) -> list[Path]:
        """Write the files ``cli.py compare --out PREFIX`` writes (see :func:`run_compare`); returns their paths.
        An unwritable folder raises :class:`~advbridge.bridge.errors.OutputError` before anything is written."""
        out = OutputPrefix.writable(prefix)
        assert out is not None
        return write_compare(out, self.table, self.eps_table, self.results, self.x, self.eps_grid, self.metadata)


def compare_workload(
    spec: AttackSpec,
    libraries: Sequence[str],
    workload,
    *,
    eps_grid: Sequence[float] | None = None,
    batch_size: int | None = None,
    progress: ProgressStore | None = None,
    show_progress: bool = False,
) -> CompareRun:
    """:func:`compare_libraries` on a workload, summarized and flagged (targets drawn for a targeted attack)."""
    num_classes = workload.info.num_classes
    y = targets_for(workload.y, num_classes) if spec.targeted else workload.y
    results = compare_libraries(
        workload.model, workload.x, y, spec, libraries, num_classes=num_classes, batch_size=batch_size,
        progress=progress, show_progress=show_progress,
    )  # fmt: skip
    table = add_compare_flags(summary_table(results, context=workload.context), workload.model, workload.x,
                              workload.y, minimal=spec.minimal, card=workload.card)  # fmt: skip
    grid = eps_grid_table(results, eps_grid) if spec.minimal and eps_grid else None
    grid_list = list(eps_grid) if eps_grid is not None else None
    return CompareRun(results, table, grid, grid_list, workload.x, run_metadata(spec, libraries, workload))


def run_compare(
    spec: AttackSpec,
    libraries: Sequence[str],
    workload,
    *,
    out: str | Path | OutputPrefix | None = None,
    eps_grid: Sequence[float] | None = None,
    batch_size: int | None = None,
    resume: bool = False,
    show_progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame | None, list[Path]]:
    """Run :func:`compare_libraries` on a :class:`~experiments.workload.Workload` and write the outputs.

    Returns the summary table, for minimal-norm attacks robust accuracy at each eps of ``eps_grid`` (one
    row per library and the worst case, else ``None``), and the paths written. Files (``out`` is a
    prefix, see :class:`~bridge.io.OutputPrefix`; see :func:`write_table`):
    ``<out>.csv/-timing.csv/.md/.json/.png``, and for minimal-norm attacks ``<out>-eps.csv/.md``,
    ``<out>-robust.png``, ``<out>-norms.png``; ``<out>.json`` lists them. Files of that name that this run
    does not write (an earlier minimal-norm run's eps table, say) are left alone, with a warning. With
    ``out``, progress is saved per batch in ``<out>.progress/`` and ``resume=True`` continues a killed run.
    """
    metadata = run_metadata(spec, libraries, workload)
    prefix = None if out is None else OutputPrefix.of(out)
    store = None
    main = distributed.world().main
    if prefix is not None:
        prefix.check_writable()
        key = {**metadata, "batch_size": batch_size, "weights_sha256": workload.card.get("sha256")}
        distributed.check_same("run (spec, images, model, batch size)", key)
        with distributed.main_first():  # rank 0 makes (or checks) the folder; the others join it
            store = ProgressStore(prefix.file(PROGRESS_TAIL), key, resume=resume or not main)
    run = compare_workload(
        spec, libraries, workload, eps_grid=eps_grid, batch_size=batch_size, progress=store,
        show_progress=show_progress,
    )  # fmt: skip
    table, grid = run.table, run.eps_table
    paths: list[Path] = []
    if prefix is not None:
        distributed.barrier()  # every rank's parts are in: the folder can go
        if not main:
            return table, grid, paths
        paths = run.save(prefix)
        store.finish()
    return table, grid, paths

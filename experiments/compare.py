"""``compare``: the same spec, images and model through every library, in one table.

One row per library (:mod:`~advbridge.experiments.compare_table`: success recomputed by the runner on the same
model, norms over the samples correctly classified and fooled, agreement with the ``own`` row); the printed
table, default output names and files in :mod:`~advbridge.experiments.compare_report`, whose public names are
importable from here too. This module runs the libraries (per batch, resumable) and writes a run's outputs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from torch import Tensor, nn
from tqdm.auto import tqdm

from advbridge.bridge import distributed
from advbridge.bridge.adapters import LIBRARIES
from advbridge.bridge.errors import check_names
from advbridge.bridge.io import OutputPrefix
from advbridge.bridge.runner import AttackResult, warm_up
from advbridge.bridge.spec import AttackSpec
from advbridge.experiments.compare_report import (
    EPS_TAILS,
    FIGURE_TAIL,
    OUTPUT_TAILS,
    PROGRESS_TAIL,
    SAMPLES_TAIL,
    SHOWN_COLUMNS,
    TABLE_TAILS,
    TIMING_COLUMNS,
    default_out,
    format_table,
    results_prefix,
    save_figure,
    write_compare,
    write_table,
)
from advbridge.experiments.compare_table import COLUMNS, result_row, sample_distances, summary_table, worst_case_row
from advbridge.experiments.core.executor import attack_slices, run_library
from advbridge.experiments.flags import add_compare_flags
from advbridge.experiments.minimal import eps_grid_table
from advbridge.experiments.progress import ProgressStore

if TYPE_CHECKING:
    from advbridge.experiments.workload import Workload

__all__ = [
    "COLUMNS",
    "EPS_TAILS",
    "FIGURE_TAIL",
    "OUTPUT_TAILS",
    "PROGRESS_TAIL",
    "SAMPLES_TAIL",
    "SHOWN_COLUMNS",
    "TABLE_TAILS",
    "TIMING_COLUMNS",
    "CompareRun",
    "compare_libraries",
    "compare_workload",
    "default_out",
    "format_table",
    "parse_libraries",
    "result_row",
    "results_prefix",
    "run_compare",
    "run_metadata",
    "sample_distances",
    "save_figure",
    "summary_table",
    "targets_for",
    "worst_case_row",
    "write_compare",
    "write_table",
]

log = logging.getLogger(__name__)


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

    Each library's row runs through the executor (:func:`~experiments.core.executor.run_library`).
    Images go through in batches of ``batch_size`` (all at once when ``None``); batch ``b`` is seeded
    with :func:`~experiments.progress.batch_seed` ``(spec.seed, b)`` for every library, so random
    starts match across libraries. With a ``progress`` store, each finished (library, batch) is saved
    and saved ones are reused.
    """
    slices = attack_slices(len(x), batch_size)
    for s in slices[:1] + slices[1:][-1:]:  # the two batch shapes
        warm_up(model, x[s], y[s])
    mine = distributed.my_batches(len(slices))
    with tqdm(total=len(libraries) * len(mine), disable=not show_progress, desc=spec.attack, unit="batch") as bar:
        return [
            run_library(
                name, model, x, y, spec, num_classes=num_classes, batch_size=batch_size, progress=progress, bar=bar
            )  # fmt: skip
            for name in libraries
        ]


def targets_for(y: Tensor, num_classes: int) -> Tensor:
    """The targets used for targeted runs: the next class, ``(y + 1) mod K`` (never the true label)."""
    return (y + 1) % num_classes


def run_metadata(spec: AttackSpec, libraries: Sequence[str], workload: Workload) -> dict[str, Any]:
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
    metadata: dict[str, Any]

    def save(self, prefix: str | Path | OutputPrefix) -> list[Path]:
        """Write the files ``cli.py compare --out PREFIX`` writes (see :func:`run_compare`); returns their paths.
        An unwritable folder raises :class:`~advbridge.bridge.errors.OutputError` before anything is written."""
        out = OutputPrefix.writable(prefix)
        assert out is not None
        return write_compare(out, self.table, self.eps_table, self.results, self.x, self.eps_grid, self.metadata)


def compare_workload(
    spec: AttackSpec,
    libraries: Sequence[str],
    workload: Workload,
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
    workload: Workload,
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
    prefix, see :class:`~bridge.io.OutputPrefix`; see :func:`~advbridge.experiments.compare_report.write_table`):
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
        if store is not None:  # made with the prefix
            store.finish()
    return table, grid, paths

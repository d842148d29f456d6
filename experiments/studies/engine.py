"""A study: the cells of a published table, each one ``defend`` evaluation, run to one folder and resumable.

A study (:mod:`experiments.studies.catalog`) is a list of :class:`StudyCell`: one (defense, attack) cell of the study's
own table. Running a cell runs a ``defend`` evaluation (squeezers, training-time or generative defenses, the
same engine as ``cli.py defend``), which writes its own files under ``<out>/cells/<name>``; a ``.done`` marker
written last says the cell is finished. ``--resume`` skips finished cells (nothing finished is recomputed) if
the study's key (``<out>/study.json``: the study and its budget) is the one saved; without it the study starts
over. The report is then built from the files on disk only, so that a resumed study and an uninterrupted one
write the same report (:mod:`experiments.studies.report`).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from advbridge.bridge import distributed
from advbridge.bridge.errors import AdvBridgeError, CheckpointError
from advbridge.bridge.io import OutputPrefix, atomic_write_text, read_json
from advbridge.bridge.spec import AttackSpec
from advbridge.experiments.workload import Workload

log = logging.getLogger(__name__)

#: Row label (study defense) of a result row: ``label(row) -> str`` (``""`` drops the row).
Labeller = Callable[[pd.Series], str]


@dataclass(frozen=True)
class StudyCell:
    """One cell of a study's table.

    Args:
        name: file-safe and unique in the study: its files are ``<out>/cells/<name>*``.
        attack: the study table's column (``"FGSM"``).
        run: ``run(prefix)`` runs the evaluation, writing its files at ``prefix``, and returns its table.
        label: the study table's row of each result row (the undefended twin's rows are ``"none"``...).
        system: ``system()`` the cell's defended system as ``cli.py audit --study`` audits it (its models taken
            from the cache the cell's run filled, or trained as the run would train them).
    """

    name: str
    attack: str
    run: Callable[[OutputPrefix], pd.DataFrame]
    label: Labeller
    system: Callable[[], CellSystem] | None = None


@dataclass(frozen=True)
class CellSystem:
    """A study cell's defended system: the module attacked, its undefended twin (the audit's surrogate), the cell's
    images and classifier, the cell's attack (its threat model) and what the card calls the system."""

    system: nn.Module
    surrogate: nn.Module | None
    workload: Workload
    attack: AttackSpec
    label: str


@dataclass
class Study:
    """A study: its cells, what identifies its budget (the resume key), and how to report it."""

    name: str
    title: str
    cells: list[StudyCell]
    key: dict[str, Any]
    defenses: list[str]  # the study table's rows, in order
    attacks: list[str]  # its columns, in order
    published: dict[tuple[str, str], float] = field(default_factory=dict)  # (defense, attack) -> accuracy %
    published_clean: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the report says of data, models and budget
    cards: Callable[[], dict[str, dict]] = dict  # the study's own trained models (beyond the cells' cards)


def cell_prefix(out: Path, cell: StudyCell) -> OutputPrefix:
    return OutputPrefix(out / "cells" / cell.name)


def done_marker(out: Path, cell: StudyCell) -> Path:
    return out / "cells" / f"{cell.name}.done"


def prepare(study: Study, out: Path, *, resume: bool) -> Callable[[], None] | None:
    """Check or write ``<out>/study.json``; without ``resume`` start over: earlier cells are set aside.

    Returns, for a fresh start, ``undo()``: it puts the folder back as it was (the earlier study's key and
    cells, or no folder at all), for a study refused before its first cell finished; ``None`` on resume.
    Once a cell finishes, :func:`forget_previous` drops what was set aside.
    """
    key_file = out / "study.json"
    key = json.loads(json.dumps({"study": study.name, **study.key}, sort_keys=True, default=str))
    if resume and key_file.exists():
        saved = read_json(key_file, "the study's key", "run without --resume to start over")
        if not isinstance(saved, dict):
            saved = {"(not a mapping)": saved}
        if saved != key:
            changed = sorted(k for k in set(saved) | set(key) if saved.get(k) != key.get(k))
            raise CheckpointError(
                f"cannot resume the study in {out}: it was started with other settings ({', '.join(changed)}); "
                "run without --resume to start over"
            )
        return None
    existed, top = out.exists(), out  # top: the outermost folder this call creates
    while not top.parent.exists():
        top = top.parent
    previous = out / PREVIOUS
    shutil.rmtree(previous, ignore_errors=True)
    for name in ("cells", "study.json"):
        if (out / name).exists():
            previous.mkdir(parents=True, exist_ok=True)
            (out / name).rename(previous / name)
    (out / "cells").mkdir(parents=True)
    atomic_write_text(key_file, json.dumps(key, sort_keys=True, indent=1) + "\n")

    def undo() -> None:
        if not existed:
            shutil.rmtree(top, ignore_errors=True)
            return
        shutil.rmtree(out / "cells", ignore_errors=True)
        key_file.unlink(missing_ok=True)
        if previous.exists():
            for item in previous.iterdir():
                item.rename(out / item.name)
            previous.rmdir()

    return undo


#: Where a fresh start sets the earlier study's cells aside until its own first cell finishes.
PREVIOUS = ".previous"


def forget_previous(out: Path) -> None:
    shutil.rmtree(out / PREVIOUS, ignore_errors=True)


def run_study(
    study: Study, out: str | Path, *, resume: bool = False, only: Sequence[str] | None = None
) -> tuple[list[str], list[str]]:
    """Run every unfinished cell of ``study`` into ``out``; returns (cells run now, cells taken as finished).

    ``only``: run just these cells (by name), e.g. to split a study over machines; the report covers what
    is finished. A study refused (an :class:`~advbridge.bridge.errors.AdvBridgeError`: missing data, a bad
    option) before its first cell finished leaves ``out`` as it found it.
    """
    out = Path(out)
    OutputPrefix(out / "study").check_writable()
    main = distributed.world().main
    undo = prepare(study, out, resume=resume) if main else None
    distributed.barrier()
    ran, skipped = [], []
    try:
        for cell in study.cells:
            if only is not None and cell.name not in only:
                continue
            if done_marker(out, cell).exists():
                log.info("study %s: cell %s is finished, not recomputed", study.name, cell.name)
                skipped.append(cell.name)
                continue
            log.info("study %s: running cell %s", study.name, cell.name)
            cell.run(cell_prefix(out, cell))
            if main:
                atomic_write_text(done_marker(out, cell), "finished\n")
                forget_previous(out)
            distributed.barrier()
            ran.append(cell.name)
    except AdvBridgeError:
        if undo is not None and not ran:
            undo()
        raise
    return ran, skipped


def load_cell(out: Path, cell: StudyCell) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """A finished cell's results (with the study's row and column labels), eps curve (maybe empty), metadata."""
    prefix = cell_prefix(out, cell)
    table = pd.read_csv(prefix.file(".csv"))
    table.insert(0, "study_attack", cell.attack)
    table.insert(0, "study_defense", [cell.label(row) for _, row in table.iterrows()])
    table.insert(0, "cell", cell.name)
    eps_file = prefix.file("-eps.csv")
    curve = pd.read_csv(eps_file) if eps_file.exists() else pd.DataFrame()
    if len(curve):
        curve.insert(0, "study_attack", cell.attack)
        curve.insert(0, "study_defense", [cell.label(row) for _, row in curve.iterrows()])
        curve.insert(0, "cell", cell.name)
    meta = json.loads(prefix.file(".json").read_text())
    return table[table["study_defense"] != ""], curve, meta

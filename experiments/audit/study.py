"""``cli.py audit --study NAME --cell CELL``: audit one cell's defended system of one of the three studies.

The study (:mod:`~advbridge.experiments.studies.catalog`) is built with the budget its folder's ``study.json``
saved (``--study-dir``, default ``results/study-NAME``; the study's defaults when there is none), so the cell's
models are the very ones ``cli.py study NAME`` trained and cached (trained now, the same way, when the cache
has none). The audited system is the cell's (:class:`~advbridge.experiments.studies.engine.CellSystem`): the
adversarially trained or distilled model, the squeezer in front of its classifier, the squeezing detector beside
it, the purifier or labeller around it; its undefended classifier is the surrogate. The images are the first
``--n`` of the cell's own; the threat model is the cell's attack's (a minimal-norm attack's cell: its norm at the
dataset's standard budget), ``--eps`` overrides the budget. The card is written beside the study's table, under
``<study-dir>/audits/<cell>`` (``--out`` elsewhere), and the study's report lists it.
"""

from __future__ import annotations

import math
from pathlib import Path

from advbridge.bridge.errors import InvalidParameterError, check_name
from advbridge.bridge.io import OutputPrefix, read_json
from advbridge.experiments.requests import AuditRequest, Outcome

#: The audit options that name another audited system: refused beside ``--study``.
OTHER_SYSTEMS = ("defense", "defense_module", "surrogate", "checkpoint", "model", "logits")


def study_dir(request: AuditRequest) -> Path:
    from advbridge.experiments.compare_report import results_prefix

    return Path(request.study_dir or results_prefix(f"study-{request.study}"))


def study_options(request: AuditRequest, folder: Path):
    """The study's options: the budget, libraries and backbone its ``study.json`` saved, else its defaults."""
    from advbridge.experiments.studies.common import StudyOptions

    key_file = folder / "study.json"
    if not key_file.is_file():
        return StudyOptions(data_root=request.data_root, progress=not request.quiet)
    key = read_json(key_file, "the study's key", f"run cli.py study {request.study} first, or give --study-dir")
    if not isinstance(key, dict) or key.get("study") != request.study:
        found = key.get("study") if isinstance(key, dict) else key
        raise InvalidParameterError(f"expected the folder of study {request.study} in --study-dir, got {folder} "
                                    f"(its study.json is study {found!r})")  # fmt: skip
    return StudyOptions(
        data_root=request.data_root, budget=dict(key.get("budget") or {}), progress=not request.quiet,
        libraries=tuple(key["libraries"]) if key.get("libraries") else None, model=key.get("model"),
        dataset=key.get("dataset"),
    )  # fmt: skip


def cli_study_audit(request: AuditRequest) -> Outcome:
    """Audit the cell ``request.cell`` of study ``request.study`` (module docstring); every option checked first."""
    from advbridge.bridge.spec import Norm, parse_eps, standard_eps
    from advbridge.experiments.audit.command import parse_budget, printed, request_config, run
    from advbridge.experiments.compare import parse_libraries
    from advbridge.experiments.studies.budgets import STUDIES
    from advbridge.experiments.studies.catalog import build_study

    given = [f"--{name.replace('_', '-')}" for name in OTHER_SYSTEMS if getattr(request, name) is not None]
    if given:
        raise InvalidParameterError(f"expected --study with --cell only (the cell names its system), got {', '.join(given)}")  # fmt: skip
    assert request.study is not None
    check_name("study", request.study, STUDIES)
    if request.cell is None:
        raise InvalidParameterError(f"expected --cell with --study {request.study}")
    folder = study_dir(request)
    study = build_study(request.study, study_options(request, folder))
    cells = {c.name: c for c in study.cells}
    cell = cells[check_name(f"cell of {study.name}", request.cell, cells)]
    if cell.system is None:
        raise InvalidParameterError(f"expected a cell with a defended system, got {cell.name}")
    libraries = parse_libraries(request.libraries)
    eps_given = None if request.eps is None else parse_eps(request.eps)
    parse_budget(request.budget)  # refused now, before any model is built
    out = OutputPrefix.parse(request.out or str(folder / "audits" / cell.name), default_name="audit")
    out.check_writable()
    target = cell.system()
    workload = target.workload
    norm = Norm.parse(target.attack.norm)
    eps = target.attack.eps if eps_given is None else eps_given
    if eps is None or not math.isfinite(eps):
        eps = standard_eps(workload.info.family, norm)
    config = request_config(request, norm.value, eps, libraries)
    x, y = workload.x[: request.n], workload.y[: request.n]
    model_name = workload.card.get("model")
    context = {"model": model_name, "dataset": workload.info.name, "audited": f"{study.name}/{cell.name}",
               "system": f"{target.label} (study {study.name}, cell {cell.name})",
               "surrogate": model_name if target.surrogate is not None else None, "data_seed": 0,
               "study": study.name, "cell": cell.name}  # fmt: skip
    result = run(
        target.system, x, y, config, num_classes=workload.info.num_classes, surrogate=target.surrogate,
        context=context, out=out, show_progress=not request.quiet,
    )  # fmt: skip
    outcome = printed(result, config, len(x), workload.info.name)
    if (folder / "study.json").is_file():  # the study's report lists its audits: written again with this one
        from advbridge.experiments.studies.report import write_report

        outcome.paths.extend(write_report(study, folder))
    return outcome

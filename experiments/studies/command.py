"""``cli.py study NAME``: run one of the three studies (:mod:`experiments.studies.catalog`) and write its report."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from advbridge.experiments.requests import StudyRequest

#: Budget entries a flag may set (``--n`` sets ``n``...), see :data:`experiments.studies.catalog.BUDGETS`.
BUDGET_FLAGS = ("n", "max_train", "epochs", "cifar_max_train", "cifar_epochs", "defense_epochs", "gen_epochs",
                "gen_max_train", "restarts", "steps", "n_calibration")  # fmt: skip


def add_parser(sub) -> argparse.ArgumentParser:
    from advbridge.experiments.studies.budgets import BUDGETS, STUDIES

    budgets = "; ".join(f"{k}: " + ", ".join(f"{e}={v}" for e, v in b.items()) for k, b in BUDGETS.items())
    p = sub.add_parser(
        "study",
        help="reproduce one of the three studies, then break it: transfer / adaptive / worst case, with flags",
        description=f"Studies: {', '.join(STUDIES)}. Default budgets (≤ 30 min on a 2-core CPU): {budgets}.",
    )
    p.add_argument("name", help=", ".join(STUDIES))
    p.add_argument("--data-root", default=None, help="folder with the dataset files (default: $ADVBRIDGE_DATA)")
    p.add_argument("--out", default=None, help="the study's folder (default: results/study-<name>)")
    p.add_argument("--resume", action="store_true", help="continue a killed study: finished cells are not rerun")
    p.add_argument("--only", default=None, help="comma-separated cell names to run (the report covers what is done)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the images and training samples (for a GPU)")
    for entry in BUDGET_FLAGS:
        p.add_argument(
            f"--{entry.replace('_', '-')}",
            dest=entry,
            type=int,
            default=None,
            help=f"budget: {entry} (default: the study's, above)",
        )
    p.add_argument("--libraries", default=None, help="attack libraries (default: the study's, e.g. own,art)")
    p.add_argument("--attack-batch-size", type=int, default=None, help="attack in batches of this size (torchrun)")
    g = p.add_argument_group("animals10-fs-dd")
    g.add_argument("--model", default=None, help="timm backbone (default resnet18)")
    g.add_argument("--dataset", default=None, help="cifar10-animals (default, offline stand-in) or animals10")
    g.add_argument("--pretrained", action="store_true", help="start from timm's pretrained weights (online)")
    g.add_argument("--weights", default=None, help="start from these weights instead of the vehicle pretraining")
    g.add_argument("--finetune", choices=("all", "head"), default="all")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    p.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    return p


def run(request: StudyRequest) -> int:
    from pathlib import Path

    from advbridge.bridge import distributed
    from advbridge.bridge.errors import check_names
    from advbridge.experiments.compare import parse_libraries, results_prefix
    from advbridge.experiments.studies.catalog import StudyOptions, build_study
    from advbridge.experiments.studies.engine import run_study
    from advbridge.experiments.studies.report import write_report

    options = StudyOptions(
        data_root=request.data_root,
        scale=request.scale,
        budget={k: getattr(request, k) for k in BUDGET_FLAGS if getattr(request, k) is not None},
        libraries=tuple(parse_libraries(request.libraries)) if request.libraries is not None else None,
        model=request.model,
        dataset=request.dataset,
        pretrained=request.pretrained,
        weights=request.weights,
        finetune=request.finetune,
        attack_batch_size=request.attack_batch_size,
        progress=not request.quiet,
    )
    study = build_study(request.name, options)
    only = None
    if request.only is not None:
        only = check_names(f"cell of {study.name}", request.only, [c.name for c in study.cells])
    out = Path(request.out or results_prefix(f"study-{study.name}"))
    start = time.perf_counter()
    ran, skipped = run_study(study, out, resume=request.resume, only=only)
    if not distributed.world().main:
        return 0
    paths = write_report(study, out)
    minutes = (time.perf_counter() - start) / 60
    print(f"{study.title}: {len(ran)} cells run, {len(skipped)} finished before; {minutes:.1f} min")
    print((out / "report.md").read_text().split("## Next to")[0])
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0

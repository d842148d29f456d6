"""advbridge command line: the parsed options become a typed request (:mod:`experiments.requests`), then printing.

    python cli.py compare --attack pgd [--norm Linf --eps 8/255 --steps 40 ...]
    python cli.py defend --defense median --attack deepfool [--size 2 --libraries own,art ...]
    python cli.py bench --model resnet18 --dataset cifar10-exact --n 200
    python cli.py train --dataset mnist-5k --model advbridge_mnist_cnn
    python cli.py list

User errors print one line on stderr and exit with code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from advbridge.arguments import build_parser
from advbridge.bridge.errors import AdvBridgeError
from advbridge.experiments.requests import (
    AuditRequest,
    BenchRequest,
    CompareRequest,
    DefendRequest,
    Outcome,
    Request,
    StudyRequest,
    TrainRequest,
)

log = logging.getLogger("advbridge")


def _print(outcome: Outcome) -> int:
    for line in outcome.lines:
        print(line)
    if outcome.paths:
        print("wrote " + ", ".join(str(p) for p in outcome.paths))
    return 0


def _check_out(out: str | None, name: str) -> None:
    """An unwritable ``--out`` fails in a second, before torch is even imported."""
    if out is not None:
        from advbridge.bridge.io import OutputPrefix

        OutputPrefix.parse(out, default_name=name).check_writable()


def cmd_compare(request: CompareRequest) -> int:
    _check_out(request.out, "compare")
    from advbridge.experiments.commands import compare

    return _print(compare(request))


def cmd_defend(request: DefendRequest) -> int:
    _check_out(request.out, "defend")
    from advbridge.experiments.commands import defend

    return _print(defend(request))


def cmd_audit(request: AuditRequest) -> int:
    _check_out(request.out, "audit")
    from advbridge.experiments.audit.command import cli_audit

    return _print(cli_audit(request))


def cmd_bench(request: BenchRequest) -> int:
    _check_out(request.out, "bench")
    from advbridge.experiments.bench.attacks import cli_bench

    return _print(cli_bench(request))


def cmd_train(request: TrainRequest) -> int:
    from advbridge.experiments.commands import train

    return _print(train(request))


def cmd_study(request: StudyRequest) -> int:
    from advbridge.experiments.studies.command import run

    return run(request)


def cmd_list() -> int:
    from advbridge.experiments.matrix import MODEL_SOURCES, dataset_rows, defense_matrix, support_matrix
    from advbridge.experiments.registry import registered_defenses

    print("attacks × libraries (compare --attack NAME --norm NORM):")
    print(support_matrix().to_string())
    print("\ndefenses × libraries (defend --defense NAME; or your own: --defense-module FILE.py:factory):")
    print(defense_matrix().to_string())
    for kind, summary in dict.fromkeys((e.kind, e.summary) for e in registered_defenses()):
        print(f"  {kind:<11} {summary}")
    print("\ndatasets (--dataset NAME):")
    print(dataset_rows().to_string())
    print("\nmodels (--model NAME, --checkpoint):")
    for source, meaning in MODEL_SOURCES.items():
        print(f"  {source:<42} {meaning}")
    return 0


#: Each command: its typed request (built from the parsed options, every number checked) and what runs it.
COMMANDS: dict[str, tuple[type[Request], Callable[[Any], int]]] = {
    "compare": (CompareRequest, cmd_compare),
    "defend": (DefendRequest, cmd_defend),
    "audit": (AuditRequest, cmd_audit),
    "bench": (BenchRequest, cmd_bench),
    "train": (TrainRequest, cmd_train),
    "study": (StudyRequest, cmd_study),
}


def request_of(args: argparse.Namespace) -> Request:
    """The typed request of the parsed command (the ``Namespace`` goes no further than this module)."""
    request_type, _ = COMMANDS[args.command]
    return request_type.of(vars(args))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("art", "matplotlib", "PIL", "timm"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    try:
        if args.command == "list":
            return cmd_list()
        request = request_of(args)  # every option checked, before torch is imported
        if any(name in os.environ for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR")) and not _join_torchrun():
            request = replace(request, quiet=True)  # type: ignore[type-var]
        return COMMANDS[args.command][1](request)
    except AdvBridgeError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _join_torchrun() -> bool:
    """Under ``torchrun``: join the process group (left at exit); ranks other than 0 print nothing but
    warnings and errors (rank 0 prints the tables and writes the files). Whether this is the main rank."""
    import atexit

    from advbridge.bridge.distributed import setup, teardown

    main_rank = setup().main
    if not main_rank:
        logging.getLogger().setLevel(logging.WARNING)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    atexit.register(teardown)
    return main_rank


if __name__ == "__main__":
    sys.exit(main())

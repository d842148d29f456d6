"""Every numeric option of compare, defend, audit, bench, train and study, given a non-finite or out-of-range
value, is refused before any work: exit 2, one line on stderr naming the option, no traceback, and nothing
written, neither in the working folder (the default ``--out`` is relative to it) nor in ``$ADVBRIDGE_CACHE``
(issue 37: ``defend --defense recon-detect --threshold inf`` trained and cached a generator, wrote five files,
then ended in a traceback).

The options are found by walking the parser (:func:`advbridge.arguments.build_parser`): every action of type
``int`` or ``float``, every option with a numeric default, and the numbers given as text (budgets such as
``8/255``, comma-separated lists). Each gets ``nan``, ``inf`` and ``-inf``, and the out-of-range values of the
table below, read from the code that consumes the option; a new numeric option without a row fails
:func:`test_every_numeric_option_has_a_range`. An option that belongs to one attack, defense or study is given
with it (``--threshold`` with ``--defense recon-detect``, ``--bits`` with ``bit-depth``...).

==================================================  ==========================  ===============================
option (commands)                                    valid range                 out-of-range values tried
==================================================  ==========================  ===============================
--n --steps --epochs --batch-size --image-size      int >= 1                    0
--attack-batch-size --calibration-n --restarts
--eot --square-queries --train-steps --train-epochs
--train-max --max-train --latent-dim --gen-epochs
--gen-max-train --repeats --cifar-max-train
--cifar-epochs --defense-epochs --n-calibration
--binarization-inner
--seed                                               int in [0, 2**63)           -1, 2**63
--num-classes --candidates --levels --budget         int >= 2                    1
--refine-steps (cvae-label) --binarization-samples  int >= 0                    -1
--bits (bit-depth)                                   int in [1, 8]               0, 9
--size (median)                                      int in [2, 5]               1, 6
--eps --train-eps (Linf)                             (0, 1], fraction ok         0, -8/255, 3/2
--step-size --train-step-size                        > 0, fraction ok            0, -1/255
--lr --train-lr --refine-lr --init-norm              > 0                         0, -1
--clip-grad-norm --train-clip-grad-norm
--temperature (distill) --scale (study)
--overshoot (deepfool) --beta (vae) --threshold      >= 0                        -0.1
--gamma (ddn) --fpr (detectors)                      (0, 1)                      -0.1, 1.5
--ratio (adv-fgsm)                                   (0, 1]                      0, 1.5
--eps-ramp (adv-pgd)                                 [0, 1)                      -0.1, 1.5
--factor (resample)                                  > 1                         0.5
--eps-grid (deepfool)                                comma-separated, each > 0   0, "0.1,-0.1", "0.1,nan"
--std                                                comma-separated, each > 0   0, "0.3,-0.3"
--mean                                               comma-separated, finite     "0.1,nan" (any finite is valid)
==================================================  ==========================  ===============================

An L∞ budget above 1 is vacuous (images are in [0, 1]: every image is within 1 of every other), hence the
``3/2`` case; an L2 budget has no such bound.

Most cases call :func:`advbridge.cli.main` in-process (a refusal takes milliseconds); what a subprocess would
print on stderr is also what the in-process run logs at INFO and above, or warns, so those count as lines too. A
case that is not refused within :data:`REFUSAL_S` is stopped and fails (it has started work). One case per
command runs ``python cli.py`` end to end in a subprocess.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from advbridge.arguments import build_parser
from advbridge.cli import main

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ("compare", "defend", "audit", "bench", "train", "study")
#: A refusal is immediate; a case still running after this has started work (training, attacking).
REFUSAL_S = 5
NON_FINITE = ("nan", "inf", "-inf")
#: Options given as text that are numbers.
NUMERIC_TEXT = {"eps", "step_size", "train_eps", "train_step_size", "eps_grid", "mean", "std"}

COUNT = ("0",)
COUNTS = """n steps epochs batch_size image_size attack_batch_size calibration_n restarts eot square_queries train_steps
    train_epochs train_max max_train latent_dim gen_epochs gen_max_train repeats cifar_max_train cifar_epochs
    defense_epochs n_calibration binarization_inner"""
POSITIVE = ("0", "-1")
UNIT_OPEN = ("-0.1", "1.5")
#: Out-of-range values of each option (by ``dest``), from the code that consumes it (see the table above).
OUT_OF_RANGE: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(COUNTS.split(), COUNT),
    "seed": ("-1", str(2**63)),
    **dict.fromkeys(("num_classes", "candidates", "levels", "budget"), ("1",)),
    **dict.fromkeys(("refine_steps", "binarization_samples"), ("-1",)),
    "bits": ("0", "9"),
    "size": ("1", "6"),
    "eps": ("0", "-8/255", "3/2"),
    "train_eps": ("0", "-8/255", "3/2"),
    "step_size": ("0", "-1/255"),
    "train_step_size": ("0", "-1/255"),
    **dict.fromkeys(
        ("lr", "train_lr", "refine_lr", "init_norm", "clip_grad_norm", "train_clip_grad_norm", "temperature", "scale"),
        POSITIVE,
    ),
    **dict.fromkeys(("overshoot", "beta", "threshold"), ("-0.1",)),
    **dict.fromkeys(("gamma", "fpr"), UNIT_OPEN),
    "ratio": ("0", "1.5"),
    "eps_ramp": ("-0.1", "1.5"),
    "factor": ("0.5",),
    "eps_grid": ("0", "0.1,-0.1", "0.1,nan"),
    "std": ("0", "0.3,-0.3"),
    "mean": ("0.1,nan",),
}

#: The other arguments of each command's cases.
BASE: dict[str, list[str]] = {
    "compare": ["--attack", "pgd"],
    "defend": ["--defense", "median", "--attack", "pgd"],
    "audit": [],
    "bench": [],
    "train": [],
    "study": ["mnist-cifar10-vae"],
}


def _defend(defense: str, *more: str) -> list[str]:
    return ["--defense", defense, "--attack", "pgd", *more]


#: Options that belong to one attack, defense or study: given with it.
CONTEXT: dict[tuple[str, str], list[str]] = {
    ("compare", "eps"): ["--attack", "pgd", "--norm", "Linf"],
    **{("compare", d): ["--attack", "deepfool"] for d in ("overshoot", "candidates", "eps_grid")},
    **{("compare", d): ["--attack", "ddn"] for d in ("gamma", "init_norm", "levels")},
    ("defend", "eps"): _defend("median", "--norm", "Linf"),
    ("defend", "bits"): _defend("bit-depth"),
    ("defend", "size"): _defend("median"),
    ("defend", "factor"): _defend("resample"),
    **{("defend", d): _defend("recon-detect") for d in ("threshold", "fpr", "calibration_n")},
    ("defend", "train_eps"): _defend("adv-pgd", "--train-norm", "Linf"),
    **{
        ("defend", d): _defend("adv-pgd")
        for d in "train_steps train_step_size eps_ramp train_epochs train_max train_lr train_clip_grad_norm restarts".split()
    },
    ("defend", "ratio"): _defend("adv-fgsm"),
    ("defend", "temperature"): _defend("distill"),
    **{("defend", d): _defend("vae-purify") for d in ("latent_dim", "beta", "gen_epochs", "gen_max_train")},
    ("defend", "eot"): _defend("vae-purify", "--sample"),
    **{("defend", d): _defend("cvae-label") for d in ("refine_steps", "refine_lr")},
    ("audit", "eps"): ["--norm", "Linf"],
    ("audit", "bits"): ["--defense", "bit-depth"],
    ("audit", "size"): ["--defense", "median"],
    ("audit", "factor"): ["--defense", "resample"],
    **{("audit", d): ["--defense", "squeeze-detect"] for d in ("threshold", "fpr", "calibration_n")},
    ("audit", "eot"): ["--defense", "vae-purify"],
    **{("train", d): ["--defense", "adv-pgd", "--norm", "Linf"] for d in ("eps", "steps", "step_size", "eps_ramp")},
    ("train", "ratio"): ["--defense", "adv-fgsm"],
    ("train", "temperature"): ["--defense", "distill"],
    **{("train", d): ["--generator", "vae"] for d in ("latent_dim", "beta")},
    ("study", "defense_epochs"): ["cifar10-fs-at"],
    ("study", "n_calibration"): ["animals10-fs-dd"],
}


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: action.choices[name] for name in COMMANDS}


def is_numeric(action: argparse.Action) -> bool:
    if not action.option_strings or action.dest in ("help", "version"):
        return False
    default_is_number = isinstance(action.default, (int, float)) and not isinstance(action.default, bool)
    return action.type in (int, float) or default_is_number or action.dest in NUMERIC_TEXT


def numeric_options() -> list[tuple[str, str, str]]:
    """(command, flag, dest) of every numeric option of the six commands."""
    found = []
    for command, parser in subparsers().items():
        for action in parser._actions:
            if is_numeric(action):
                flag = max(action.option_strings, key=len)
                found.append((command, flag, action.dest))
    return found


def cases() -> list:
    params = []
    for command, flag, dest in numeric_options():
        for value in (*NON_FINITE, *OUT_OF_RANGE.get(dest, ())):
            params.append(pytest.param(command, flag, dest, value, id=f"{command} {flag} {value}"))
    return params


def argv_of(command: str, flag: str, dest: str, value: str) -> list[str]:
    return [command, *CONTEXT.get((command, dest), BASE[command]), f"{flag}={value}"]


def written(*folders: Path) -> list[str]:
    """Every file and folder under ``folders``."""
    return sorted(str(p) for folder in folders for p in folder.rglob("*"))


def names_option(line: str, flag: str, dest: str) -> bool:
    """The line names the option: its flag, or its name as a word (``eps``, ``calibration_n``...)."""
    if flag in line:
        return True
    for name in {dest, dest.replace("_", "-"), dest.replace("_", " ")}:
        if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", line):
            return True
    return False


@pytest.fixture
def empty_folders(tmp_path, monkeypatch):
    """An empty working folder (the cwd), an empty ``$ADVBRIDGE_CACHE`` and an empty ``$ADVBRIDGE_DATA``."""
    folders = {name: tmp_path / name for name in ("cwd", "cache", "data")}
    for folder in folders.values():
        folder.mkdir()
    monkeypatch.chdir(folders["cwd"])
    monkeypatch.setenv("ADVBRIDGE_CACHE", str(folders["cache"]))
    monkeypatch.setenv("ADVBRIDGE_DATA", str(folders["data"]))
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    return folders


class NotRefused(Exception):
    """The command was still running after :data:`REFUSAL_S` seconds: it has started work."""


def _stop(signum, frame):
    raise NotRefused(f"still running after {REFUSAL_S} s")


def run_in_process(argv: list[str]) -> tuple[int | str, str]:
    """``main(argv)``: its exit code (an argparse ``SystemExit`` included), or a description of what it raised
    or of its not returning in time; and the warnings it gave, one line each."""
    previous = signal.signal(signal.SIGALRM, _stop)
    signal.setitimer(signal.ITIMER_REAL, REFUSAL_S)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                code: int | str = main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else f"SystemExit({exc.code!r})"
            except NotRefused as exc:
                code = f"not refused: {exc}"
            except Exception as exc:  # a traceback in a shell
                code = f"raised {type(exc).__name__}: {exc}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    shown = [w for w in caught if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]
    return code, "\n".join(f"{w.category.__name__}: {w.message}" for w in shown)


def test_every_numeric_option_has_a_range():
    """The table covers every numeric option the parser has, and every option in the table is still there."""
    options = numeric_options()
    assert len({c for c, _, _ in options}) == len(COMMANDS), "a command without a numeric option"
    dests = {dest for _, _, dest in options}
    missing = sorted(d for d in dests if d not in OUT_OF_RANGE)
    assert not missing, f"numeric options without out-of-range values in OUT_OF_RANGE: {missing}"
    assert not sorted(set(OUT_OF_RANGE) - dests), "OUT_OF_RANGE names options the parser no longer has"
    for (command, dest), context in CONTEXT.items():
        assert command in COMMANDS and isinstance(context, list), (command, dest)


@pytest.mark.parametrize(("command", "flag", "dest", "value"), cases())
def test_bad_number_is_refused_before_any_work(command, flag, dest, value, empty_folders, capsys, caplog):
    argv = argv_of(command, flag, dest, value)
    caplog.set_level(logging.INFO)  # what ``cli.py`` shows on stderr by default
    code, warned = run_in_process(argv)
    out, err = capsys.readouterr()
    logged = [f"{r.levelname} {r.name}: {r.getMessage()}" for r in caplog.records]
    lines = [line for line in [*err.splitlines(), *logged, *warned.splitlines()] if line.strip()]
    left = written(*empty_folders.values())
    report = f"cli.py {' '.join(argv)}\n  exit {code!r}\n  stderr+logs: {lines}\n  wrote: {left}"
    assert code == 2, report
    assert len(lines) == 1, report
    assert names_option(lines[0], flag, dest), report
    assert "Traceback" not in out + err, report
    assert not left, report


#: One case per command, end to end: ``python cli.py ...`` in an empty folder.
SHELL_CASES = [
    ("compare", "--eps", "eps", "nan"),
    ("compare", "--n", "n", "inf"),
    ("defend", "--threshold", "threshold", "inf"),
    ("audit", "--fpr", "fpr", "1.5"),
    ("bench", "--repeats", "repeats", "0"),
    ("train", "--temperature", "temperature", "-inf"),
    ("study", "--scale", "scale", "nan"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("command", "flag", "dest", "value"), SHELL_CASES, ids=[" ".join(c) for c in SHELL_CASES])
def test_bad_number_is_refused_from_a_shell(command, flag, dest, value, tmp_path):
    folders = [tmp_path / name for name in ("cwd", "cache", "data")]
    for folder in folders:
        folder.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR")}
    env.update(ADVBRIDGE_CACHE=str(folders[1]), ADVBRIDGE_DATA=str(folders[2]))
    argv = argv_of(command, flag, dest, value)
    try:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "cli.py"), *argv],
            cwd=folders[0], env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"cli.py {' '.join(argv)}: not refused within 60 s; wrote {written(*folders)}")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    report = f"cli.py {' '.join(argv)}\n  exit {proc.returncode}\n  stderr: {lines}\n  wrote: {written(*folders)}"
    assert proc.returncode == 2, report
    assert len(lines) == 1 and names_option(lines[0], flag, dest), report
    assert "Traceback" not in proc.stdout + proc.stderr, report
    assert not written(*folders), report

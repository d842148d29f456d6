"""Long runs: a killed ``compare`` resumes with ``--resume`` to the same table; same seed, same CSV."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from advbridge.cli import main

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["compare", "--attack", "pgd", "--n", "48", "--steps", "5", "--attack-batch-size", "8", "--quiet"]


@pytest.mark.slow
@pytest.mark.usefixtures("deterministic")
def test_same_seed_gives_identical_csv(tmp_path, mnist_workload):
    for name in ("a", "b"):
        assert main([*ARGS, "--random-start", "--seed", "5", "--out", str(tmp_path / name)]) == 0
    first, second = (tmp_path / "a.csv").read_bytes(), (tmp_path / "b.csv").read_bytes()
    assert first == second
    assert b"git_revision" in first.splitlines()[0]
    assert main([*ARGS, "--random-start", "--seed", "6", "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c.csv").read_bytes() != first, "another seed must change the random starts"
    assert not (tmp_path / "a.progress").exists(), "a finished run removes its progress folder"


@pytest.mark.slow
@pytest.mark.usefixtures("deterministic")
def test_killed_run_resumes_to_the_same_table(tmp_path, mnist_workload):
    slow = ["compare", "--attack", "pgd", "--n", "64", "--steps", "300", "--attack-batch-size", "8"]
    slow += ["--libraries", "own,torchattacks", "--quiet"]
    assert main([*slow, "--out", str(tmp_path / "full")]) == 0

    out = tmp_path / "killed"
    progress = tmp_path / "killed.progress"
    proc = subprocess.Popen([sys.executable, "cli.py", *slow, "--out", str(out)], cwd=ROOT)
    deadline = time.monotonic() + 240
    while len(list(progress.glob("*.safetensors"))) < 3:
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = list(progress.glob("*.safetensors"))
    assert 3 <= len(saved) < 16 and not out.with_suffix(".csv").exists()

    import advbridge.experiments.core.executor as executor  # every compare row runs through it

    calls = []
    real_run_attack = executor.run_attack

    def counting_run_attack(*args, **kwargs):
        calls.append(args[0])
        return real_run_attack(*args, **kwargs)

    executor.run_attack = counting_run_attack
    try:
        assert main([*slow, "--out", str(out), "--resume"]) == 0
    finally:
        executor.run_attack = real_run_attack
    assert len(calls) == 16 - len(saved), "saved (library, batch) parts must be reused, not recomputed"
    assert (tmp_path / "full.csv").read_bytes() == out.with_suffix(".csv").read_bytes()
    assert not progress.exists()


def test_resume_refuses_progress_from_other_settings(tmp_path, mnist_workload, capsys):
    from advbridge.bridge.errors import CheckpointError
    from advbridge.experiments.progress import ProgressStore

    ProgressStore(tmp_path / "run.progress", {"n": 8, "spec": "pgd"}, resume=False)
    with pytest.raises(CheckpointError, match=r"different settings \(n\)"):
        ProgressStore(tmp_path / "run.progress", {"n": 16, "spec": "pgd"}, resume=True)

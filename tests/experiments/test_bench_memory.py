"""The bench's peak memory: live bytes, measured in a child process whose heap unmaps every large block it
frees, so that what ran before an attack cannot add to its peak."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import advbridge.experiments.bench.attacks as bench
from advbridge.experiments.bench import memory
from advbridge.experiments.requests import BenchRequest


def test_the_child_runs_the_memory_module_with_the_mmap_threshold_pinned(monkeypatch):
    calls = []

    def fake_run(command, env, check, timeout):
        calls.append((command, env, timeout))
        request = json.loads(Path(command[-2]).read_text())
        rows = [{"attack": a, "library": lib, "peak_mb": 10.0 * i} for i, (a, lib) in
                enumerate((a, lib) for a in request["attacks"] for lib in request["libraries"])]  # fmt: skip
        Path(command[-1]).write_text(json.dumps(rows))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(memory.subprocess, "run", fake_run)
    request = BenchRequest(dataset="mnist-5k", n=8)
    peaks = memory.live_peaks(request, ["fgsm", "pgd"], ["own", "foolbox"], timeout=99.0)
    assert peaks == {("fgsm", "own"): 0.0, ("fgsm", "foolbox"): 10.0, ("pgd", "own"): 20.0, ("pgd", "foolbox"): 30.0}
    ((command, env, timeout),) = calls
    assert timeout == 99.0
    assert command[:3] == [sys.executable, "-m", "advbridge.experiments.bench.memory"]
    assert env["MALLOC_MMAP_THRESHOLD_"] == str(128 * 1024)
    assert not Path(command[-2]).exists()  # the request and the answer lived in a temporary folder, gone now


def test_the_request_reaches_the_child_whole(monkeypatch, tmp_path):
    seen = {}

    def fake_run(command, env, check, timeout):
        seen.update(json.loads(Path(command[-2]).read_text()))
        Path(command[-1]).write_text("[]")
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(memory.subprocess, "run", fake_run)
    request = BenchRequest(dataset="cifar10-exact", n=200, data_root="../shared/data", repeats=2, lr=0.5)
    assert memory.live_peaks(request, ["ddn"], ["own"]) == {}
    assert BenchRequest.of(seen["args"]) == request  # the child rebuilds (and checks) the same request
    assert seen["args"]["n"] == 200 and seen["args"]["data_root"] == "../shared/data"
    assert seen["attacks"] == ["ddn"] and seen["libraries"] == ["own"]


def _table() -> pd.DataFrame:
    return pd.DataFrame({"attack": ["fgsm", "fgsm"], "library": ["own", "foolbox"], "peak_mb": [300.0, 250.0]})


def test_the_table_takes_the_childs_peaks_and_says_so(monkeypatch):
    monkeypatch.setattr(memory, "applies", lambda device: True)
    monkeypatch.setattr(
        memory, "live_peaks", lambda args, a, libs, timeout: {("fgsm", "own"): 190.0, ("fgsm", "foolbox"): 195.0}
    )
    table = _table()
    line = bench.replace_peaks_by_live_ones(table, BenchRequest(), ["fgsm"], ["own", "foolbox"], torch.device("cpu"))
    assert list(table["peak_mb"]) == [190.0, 195.0]
    assert line.startswith("peak_mb: live peak, one run of each in a separate process")


def test_a_failed_child_keeps_this_process_peaks_and_says_so(monkeypatch):
    def fail(args, attacks, libraries, timeout):
        raise subprocess.CalledProcessError(1, ["python"])

    monkeypatch.setattr(memory, "applies", lambda device: True)
    monkeypatch.setattr(memory, "live_peaks", fail)
    table = _table()
    line = bench.replace_peaks_by_live_ones(table, BenchRequest(), ["fgsm"], ["own", "foolbox"], torch.device("cpu"))
    assert list(table["peak_mb"]) == [300.0, 250.0]
    assert "in this process" in line and "the separate measurement failed" in line


def test_a_child_out_of_time_keeps_this_process_peaks_and_says_so(monkeypatch):
    seen = {}

    def too_slow(args, attacks, libraries, timeout):
        seen["timeout"] = timeout
        raise subprocess.TimeoutExpired(["python"], timeout)

    monkeypatch.setattr(memory, "applies", lambda device: True)
    monkeypatch.setattr(memory, "live_peaks", too_slow)
    table = _table()
    line = bench.replace_peaks_by_live_ones(table, BenchRequest(), ["fgsm"], ["own"], torch.device("cpu"), timeout=7.0)
    assert seen["timeout"] == 7.0 and list(table["peak_mb"]) == [300.0, 250.0]
    assert "in this process" in line and "timed out after 7" in line


def test_where_the_child_does_not_apply_the_rounds_peaks_stay(monkeypatch):
    monkeypatch.setattr(memory, "live_peaks", lambda *a: pytest.fail("no child on CUDA"))
    table = _table()
    line = bench.replace_peaks_by_live_ones(table, BenchRequest(), ["fgsm"], ["own"], torch.device("cuda"))
    assert list(table["peak_mb"]) == [300.0, 250.0] and "max_memory_allocated" in line
    assert not memory.applies(torch.device("cuda"))


@pytest.mark.slow
@pytest.mark.skipif(not memory.applies(torch.device("cpu")), reason="the child measurement needs Linux with glibc")
def test_the_child_measures_real_runs(mnist_workload, tmp_path):
    """The module run as the child: the cached model, one run per pair, a positive peak for each."""
    request = BenchRequest(dataset="mnist-5k", n=64, quiet=True, device="cpu")
    peaks = memory.live_peaks(request, ["fgsm"], ["own", "torchattacks"])
    assert set(peaks) == {("fgsm", "own"), ("fgsm", "torchattacks")}
    assert all(1 < mb < 1000 for mb in peaks.values()), peaks  # 64 digits' graph: tens of MB

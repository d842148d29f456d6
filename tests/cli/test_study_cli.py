"""``cli.py study``: each study's command runs one of its cells end to end on the shared data (tiny budgets),
and writes the report, the tidy CSV, the cards and the figures."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

# every test runs `cli.py study` in a subprocess (trains its cells' models)
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--n", "8", "--max-train", "256", "--epochs", "1", "--restarts", "1", "--libraries", "own", "--quiet"]


def run_study(shared_data: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "cli.py", "study", *args, "--data-root", str(shared_data), "--out", str(out), *TINY],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize(
    "study, cell, row, extra",
    [
        ("cifar10-fs-at", "feature-squeezing-fgsm", "feature squeezing", ["--defense-epochs", "1"]),
        ("animals10-fs-dd", "detector-threshold-1-pgd", "squeezing detector (threshold 1.0)", ["--steps", "3"]),
        ("mnist-cifar10-vae", "mnist-vae-purify-fgsm", "MNIST: VAE purification", ["--gen-epochs", "1"]),
    ],
)
def test_a_study_cell_end_to_end(shared_data, tmp_path, study, cell, row, extra):
    out = tmp_path / study
    proc = run_study(shared_data, out, study, "--only", cell, *extra)
    assert re.search(r"(?<!\d)1 cells run, ", proc.stdout), proc.stdout  # not "11 cells run"
    report = (out / "report.md").read_text()
    assert f"| {row} |" in report and "not run" in report and re.search(r"(?<!\d)1 of \d+ ", report)
    results = pd.read_csv(out / "results.csv")
    assert set(results["cell"]) == {cell} and set(results["study"]) == {study}
    assert {"transfer", "white-box", "adaptive", "worst-case"} <= set(results["mode"])
    assert results["flags"].notna().any() or "flags" in results  # the column is there for every row
    cards = json.loads((out / "cards.json").read_text())
    assert cards and all("accuracy" in c or "test_reconstruction" in c for c in cards.values())
    for figure in ("transfer-vs-adaptive.png", "robust-vs-eps.png"):
        assert (out / figure).stat().st_size > 1000
    # resumed: the finished cell is not rerun, the report is the same
    again = run_study(shared_data, out, study, "--only", cell, "--resume", *extra)
    assert "0 cells run, 1 finished before" in again.stdout
    assert (out / "report.md").read_text() == report


def test_audit_of_a_study_cell_uses_the_study_s_models_and_lands_beside_its_table(shared_data, tmp_path, model_cache):
    """``audit --study NAME --cell CELL``: the budget from the study's folder, hence the very models the study
    cached (the audit trains nothing: the cache is unchanged), the card under <study>/audits/ and in the report."""
    out = tmp_path / "vae"
    cell = "mnist-vae-purify-pgd"
    run_study(shared_data, out, "mnist-cifar10-vae", "--only", cell, "--gen-epochs", "1", "--gen-max-train", "256",
              "--steps", "3")  # fmt: skip
    cached = sorted(p.relative_to(model_cache) for p in model_cache.rglob("*") if p.is_file())
    proc = subprocess.run(
        [sys.executable, "cli.py", "audit", "--study", "mnist-cifar10-vae", "--cell", cell, "--study-dir", str(out),
         "--data-root", str(shared_data), "--n", "6", "--steps", "5", "--libraries", "own", "--no-autoattack",
         "--square-queries", "20", "--restarts", "1", "--eot", "2", "--binarization-samples", "2",
         "--binarization-inner", "9", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.relative_to(model_cache) for p in model_cache.rglob("*") if p.is_file()) == cached
    assert "audit of vae-purify (vae) in front of advbridge_mnist_cnn (study mnist-cifar10-vae, cell " in proc.stdout
    card = json.loads((out / "audits" / f"{cell}-card.json").read_text())
    assert card["name"].startswith("vae-purify (vae) in front of advbridge_mnist_cnn")
    assert card["threat_model"] == "Linf" and card["eps"] == "0.3" and card["n"] == 6
    assert card["indicators"][-1]["indicator"] == "binarization"
    report = (out / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith(f"| {cell} |"))
    assert f"| {card['clean_acc']} |" in row and f"`audits/{cell}.md`" in row
    refused = subprocess.run(
        [sys.executable, "cli.py", "audit", "--study", "mnist-cifar10-vae", "--cell", "nope", "--study-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2 and "mnist-vae-purify-pgd" in refused.stderr

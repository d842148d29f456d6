"""The adversarial-training benchmark: both trainers on the same data, timed, and what each model resists."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from advbridge.experiments.bench.training import EVAL_STEPS, main


@pytest.mark.slow
def test_training_benchmark_times_both_trainers_and_measures_robust_accuracy(mnist_workload, tmp_path, capsys):
    out = tmp_path / "training"
    argv = ["--n", "64", "--steps", "2", "--batch-size", "32", "--repeats", "1", "--eval-n", "16", "--out", str(out)]
    assert main(argv) == 0
    table = pd.read_csv(f"{out}.csv").set_index("library")
    assert list(table.index) == ["own", "art"] and table.loc["own", "own_speedup"] == 1
    assert math.isclose(table.loc["art", "own_speedup"], table.loc["art", "seconds"] / table.loc["own", "seconds"])
    robust = table[f"robust_accuracy_pgd{EVAL_STEPS}"]
    assert robust.between(0, 1).all() and robust.notna().all()
    printed = capsys.readouterr().out
    assert "target own ≥ 2× ART" in printed and "within 2 points of ART's" in printed


@pytest.mark.slow
def test_training_benchmark_from_trained_weights_starts_both_trainers_there(mnist_workload, tmp_path):
    """``--weights``: both trainers fine-tune the trained classifier (no eps ramp, the same algorithm), so
    after two small batches both still classify; from the seeded initial weights neither could."""
    from fixture_models import MNIST_CNN

    out = tmp_path / "warm"
    argv = ["--n", "64", "--steps", "2", "--batch-size", "32", "--repeats", "1", "--eval-n", "16", "--out", str(out)]
    assert main([*argv, "--weights", str(MNIST_CNN / "model.safetensors")]) == 0
    table = pd.read_csv(f"{out}.csv").set_index("library")
    assert (table["test_accuracy"] > 0.8).all(), table["test_accuracy"]


def test_training_benchmark_refuses_missing_weights_before_training(tmp_path, capsys):
    missing = tmp_path / "absent.safetensors"
    assert main(["--weights", str(missing), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "--weights" in err and not list(tmp_path.glob("x*"))


def test_training_benchmark_refuses_distillation_before_training(tmp_path, capsys):
    """Distillation trains with no attack: no floor of attack passes to time it against, so it is refused."""
    assert main(["--defense", "distill", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'distill'" in err and "adv-fgsm, adv-fgsm-rs, adv-pgd" in err, err
    assert not list(tmp_path.iterdir())

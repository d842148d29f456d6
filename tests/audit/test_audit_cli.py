"""``cli.py audit`` and ``advbridge.audit``: a user's defended module with its twin, the files, and bad input
refused in one line before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

BROKEN = Path(__file__).resolve().parent / "broken_defenses.py"
FAST = ["--n", "8", "--libraries", "own", "--no-autoattack", "--no-minimal", "--square-queries", "20",
        "--steps", "10", "--restarts", "1", "--quiet"]  # fmt: skip


@pytest.mark.slow  # a whole audit (the full suite)
def test_cli_audit_of_a_user_module(tmp_path, capsys):
    from advbridge.cli import main

    out = tmp_path / "saturated"
    assert main(["audit", "--defense-module", f"{BROKEN}:saturated", *FAST, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "saturated_softmax" in printed and "worst-case robust accuracy" in printed
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["indicators"]["saturated_softmax"]["raised"]
    assert info["worst_case_robust_accuracy"] <= info["worst_case_robust_accuracy_naive"]
    assert info["surrogate"] == "advbridge_mnist_cnn" and info["n"] == 8
    table = pd.read_csv(tmp_path / "saturated.csv")
    assert "margin" in set(table["stage"])


@pytest.mark.slow  # a whole audit (the full suite)
def test_api_audit_with_a_registered_squeezer(mnist_model, mnist_batch):
    import advbridge

    x, y = mnist_batch
    report = advbridge.audit(
        mnist_model, x[:8], y[:8], defense="bit-depth", bits=4, libraries="own", autoattack=False, minimal=False,
        square_queries=20, steps=10, restarts=1,
    )  # fmt: skip
    indicators = report.indicators.set_index("indicator")
    assert indicators.loc["unavailable_gradients", "raised"]  # rounding: no gradient, so BPDA
    assert "bpda" in set(report.table["stage"])
    assert report.worst_case_robust_accuracy <= 0.25


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--budget", "1"], "expected --budget as an int >= 2, got 1"),
        (["--defense", "squeeze-detect", "--calibration-n", "0"], "expected --calibration-n as an int >= 1, got 0"),
        (["--defense", "squeeze-detect", "--n", "5000"], "--n + --calibration-n"),
        (["--defense", "median", "--defense-module", "x.py:f"], "expected --defense NAME or --defense-module"),
        (["--surrogate", "x.py:f"], "expected --surrogate only with --defense-module"),
        (["--norm", "L3"], "L3"),
        (["--eps", "-1"], "eps"),
        (["--restarts", "0"], "expected --restarts as an int >= 1, got 0"),
        (["--square-queries", "0"], "expected --square-queries as an int >= 1, got 0"),
        (["--bits", "2"], "expected --defense with --bits"),
        (["--defense", "bit-depth", "--bits", "9"], "bits"),
        (["--libraries", "own,own"], "own"),
        (["--defense", "distill", "--bits", "1"], "expected no squeezer options with --defense distill"),
        (["--defense", "vae-purify", "--size", "2"], "expected no squeezer options with --defense vae-purify"),
        (["--defense", "recon-detect", "--size", "2"], "expected no squeezer options with --defense recon-detect"),
        (["--defense", "recon-detect", "--n", "5000"], "--n + --calibration-n"),
        (["--defense", "adv-pgd", "--model", "x.py:f"], "expected a model advbridge trains"),
    ],
)
def test_cli_audit_bad_input_exits_2_before_work(extra, message, tmp_path, monkeypatch, capsys):
    from advbridge.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ADVBRIDGE_CACHE", str(tmp_path / "cache"))
    assert main(["audit", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # a whole audit (the full suite)
def test_api_audit_of_the_squeezing_detector_is_detection_aware(mnist_model, mnist_batch):
    """The detector next to the classifier, as one classifier with a reject class. A threshold no score exceeds
    (scores are in [0, 2]) leaves the classifier alone, which the audit breaks; a threshold of 0 rejects every
    image, and the audit says the system is at chance instead of calling it robust."""
    import advbridge

    x, y = mnist_batch
    options = {"libraries": "own", "autoattack": False, "minimal": False, "square_queries": 5, "steps": 10,
               "restarts": 1, "eot": 1, "bits": 1}  # fmt: skip
    open_door = advbridge.audit(mnist_model, x[:4], y[:4], defense="squeeze-detect", threshold=2.0, **options)
    assert open_door.worst_case_robust_accuracy == 0
    shut = advbridge.audit(mnist_model, x[:4], y[:4], defense="squeeze-detect", threshold=0.0, **options)
    assert shut.audit.clean_accuracy == 0 and "failed_training" in shut.audit.stayed_raised

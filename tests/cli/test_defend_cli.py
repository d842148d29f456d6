"""``cli.py defend`` end to end on the committed classifier: the two tables, every file, and one-line errors."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from advbridge.cli import main


@pytest.mark.usefixtures("deterministic")
def test_defend_median_writes_both_tables_and_the_figure(tmp_path, capsys, mnist_workload):
    out = tmp_path / "med.csv"  # an extension is dropped: the prefix is med
    argv = ["defend", "--defense", "median", "--attack", "fgsm", "--n", "8", "--libraries", "own,torchattacks"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    prefix = tmp_path / "med"
    table = pd.read_csv(f"{prefix}.csv")
    assert set(table["mode"]) == {"none", "transfer", "white-box", "adaptive", "worst-case"}
    assert set(table["defense_library"]) == {"own", "art"} and (table["defense"] == "median 2×2").all()
    assert (table["eps"] == 0.3).all() and len(table) == 2 * (2 + 3 * 2)
    art_white = table.query("defense_library == 'art' and mode == 'white-box'")
    assert (art_white["status"] == "unsupported").all() and art_white["reason"].str.contains("BPDA").all()
    agreement = pd.read_csv(f"{prefix}-agreement.csv")
    assert agreement.set_index("library").loc["art", "max_abs_diff_vs_own"] == 0.0
    files = json.loads((tmp_path / "med.json").read_text())["files"]
    assert files == ["med.csv", "med-agreement.csv", "med.md", "med.json", "med.png"]
    for name in files:
        assert (tmp_path / name).stat().st_size > 0 and f"{tmp_path / name}" in printed
    assert not (tmp_path / "med-roc.png").exists()


def test_defend_detector_writes_roc_and_score_histograms(tmp_path, mnist_workload):
    out = tmp_path / "det"
    argv = ["defend", "--defense", "squeeze-detect", "--attack", "fgsm", "--n", "8", "--calibration-n", "40"]
    assert main([*argv, "--libraries", "own", "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(f"{out}.csv").set_index("mode")
    assert table.loc["none", "threshold"] > 0 and table.loc["transfer", "roc_auc"] >= 0.5
    assert table.loc["adaptive", "status"] == "ok"
    assert (tmp_path / "det-roc.png").stat().st_size > 5000 and (tmp_path / "det-scores.png").stat().st_size > 5000
    meta = json.loads((tmp_path / "det.json").read_text())
    assert meta["n_calibration"] == 40 and meta["defense"]["bits"] == 1 and meta["defense"]["size"] == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--defense", "bit-depth", "--bits", "9"], "expected --bits as an int in [1, 8], got 9"),
        (["--defense", "median", "--size", "6"], "expected --size as an int in [2, 5], got 6"),
        (["--defense", "resample", "--factor", "1"], "expected --factor as a finite number > 1, got 1.0"),
        (["--defense", "resample", "--mode", "cubic"], "unknown interpolation mode 'cubic'"),
        (["--defense", "squeeze-detect", "--fpr", "1.5"], "expected --fpr as a finite number in (0, 1), got 1.5"),
        (
            ["--defense", "squeeze-detect", "--threshold", "-1"],
            "expected --threshold as a finite number >= 0, got -1.0",
        ),
        (["--defense", "squeeze-detect", "--calibration-n", "0"], "expected --calibration-n as an int >= 1, got 0"),
        (["--defense", "median", "--defense-libraries", "foolbox"], "foolbox has no median 2×2"),
        (["--defense", "squeeze-detect", "--defense-libraries", "art"], "libraries that have it: own"),
        (["--defense", "medain"], "unknown defense 'medain'; did you mean 'median'"),
        (["--defense", "median", "--n", "0"], "expected --n as an int >= 1, got 0"),
    ],
)
def test_defend_bad_input_is_one_line_and_exit_2(extra, message, capsys):
    start = time.monotonic()
    assert main(["defend", "--attack", "fgsm", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert time.monotonic() - start < 10, "checked before any model is loaded"


def test_defend_unwritable_out_fails_before_any_work(capsys):
    start = time.monotonic()
    assert main(["defend", "--defense", "median", "--attack", "pgd", "--out", "/proc/advbridge/d"]) == 2
    assert capsys.readouterr().err.startswith("error: cannot write outputs to /proc/advbridge/d")
    assert time.monotonic() - start < 10

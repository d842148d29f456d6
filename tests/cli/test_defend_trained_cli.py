"""``cli.py defend`` with a training-time defense, end to end on the committed classifier (as the undefended
twin) and tiny trainings of our and ART's trainer: the tables, the files, the cards, one-line errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from advbridge.cli import main

TINY = ["--n", "16", "--train-epochs", "1", "--train-max", "256", "--restarts", "2", "--quiet"]


def test_defend_adv_pgd_trains_both_libraries_and_evaluates_every_mode(tmp_path, capsys, mnist_workload):
    out = tmp_path / "adv"
    argv = ["defend", "--defense", "adv-pgd", "--train-steps", "3", "--attack", "pgd", "--steps", "5"]
    argv += ["--libraries", "own", "--defense-libraries", "own,art", "--from-undefended", "--no-autoattack"]
    assert main([*argv, *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(f"{out}.csv")
    assert set(table["defense_library"]) == {"undefended", "own", "art"}
    assert (table["defense"] == "adv-pgd (Linf eps 0.3, 3 × 0.25)").all() and (table["eps"] == 0.3).all()
    for library, group in table.groupby("defense_library"):
        modes = set(group["mode"])
        expected = {"none", "white-box", "adaptive", "worst-case"} | (
            {"transfer"} if library != "undefended" else set()
        )
        assert modes == expected, library
        assert (group["status"] == "ok").all(), group[["mode", "reason"]]
        worst = group.loc[group["mode"] == "worst-case", "robust_acc"].item()
        assert worst <= group.loc[group["mode"] != "none", "robust_acc"].min() + 1e-12
    adaptive = table[(table["mode"] == "adaptive") & (table["defense_library"] == "undefended")]
    assert adaptive["attack"].str.startswith("pgd-margin (2 restarts").all()
    assert adaptive["robust_acc"].item() <= 0.1  # the plain model at L∞ 0.3
    info = json.loads((tmp_path / "adv.json").read_text())
    assert info["cards"]["art"]["defense"]["trainer"] == "art" and "trainer" not in info["cards"]["own"]["defense"]
    assert info["cards"]["own"]["config"]["weights"].endswith("model.safetensors")  # --from-undefended
    assert info["files"] == ["adv.csv", "adv.md", "adv.json", "adv.png"]
    for name in info["files"]:
        assert (tmp_path / name).stat().st_size > 0 and str(tmp_path / name) in printed


def test_defend_fgsm_training_reports_the_catastrophic_overfitting_check(tmp_path, capsys, mnist_workload):
    argv = ["defend", "--defense", "adv-fgsm-rs", "--attack", "pgd", "--steps", "5", "--libraries", "own"]
    assert main([*argv, "--defense-libraries", "own", "--no-autoattack", *TINY, "--out", str(tmp_path / "f")]) == 0
    printed = capsys.readouterr().out
    assert "own: no catastrophic overfitting (FGSM accuracy" in printed or "own: CATASTROPHIC OVERFITTING" in printed
    checks = json.loads((tmp_path / "f.json").read_text())["checks"]["own"]
    assert checks["gap"] == pytest.approx(checks["fgsm_acc"] - checks["pgd_acc"])
    table = pd.read_csv(tmp_path / "f.csv")
    assert "fgsm" in set(table.loc[table["mode"] == "adaptive", "attack"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--defense", "adv-pgd", "--defense-libraries", "foolbox"], "foolbox cannot train adv-pgd"),
        (["--defense", "distill", "--temperature", "0"], "expected --temperature as a finite number > 0, got 0.0"),
        (["--defense", "adv-fgsm", "--ratio", "1.5"], "expected --ratio as a finite number in (0, 1], got 1.5"),
        (["--defense", "adv-pgd", "--train-eps", "0"], "expected --train-eps as a finite number > 0"),
        (["--defense", "adv-pgd", "--restarts", "0"], "expected --restarts as an int >= 1, got 0"),
        (["--defense", "adv-fgsm-rs", "--train-step-size", "0.1", "--defense-libraries", "art"], "1.25·eps"),
    ],
)
def test_defend_trained_bad_input_exits_2_with_one_line(extra, message, capsys, mnist_workload, tmp_path):
    assert main(["defend", "--attack", "pgd", *extra, "--n", "4", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())


def test_a_training_forced_to_fail_is_named_in_the_report_and_flags_every_row(tmp_path, capsys, caplog, mnist_workload):
    argv = ["defend", "--defense", "adv-pgd", "--train-steps", "3", "--attack", "pgd", "--steps", "5"]
    argv += ["--libraries", "own", "--defense-libraries", "own", "--no-autoattack", "--train-lr", "100"]
    assert main([*argv, *TINY, "--out", str(tmp_path / "fail")]) == 0
    table = pd.read_csv(tmp_path / "fail.csv")
    own, twin = table[table["defense_library"] == "own"], table[table["defense_library"] == "undefended"]
    assert len(own) >= 4 and own["flags"].str.split(",").apply(lambda f: "failed_training" in f).all()
    assert (own["failed_training"] < 0.05).all()
    assert not twin["flags"].fillna("").str.contains("failed_training").any() and (twin["failed_training"] > 0.8).all()
    report = (tmp_path / "fail.md").read_text()
    assert "No defense was evaluated for the own model" in report and "— did not learn" in report
    assert "- undefended: clean test accuracy" in report
    assert any("(adv-pgd, own trainer) did not learn" in r.getMessage() for r in caplog.records)


def test_train_warns_when_the_model_did_not_learn(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("ADVBRIDGE_CACHE", str(tmp_path))
    argv = ["train", "--defense", "adv-fgsm", "--lr", "100", "--epochs", "1", "--max-train", "256", "--quiet"]
    assert main(argv) == 0
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING" and "did not learn" in r.getMessage()]
    assert warning.getMessage().startswith("advbridge_mnist_cnn on mnist-5k (adv-fgsm, own trainer) did not learn (")

"""``cli.py defend`` with a training-time defense, end to end on the committed classifier (as the undefended
twin) and tiny trainings of our and ART's trainer: the tables, the files, the cards, one-line errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from advbridge.cli import main
from advbridge.own_attacks import fgsm
from advbridge.zoo.training import load_trained

TINY = ["--n", "16", "--train-epochs", "1", "--train-max", "256", "--restarts", "2", "--quiet"]


@pytest.mark.slow
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


@pytest.mark.slow
def test_defend_fgsm_training_reports_the_catastrophic_overfitting_check(tmp_path, capsys, model_cache, mnist_batch):
    """FGSM-RS fine-tuning of the committed classifier, evaluated at L∞ 0.1 (at 0.3 every attack leaves 0 of the
    16 digits and the check compares nothing; measured: FGSM 0.750, PGD 0.688)."""
    argv = ["defend", "--defense", "adv-fgsm-rs", "--attack", "pgd", "--eps", "0.1", "--steps", "5"]
    argv += ["--libraries", "own", "--defense-libraries", "own", "--no-autoattack", "--from-undefended"]
    assert main([*argv, *TINY, "--out", str(tmp_path / "f")]) == 0
    printed = capsys.readouterr().out
    info = json.loads((tmp_path / "f.json").read_text())
    checks = info["checks"]["own"]
    fgsm_acc, pgd_acc = checks["fgsm_acc"], checks["pgd_acc"]
    # the check's numbers are the table's adaptive rows of the trained model
    table = pd.read_csv(tmp_path / "f.csv")
    adaptive = table[(table["defense_library"] == "own") & (table["mode"] == "adaptive")].set_index("attack")
    assert fgsm_acc == pytest.approx(adaptive.loc["fgsm", "robust_acc"])
    (pgd_row,) = [name for name in adaptive.index if name.startswith("pgd-margin (2 restarts × 5 steps")]
    assert pgd_acc == pytest.approx(adaptive.loc[pgd_row, "robust_acc"])
    # FGSM's robust accuracy recomputed here: the trained model from the cache (the card's weights), FGSM at
    # L∞ 0.1 on the same 16 digits, robust where the clean and the adversarial predictions are right
    (folder,) = (model_cache / "models").glob(f"*-{info['cards']['own']['config_key']}")
    model, card = load_trained(folder)
    assert card["sha256"] == info["cards"]["own"]["sha256"]
    x, y = mnist_batch[0][:16], mnist_batch[1][:16]
    x_adv = fgsm(model, x, y, eps=0.1)
    with torch.no_grad():
        right = (model(x).argmax(1) == y) & (model(x_adv).argmax(1) == y)
    assert fgsm_acc == pytest.approx(float(right.double().mean())) and 0 < fgsm_acc < 1
    # at the same eps on the same model, margin PGD from 2 random starts leaves no more digits than one FGSM step
    assert pgd_acc <= fgsm_acc
    # the verdict is Wong et al.'s rule (a gap over the threshold and PGD accuracy under half of FGSM's) on
    # those numbers, and the printed line says it
    flagged = fgsm_acc - pgd_acc > checks["threshold"] and pgd_acc < fgsm_acc / 2
    assert checks["catastrophic_overfitting"] is flagged
    verdict = "CATASTROPHIC OVERFITTING" if flagged else "no catastrophic overfitting"
    assert f"own: {verdict} (FGSM accuracy {fgsm_acc:.3f}, PGD {pgd_acc:.3f})" in printed.splitlines()


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_train_warns_when_the_model_did_not_learn(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("ADVBRIDGE_CACHE", str(tmp_path))
    argv = ["train", "--defense", "adv-fgsm", "--lr", "100", "--epochs", "1", "--max-train", "256", "--quiet"]
    assert main(argv) == 0
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING" and "did not learn" in r.getMessage()]
    assert warning.getMessage().startswith("advbridge_mnist_cnn on mnist-5k (adv-fgsm, own trainer) did not learn (")

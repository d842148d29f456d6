"""The study engine: cells run into one folder, a killed study resumes to the same report, bad input exits 2."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from advbridge.bridge.defense_spec import DefenseSpec
from advbridge.bridge.errors import CheckpointError
from advbridge.bridge.spec import AttackSpec, Norm
from advbridge.experiments.defend.squeezers import run_defend
from advbridge.experiments.engine import EvaluationOptions
from advbridge.experiments.studies.engine import Study, StudyCell, run_study
from advbridge.experiments.studies.report import REPORT_FILES, summarize, write_report

ROOT = Path(__file__).resolve().parents[2]


class Killed(Exception):
    pass


def tiny_study(workload, calls: list[str], kill_at: str | None = None, steps: int = 10) -> Study:
    """Two squeezers × FGSM / DeepFool on 16 committed-fixture digits; ``calls`` records the cells run."""
    small = replace(workload, x=workload.x[:16], y=workload.y[:16])
    attacks = {"FGSM": AttackSpec(attack="fgsm", norm=Norm.LINF, eps=0.3),
               "DeepFool": AttackSpec(attack="deepfool", norm=Norm.L2, steps=steps)}  # fmt: skip
    defenses = {
        "1-bit depth": DefenseSpec(defense="bit-depth", bits=1),
        "median": DefenseSpec(defense="median", size=2),
    }
    cells = []
    for label, given in defenses.items():
        spec = given.resolved("mnist")
        for attack_label, attack in attacks.items():
            name = f"{spec.defense}-{attack.attack}"

            def run(prefix, spec=spec, attack=attack, name=name):
                if name == kill_at:
                    raise Killed(name)
                calls.append(name)
                table, _, _ = run_defend(
                    spec, attack, small, EvaluationOptions(["own"]), defense_libraries=["own"], out=prefix
                )
                return table

            cells.append(StudyCell(name, attack_label, run, lambda row, label=label: label))
    return Study(
        name="tiny", title="tiny", cells=cells, key={"steps": steps}, defenses=list(defenses),
        attacks=list(attacks), published={("median", "DeepFool"): 50.0}, notes=["16 digits"],
    )  # fmt: skip


@pytest.mark.slow
def test_killed_study_resumes_to_the_same_report(mnist_workload, tmp_path):
    whole, calls = tmp_path / "whole", []
    run_study(tiny_study(mnist_workload, calls), whole)
    write_report(tiny_study(mnist_workload, []), whole)
    assert calls == ["bit-depth-fgsm", "bit-depth-deepfool", "median-fgsm", "median-deepfool"]

    killed, first = tmp_path / "killed", []
    with pytest.raises(Killed):
        run_study(tiny_study(mnist_workload, first, kill_at="median-fgsm"), killed)
    assert first == ["bit-depth-fgsm", "bit-depth-deepfool"]
    resumed = []
    ran, skipped = run_study(tiny_study(mnist_workload, resumed), killed, resume=True)
    assert resumed == ran == ["median-fgsm", "median-deepfool"]  # no finished cell recomputed
    assert skipped == ["bit-depth-fgsm", "bit-depth-deepfool"]
    write_report(tiny_study(mnist_workload, []), killed)
    for name in ("report", "results", "eps"):
        assert (whole / REPORT_FILES[name]).read_text() == (killed / REPORT_FILES[name]).read_text(), name
    assert (killed / REPORT_FILES["bars"]).stat().st_size > 0 and (killed / REPORT_FILES["curves"]).stat().st_size > 0

    results = pd.read_csv(whole / REPORT_FILES["results"])
    assert {"study", "study_defense", "study_attack", "library_version", "torch_version", "flags"} <= set(results)
    bit_fgsm = summarize(results, "1-bit depth", "FGSM")
    # the naive white-box attack on rounding sees zero gradients: flagged, with the measured share
    assert bit_fgsm["flags"].get("zero_grad_share") == 1.0
    report = (whole / REPORT_FILES["report"]).read_text()
    assert "| 1-bit depth |" in report and "zero_grad_share 1 " in report
    assert re.search(r"(?<![\d.])50\.0 / ", report), report  # not "150.0 /"


@pytest.mark.slow
def test_resume_with_other_settings_is_refused_and_a_fresh_run_starts_over(mnist_workload, tmp_path):
    calls = []
    run_study(tiny_study(mnist_workload, calls), tmp_path, only=["median-fgsm"])
    with pytest.raises(CheckpointError, match="steps"):
        run_study(tiny_study(mnist_workload, calls, steps=5), tmp_path, resume=True)
    assert json.loads((tmp_path / "study.json").read_text())["steps"] == 10
    report = write_report(tiny_study(mnist_workload, []), tmp_path)[2].read_text()
    assert re.search(r"(?<!\d)1 of 4 cells finished", report) and "not run" in report
    again = []
    run_study(tiny_study(mnist_workload, again), tmp_path, only=["bit-depth-fgsm"])  # no --resume: from scratch
    assert not (tmp_path / "cells" / "median-fgsm.done").exists() and again == ["bit-depth-fgsm"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, expected",
    [
        (["nope"], "unknown study"),
        (["cifar10-fs-at", "--scale", "0"], "expected --scale as a finite number > 0, got 0.0"),
        (["cifar10-fs-at", "--n", "0"], "expected --n as an int >= 1, got 0"),
        (["cifar10-fs-at", "--only", "x"], "unknown cell of cifar10-fs-at 'x'"),
        (["cifar10-fs-at", "--only", ","], "expected at least one cell of cifar10-fs-at"),
        (["cifar10-fs-at", "--libraries", ","], "expected at least one library"),
        (["animals10-fs-dd", "--dataset", "cifar10"], "study dataset"),
        (["mnist-cifar10-vae", "--data-root", "/nonexistent/data"], "/nonexistent/data"),
    ],
)
def test_bad_study_input_exits_2_with_one_line(args, expected, tmp_path):
    """Refused in one line, and the study folder stays as it was: here, an earlier study's files untouched."""
    earlier = tmp_path / "s"
    (earlier / "cells").mkdir(parents=True)
    (earlier / "cells" / "old.done").write_text("finished\n")
    (earlier / "study.json").write_text('{"study": "old"}\n')
    before = sorted((p.relative_to(tmp_path), p.read_bytes() if p.is_file() else b"") for p in tmp_path.rglob("*"))
    proc = subprocess.run(
        [sys.executable, "cli.py", "study", *args, "--out", str(earlier), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    after = sorted((p.relative_to(tmp_path), p.read_bytes() if p.is_file() else b"") for p in tmp_path.rglob("*"))
    assert after == before


@pytest.mark.slow
def test_a_refused_study_in_a_new_folder_leaves_no_folder(tmp_path):
    out = tmp_path / "results" / "study"
    proc = subprocess.run(
        [sys.executable, "cli.py", "study", "mnist-cifar10-vae", "--data-root", str(tmp_path / "none"), "--out",
         str(out), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "MNIST" in proc.stderr, proc.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_a_truncated_study_key_is_refused_in_one_line(tmp_path):
    (tmp_path / "s" / "cells").mkdir(parents=True)
    (tmp_path / "s" / "study.json").write_text('{"study": "cifar10-fs')
    proc = subprocess.run(
        [sys.executable, "cli.py", "study", "cifar10-fs-at", "--resume", "--out", str(tmp_path / "s"), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "cannot read the study's key" in lines[0], proc.stderr


def test_the_report_shows_no_robustness_for_a_model_that_did_not_learn():
    from advbridge.experiments.studies.report import checks_markdown, models_markdown, pivot_markdown

    def row(defense, mode, robust, flags=""):
        return {"study_defense": defense, "study_attack": "PGD", "status": "ok", "mode": mode, "robust_acc": robust,
                "flags": flags, "failed_training": -0.03 if flags else 0.88}  # fmt: skip

    results = pd.DataFrame(
        [row("none", "none", 0.98), row("none", "white-box", 0.0)]
        + [row("PGD training", m, 0.07, "failed_training") for m in ("none", "transfer", "white-box")]
    )
    study = Study("s", "t", [], {}, defenses=["none", "PGD training"], attacks=["PGD"])
    pivot = pivot_markdown(study, results)
    assert "| PGD training | 7.0 | no defense evaluated: a model did not learn (⚑ failed_training -0.03) |" in pivot
    assert "| none | 98.0 | 0.0 / 0.0 / — |" in pivot
    assert "PGD training × PGD: no defense was evaluated" in checks_markdown(study, results)
    cards = {
        "undefended": {"num_classes": 10, "accuracy": 0.98},
        "adv-pgd (own)": {"num_classes": 10, "accuracy": 0.075},
    }
    models = models_markdown(cards).splitlines()
    assert models[0] == "- undefended: clean test accuracy 98.0 %"
    assert models[1].startswith("- adv-pgd (own): clean test accuracy 7.5 % — **did not learn** (clean test accuracy")


@pytest.mark.parametrize("name", ["cifar10-fs-at", "animals10-fs-dd", "mnist-cifar10-vae"])
def test_every_cell_of_every_study_has_its_defended_system_for_the_audit(name):
    """``audit --study NAME --cell CELL`` needs each cell's ``system()``; building the study trains nothing."""
    from advbridge.experiments.studies.catalog import build_study

    study = build_study(name)
    assert study.cells and all(callable(cell.system) for cell in study.cells), [c.name for c in study.cells]


def test_a_study_audit_is_refused_before_any_model_is_built(tmp_path, capsys):
    from advbridge.cli import main

    assert main(["audit", "--study", "mnist-cifar10-vae", "--cell", "nope", "--study-dir", str(tmp_path)]) == 2
    assert "mnist-vae-purify-pgd" in capsys.readouterr().err
    assert main(["audit", "--cell", "mnist-vae-purify-pgd"]) == 2
    assert main(["audit", "--study", "mnist-cifar10-vae", "--cell", "mnist-vae-purify-pgd", "--defense", "median"]) == 2
    (tmp_path / "study.json").write_text('{"study": "cifar10-fs-at"}')
    assert main(["audit", "--study", "mnist-cifar10-vae", "--cell", "mnist-vae-purify-pgd", "--study-dir",
                 str(tmp_path)]) == 2  # fmt: skip
    assert "study.json is study 'cifar10-fs-at'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.json"]

"""The command line: the compare table end to end, the support matrix, and one-line user errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from advbridge.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.usefixtures("deterministic")
def test_compare_pgd_writes_table_csv_markdown_and_figure(tmp_path, capsys, mnist_workload):
    out = tmp_path / "cmp"
    code = main(["compare", "--attack", "pgd", "--n", "16", "--steps", "5", "--out", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    # the printed table, row by row: its first column is the library (a substring test would take "own" from
    # "unknown" and "art" from "start"), its third the status
    lines = printed.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["library", "version", "status"])
    rows = [line.split() for line in lines[header + 1 : header + 6]]
    assert [row[0] for row in rows] == ["own", "art", "foolbox", "torchattacks", "advlib"], printed
    assert all(row[2] == "ok" for row in rows), printed
    table = pd.read_csv(out.with_suffix(".csv"))
    assert list(table["library"]) == ["own", "art", "foolbox", "torchattacks", "advlib"]
    assert (table["status"] == "ok").all()
    assert table.loc[table.library == "torchattacks", "max_abs_diff_vs_own"].item() == 0.0
    assert table.loc[table.library == "own", "success_agreement_vs_own"].item() == 1.0
    assert (table["eps"] == 0.3).all(), "mnist's standard L∞ budget is the default eps"
    assert out.with_suffix(".md").read_text().count("|") > 20
    assert out.with_suffix(".png").stat().st_size > 5000


@pytest.mark.usefixtures("deterministic")
def test_compare_marks_unsupported_rows(tmp_path, mnist_workload):
    out = tmp_path / "fgsm"
    assert main(["compare", "--attack", "fgsm", "--n", "8", "--eps", "0.1", "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out.with_suffix(".csv")).set_index("library")
    assert table.loc["advlib", "status"] == "unsupported"
    assert "no FGSM" in table.loc["advlib", "reason"]
    assert table.loc["art", "max_abs_diff_vs_own"] == 0.0


def test_list_prints_the_matrix(capsys):
    assert main(["list"]) == 0
    printed = capsys.readouterr().out
    assert "fgsm Linf" in printed and "no: adv-lib has no FGSM" in printed
    rows = {line.split()[0]: line.split()[1:] for line in printed.splitlines() if line.strip()}
    assert rows["median"] == ["squeezer", "yes", "yes", "-", "-", "-"]  # own and ART's median filter
    assert rows["adv-pgd"] == ["training", "yes", "yes", "-", "-", "-"] and rows["vae-purify"][1:3] == ["yes", "-"]
    assert rows["mnist-5k"][:3] == ["mnist", "10", "1×28×28"] and "imagefolder:PATH" in rows
    assert "path/to/file.py:factory" in rows and "package.module:factory" in rows


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare", "--attack", "pgdd"], "unknown attack 'pgdd'; did you mean 'pgd'"),
        (
            ["compare", "--attack", "pgd", "--libraries", "own,fooolbox"],
            "unknown library 'fooolbox'; did you mean 'foolbox'",
        ),
        (["compare", "--attack", "pgd", "--dataset", "mnits"], "unknown dataset 'mnits'"),
        (["compare", "--attack", "pgd", "--model", "resnet181"], "unknown model 'resnet181'"),
        (
            ["compare", "--attack", "pgd", "--eps", "0"],
            "expected --eps as a finite number > 0 (a fraction such as 8/255 too), got '0'",
        ),
        (
            ["compare", "--attack", "pgd", "--eps", "-0.1"],
            "expected --eps as a finite number > 0 (a fraction such as 8/255 too), got '-0.1'",
        ),
        (
            ["compare", "--attack", "pgd", "--eps", "eight"],
            "expected --eps as a finite number > 0 (a fraction such as 8/255 too), got 'eight'",
        ),
        (["compare", "--attack", "pgd", "--norm", "L3"], "unknown norm 'L3'"),
        (["compare", "--attack", "pgd", "--steps", "0"], "expected --steps as an int >= 1, got 0"),
        (["compare", "--attack", "pgd", "--n", "0"], "expected --n as an int >= 1, got 0"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err, err
    assert "\n" not in err and "Traceback" not in err


@pytest.mark.slow
def test_bad_input_from_a_shell_has_no_traceback():
    proc = subprocess.run(
        [sys.executable, "cli.py", "compare", "--attack", "fgsmm"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: unknown attack 'fgsmm'; did you mean 'fgsm'? accepted: ddn, deepfool, fgsm, pgd"
    )


def test_train_reuses_the_cached_model_and_prints_its_folder(capsys, mnist_workload):
    assert main(["train", "--dataset", "mnist-5k", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"test accuracy {mnist_workload.card['accuracy']:.4f}" in printed
    folder = Path(printed.split("checkpoint: ")[1].strip())
    assert (folder / "card.json").exists() and (folder / "model.safetensors").exists()


@pytest.mark.parametrize("command", ["", "compare", "defend", "train", "study", "list"])
def test_help_answers_without_importing_torch_or_pandas(command):
    cli = ROOT / "cli.py"
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(cli), *([command] if command else []), "--help"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0 and "usage:" in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & {"torch", "pandas", "numpy"}, sorted(imported & {"torch", "pandas", "numpy"})
    if command in ("compare", "defend", "train", "study"):  # every default is shown
        assert "--n N " in proc.stdout or "(default: " in proc.stdout
        assert proc.stdout.count("(default: ") >= 5, proc.stdout
    if not command:
        assert "--version" in proc.stdout and "examples:" in proc.stdout and "adv-lib" in proc.stdout

"""Outputs never lose results: one prefix, distinct files, checked before any work, the user's umask."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from advbridge.bridge.errors import OutputError
from advbridge.bridge.io import OutputPrefix, atomic_write_text
from advbridge.cli import main
from advbridge.experiments.compare import OUTPUT_TAILS, PROGRESS_TAIL

ROOT = Path(__file__).resolve().parents[2]
DEEPFOOL = ["compare", "--attack", "deepfool", "--n", "8", "--libraries", "own,advlib", "--quiet"]
MINIMAL_FILES = {
    ".csv",
    "-timing.csv",
    "-samples.csv",
    ".md",
    ".json",
    ".png",
    "-eps.csv",
    "-eps.md",
    "-robust.png",
    "-norms.png",
}


def _written(printed: str) -> list[Path]:
    (line,) = [line for line in printed.splitlines() if line.startswith("wrote ")]
    return [Path(p) for p in line.removeprefix("wrote ").split(", ")]


def test_every_output_of_a_run_has_its_own_path():
    assert len(set(OUTPUT_TAILS)) == len(OUTPUT_TAILS) and PROGRESS_TAIL not in OUTPUT_TAILS
    prefix = OutputPrefix.parse("results/x.csv")
    assert len(set(prefix.files(OUTPUT_TAILS))) == len(OUTPUT_TAILS)
    with pytest.raises(ValueError, match="share a path"):
        prefix.files([".csv", ".md", ".csv"])


@pytest.mark.parametrize(
    ("out", "prefix"),
    [
        ("results/x", "results/x"),
        ("results/x.csv", "results/x"),
        ("results/x.MD", "results/x"),
        ("results/x.png", "results/x"),
        ("results/run.v2", "results/run.v2"),  # a dot in the name is not an extension we write
        ("results/", "results/compare"),
    ],
)
def test_out_is_parsed_as_a_prefix(out, prefix):
    assert OutputPrefix.parse(out, default_name="compare").prefix == Path(prefix)
    assert OutputPrefix.parse(out, default_name="compare").file("-eps.csv") == Path(prefix + "-eps.csv")


@pytest.mark.parametrize(
    "out",
    [pytest.param("x.csv", marks=pytest.mark.slow), pytest.param("x", marks=pytest.mark.slow), "new/deeper/x"],
    ids=["with-csv", "without-extension", "missing-folder"],  # the parsing of each: test_out_is_parsed_as_a_prefix
)
def test_compare_writes_every_file_once_and_prints_what_it_wrote(tmp_path, capsys, mnist_workload, out):
    assert main([*DEEPFOOL, "--out", str(tmp_path / out)]) == 0
    paths = _written(capsys.readouterr().out)
    stem = tmp_path / out.removesuffix(".csv")
    assert {str(p).removeprefix(str(stem)) for p in paths} == MINIMAL_FILES
    assert len(set(paths)) == len(paths) and all(p.is_file() for p in paths)
    on_disk = {p for p in stem.parent.iterdir() if p.is_file()}
    assert on_disk == set(paths), "no other file (no stray temporary file, no progress folder) is left"
    results = pd.read_csv(stem.with_name(stem.name + ".csv"))
    assert list(results["library"]) == ["own", "advlib", "worst-case"], "the results table, not the eps grid"
    grid = pd.read_csv(stem.with_name(stem.name + "-eps.csv"))
    assert list(grid["library"]) == ["own", "advlib", "worst-case"] and len(grid.columns) == 7


@pytest.mark.slow
def test_a_later_run_on_the_same_prefix_says_which_files_are_its_own(tmp_path, capsys, mnist_workload, caplog):
    out = tmp_path / "run"
    assert main([*DEEPFOOL, "--out", str(out)]) == 0
    capsys.readouterr()
    eps_table = (tmp_path / "run-eps.csv").read_bytes()
    assert main(["compare", "--attack", "fgsm", "--n", "8", "--libraries", "own", "--quiet", "--out", str(out)]) == 0
    paths = _written(capsys.readouterr().out)
    own_files = {f"run{t}" for t in (".csv", "-timing.csv", ".md", ".json", "-samples.csv", ".png")}
    assert {p.name for p in paths} == own_files
    assert json.loads((tmp_path / "run.json").read_text())["files"] == sorted(
        own_files, key=[p.name for p in paths].index
    )
    assert set(pd.read_csv(out.with_suffix(".csv"))["attack"]) == {"fgsm"}
    # the earlier run's eps table is never deleted (another prefix, "run-eps", would own that name)
    assert (tmp_path / "run-eps.csv").read_bytes() == eps_table
    assert "not from this run, left as they were" in caplog.text and "run-eps.csv" in caplog.text


def test_default_out_depends_on_the_attack(tmp_path, capsys, mnist_workload, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "--attack", "fgsm", "--n", "4", "--libraries", "own", "--quiet"]) == 0
    assert main(["compare", "--attack", "pgd", "--steps", "2", "--n", "4", "--libraries", "own", "--quiet"]) == 0
    names = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert "compare-mnist-5k-fgsm-Linf.csv" in names and "compare-mnist-5k-pgd-Linf.csv" in names


@pytest.mark.slow
def test_unwritable_out_fails_in_seconds_before_any_attack(monkeypatch, capsys):
    import advbridge.experiments.workload

    def no_work(*args, **kwargs):
        raise AssertionError("a model was loaded although --out cannot be written")

    monkeypatch.setattr(advbridge.experiments.workload, "load_workload", no_work)
    assert main(["compare", "--attack", "pgd", "--out", "/proc/advbridge/x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot write outputs to /proc/advbridge/x") and "\n" not in err, err

    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "cli.py", "compare", "--attack", "deepfool", "--n", "1000", "--out", "/proc/advbridge/x.csv"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and time.monotonic() - start < 10
    assert proc.stdout == "" and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr


def test_out_that_is_a_file_path_in_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OutputError, match="expected --out in a writable folder"):
        OutputPrefix.parse(tmp_path / "file" / "x").check_writable()


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_written_files_follow_the_umask(tmp_path, umask):
    from advbridge.zoo.checkpoints import save_checkpoint
    from advbridge.zoo.models import create_classifier

    previous = os.umask(umask)
    try:
        path = atomic_write_text(tmp_path / "table.csv", "a,b\n")
        model = create_classifier("advbridge_mnist_cnn", num_classes=10, in_chans=1, mean=(0.5,), std=(0.5,))
        save_checkpoint(model, {"run": 1}, tmp_path / "ckpt")
    finally:
        os.umask(previous)
    for file in (path, tmp_path / "ckpt" / "card.json", tmp_path / "ckpt" / "model.safetensors"):
        assert stat.S_IMODE(file.stat().st_mode) == 0o666 & ~umask, file
    assert not list(tmp_path.glob(".*.tmp")) and not list((tmp_path / "ckpt").glob(".*.tmp"))


def test_compare_outputs_follow_the_umask(tmp_path, capsys, mnist_workload):
    previous = os.umask(0o002)
    try:
        assert (
            main(
                [
                    "compare",
                    "--attack",
                    "fgsm",
                    "--n",
                    "4",
                    "--libraries",
                    "own",
                    "--quiet",
                    "--out",
                    str(tmp_path / "r"),
                ]
            )
            == 0
        )
    finally:
        os.umask(previous)
    paths = _written(capsys.readouterr().out)
    assert paths and all(stat.S_IMODE(p.stat().st_mode) == 0o664 for p in paths)


def test_figure_names_the_classes_and_the_norms(tmp_path, mnist_workload, monkeypatch):
    import matplotlib.pyplot as plt

    from advbridge.bridge.spec import AttackSpec
    from advbridge.experiments.compare import compare_libraries, save_figure

    x, y = mnist_workload.x[:4], mnist_workload.y[:4]
    results = compare_libraries(mnist_workload.model, x, y, AttackSpec(attack="fgsm", eps=0.3), ["own", "art"])
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    path = save_figure(results, x, tmp_path / "fig")
    assert path == tmp_path / "fig.png" and path.stat().st_size > 5000
    (fig,) = figures
    labels = [ax.get_xlabel() for ax in fig.axes]
    own = results[0]
    for j in range(4):
        clean, adv = int(own.clean_pred[j]), int(own.adv_pred[j])
        assert labels[j] == f"pred {clean}"
        l2 = float((own.x_adv[j] - x[j]).norm())
        expected = f"{clean}→{adv}{' ✓' if bool(own.success[j] & own.clean_correct[j]) else ''}"
        assert labels[4 + j].startswith(expected + "\n") and f"L2 {l2:.3g}" in labels[4 + j], labels[4 + j]
        assert "L∞ 0.3" in labels[4 + j]
    assert any("✓" in label for label in labels), "FGSM eps 0.3 fools some of these digits"

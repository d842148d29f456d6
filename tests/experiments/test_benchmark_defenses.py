"""The squeezer speed benchmark runs in-process, writes every row, and finds ART bitwise equal to own."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from advbridge.experiments.bench.defenses import DEFENSE_LIBRARIES, SQUEEZER_PARAMS, main


def _run(tmp_path, capsys, *extra: str) -> tuple[pd.DataFrame, str]:
    out = tmp_path / "b"
    assert main(["--n", "16", "--repeats", "1", "--out", str(out), *extra]) == 0
    printed = capsys.readouterr().out
    assert (tmp_path / "b.md").is_file()
    return pd.read_csv(f"{out}.csv"), printed


def _check_table(table: pd.DataFrame) -> None:
    expected = {(s, p, lib) for s, params in SQUEEZER_PARAMS.items() for p in params for lib in DEFENSE_LIBRARIES}
    rows = list(zip(table["squeezer"], table["param"], table["library"]))
    assert set(rows) == expected and len(rows) == len(expected)
    assert (table["n"] == 16).all() and (table["seconds"] > 0).all()
    art = table[table["library"] == "art"]
    assert (art["bitwise_equal_to_own"] == True).all(), art  # noqa: E712 - read back from CSV as objects
    assert all(math.isfinite(v) and v > 0 for v in table["own_speedup"])
    assert (table.loc[table["library"] == "own", "own_speedup"] == 1.0).all()


@pytest.mark.usefixtures("deterministic")
def test_random_images(tmp_path, capsys):
    table, printed = _run(tmp_path, capsys, "--images", "random")
    _check_table(table)
    assert "seeded random 8-bit images" in printed and "torch threads" in printed
    assert "target own ≥ 3× ART, median 2" in printed


@pytest.mark.usefixtures("deterministic")
def test_exact_cifar10_images(tmp_path, capsys, shared_data):
    if not (shared_data / "cifar10_exact_partial" / "cifar10_exact_partial.npz").is_file():
        pytest.skip("exact CIFAR-10 images not in the shared data")
    table, printed = _run(tmp_path, capsys, "--images", "cifar10", "--data-root", str(shared_data))
    _check_table(table)
    assert "exact CIFAR-10 test images" in printed


def test_auto_falls_back_to_random_images(tmp_path, capsys):
    """No data in --data-root: random images, said so in the header; one squeezer only."""
    out = tmp_path / "b"
    assert (
        main(
            ["--n", "4", "--repeats", "1", "--squeezers", "bit-depth", "--data-root", str(tmp_path), "--out", str(out)]
        )
        == 0
    )
    header = (tmp_path / "b.md").read_text().splitlines()[0]
    assert "seeded random 8-bit images" in header and "no exact CIFAR-10 at" in header
    assert set(pd.read_csv(f"{out}.csv")["squeezer"]) == {"bit-depth"}


@pytest.mark.parametrize(
    "argv",
    [["--n", "0"], ["--repeats", "0"], ["--squeezers", "jpeg"], ["--images", "cifar10", "--data-root", "/nonexistent"]],
)
def test_bad_arguments_exit_2_with_one_line(argv, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "b.csv").exists()

"""The scripts behind the README's speed and agreement tables run and report what they measured."""

from __future__ import annotations

import pandas as pd
import pytest

from advbridge.experiments.bench.agreement import agreement_table
from advbridge.experiments.bench.attacks import benchmark
from advbridge.experiments.bench.attacks import main as benchmark_main


def test_benchmark_counts_passes_and_ranks_against_own(mnist_workload):
    table = benchmark(["fgsm", "deepfool"], n=8, repeats=1, libraries=["own", "advlib", "foolbox"])
    assert set(table["library"]) == {"own", "advlib", "foolbox"}
    assert list(table["library"][table["attack"] == "deepfool"]) == ["own", "foolbox", "advlib"]  # LIBRARIES order
    own = table[table["library"] == "own"].set_index("attack")
    assert (own["own_speedup"] == 1).all()
    assert own.loc["fgsm", "forward_per_image"] == 1 and own.loc["fgsm", "backward_per_image"] == 1
    # DeepFool: at least one step, nine candidate backwards per step on MNIST
    assert own.loc["deepfool", "backward_per_image"] >= 9
    assert (table["floor_seconds"] > 0).all() and (table["success"] == 1).all()
    fb = table[(table["library"] == "foolbox") & (table["attack"] == "deepfool")].iloc[0]
    assert fb["forward_per_image"] > own.loc["deepfool", "forward_per_image"]  # k forwards per step


def test_benchmark_writes_csv_and_markdown(mnist_workload, tmp_path, capsys):
    out = tmp_path / "bench"
    assert (
        benchmark_main(["--n", "4", "--repeats", "1", "--attacks", "fgsm", "--libraries", "own", "--out", str(out)])
        == 0
    )
    table = pd.read_csv(f"{out}.csv")
    assert list(table["library"]) == ["own"] and table["n"].item() == 4
    assert "4 images" in (tmp_path / "bench.md").read_text() and "images_per_s" in capsys.readouterr().out


@pytest.fixture(scope="module")
def agreement(mnist_workload):
    return agreement_table(n=8)


def test_agreement_in_the_references_layout_is_float_noise(agreement):
    default = agreement[agreement["own_layout"] == "default"]
    assert len(default) == 7  # DeepFool L2/L∞ × foolbox/adv-lib, DDN × foolbox/adv-lib, quantized DDN
    same_convention = default[default["comparison"].str.startswith("DeepFool")]
    assert (same_convention["max_abs_diff"] <= 1e-4).all(), same_convention
    ddn_advlib = default[default["comparison"].str.startswith("DDN") & (default["library"] == "advlib")]
    assert (ddn_advlib["max_abs_diff"] == 0).all(), ddn_advlib  # adv-lib's arithmetic: bitwise
    assert (agreement["compared"].dropna() >= 1).all()


def test_agreement_reports_own_success(agreement):
    success = agreement[agreement["library"] == "own"].set_index("comparison")["success"]
    assert len(success) == 2 and (success >= 0.99).all()


def test_agreement_pgd_rows(agreement):
    pgd_rows = agreement[agreement["comparison"].str.startswith("PGD L2")].set_index("library")
    assert sorted(pgd_rows.index) == ["foolbox", "foolbox", "torchattacks"]
    assert pgd_rows.loc["torchattacks", "max_abs_diff"] == 0, "own PGD L2 does torchattacks' arithmetic"
    smooth = pgd_rows[pgd_rows["comparison"].str.contains("smooth copy")]
    assert smooth["max_abs_diff"].item() <= 1e-5 and smooth["success_flags_equal"].item() == 1


@pytest.mark.parametrize("script", ["agreement", "benchmark"])
def test_scripts_refuse_an_unwritable_out_before_running(script, capsys, monkeypatch):
    import advbridge.experiments.bench.agreement
    import advbridge.experiments.bench.attacks

    module = {"agreement": advbridge.experiments.bench.agreement, "benchmark": advbridge.experiments.bench.attacks}[
        script
    ]
    monkeypatch.setattr(module, "load_workload", lambda *a, **k: pytest.fail("ran although --out is unwritable"))
    assert module.main(["--out", "/proc/advbridge/x.csv"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write outputs to /proc/advbridge/x") and err.count("\n") == 1

"""The scripts behind the README's speed and agreement tables run and report what they measured."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from advbridge.bridge.runner import Ran
from advbridge.cli import main as cli_main
from advbridge.experiments.bench import memory
from advbridge.experiments.bench.agreement import agreement_table
from advbridge.experiments.bench.attacks import bench_spec, benchmark, pass_seconds, target_lines


def _ran(library: str, spec, xs: torch.Tensor, x_adv: torch.Tensor, seconds: float) -> Ran:
    """A bench run's result as the runner returns it: every sample correct and fooled, one pass each way."""
    n, yes = len(xs), torch.ones(len(xs), dtype=torch.bool)
    zeros = torch.zeros(n)
    return Ran(
        library=library, version="0", spec=spec, seconds=seconds, forward_images=n, backward_images=n, x_adv=x_adv,
        clean_correct=yes, success=yes, clean_pred=zeros.long(), adv_pred=zeros.long() + 1, l2=zeros, linf=zeros,
    )  # fmt: skip


@pytest.mark.slow
def test_benchmark_counts_passes_and_ranks_against_own(mnist_workload):
    table = benchmark(
        mnist_workload, ["fgsm", "deepfool"], repeats=1, libraries=["own", "advlib", "foolbox"], min_seconds=0
    )
    assert (table["rounds"] == 1).all()
    assert set(table["library"]) == {"own", "advlib", "foolbox"}
    assert list(table["library"][table["attack"] == "deepfool"]) == ["own", "foolbox", "advlib"]  # LIBRARIES order
    own = table[table["library"] == "own"].set_index("attack")
    assert (own["own_speedup"] == 1).all()
    assert own.loc["fgsm", "fwd_per_image"] == 1 and own.loc["fgsm", "bwd_per_image"] == 1
    # DeepFool: at least one step, nine candidate backwards per step on MNIST
    assert own.loc["deepfool", "bwd_per_image"] >= 9
    assert (table["floor_seconds"] > 0).all() and (table["success_rate"] == 1).all()
    fb = table[(table["library"] == "foolbox") & (table["attack"] == "deepfool")].iloc[0]
    assert fb["fwd_per_image"] > own.loc["deepfool", "fwd_per_image"]  # k forwards per step
    # each row's floor is its own passes at the bare per-pass times of this run
    per_pass = table["floor_seconds"] / (table["fwd_per_image"] + table["bwd_per_image"])
    assert (table["vs_floor"] - table["seconds"] / table["floor_seconds"]).abs().max() < 1e-12
    assert per_pass.gt(0).all()


@pytest.mark.slow
def test_floor_runs_its_first_pass_on_the_clean_images_and_the_rest_on_the_returned_ones():
    """The attack's passes: the first on the clean images, the later ones on perturbed iterates (a pass's
    cost depends on its input), in both memory layouts."""
    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(12, 3)

        def forward(self, x):
            seen.append(float(x.detach().sum()))
            return self.linear(x.flatten(1))

    x, later, y = torch.zeros(2, 3, 2, 2), torch.ones(2, 3, 2, 2), torch.tensor([0, 1])
    forward, backward = pass_seconds(Recorder(), x, y, passes=3, later=later)
    assert seen == [0.0, 24.0, 24.0] * 2 and forward > 0 and backward > 0
    seen.clear()
    pass_seconds(Recorder(), x, y, passes=2)
    assert seen == [0.0, 0.0] * 2

    assert bench_spec("pgd", "mnist").eps == 0.3 and bench_spec("pgd", "mnist").step_size == pytest.approx(0.01)
    assert bench_spec("pgd-l2", "cifar10").eps == 0.5 and bench_spec("pgd-l2", "cifar10").step_size == 0.025
    assert bench_spec("fgsm", "cifar10").eps == pytest.approx(8 / 255)
    assert bench_spec("deepfool-linf", "cifar10").norm.value == "Linf" and bench_spec("ddn", "mnist").steps == 100


@pytest.mark.slow
def test_floor_later_passes_run_on_owns_images_whatever_the_order(mnist_workload, monkeypatch):
    """One set of images per attack for the floor: own's, whichever library a round ran first."""
    import advbridge.experiments.bench.attacks as bench

    marks = {"own": 0.25, "foolbox": 0.5, "advlib": 0.75}

    def fake_run(library, model, xs, ys, spec, num_classes):
        return _ran(library, spec, xs, torch.full_like(xs, marks[library]), seconds=9.0)

    seen = []

    def fake_floor(model, xs, ys, passes, later=None):
        seen.append(None if later is None else float(later.flatten()[0]))
        return 1.0, 1.0

    monkeypatch.setattr(bench, "run_attack", fake_run)
    monkeypatch.setattr(bench, "pass_seconds", fake_floor)
    bench.benchmark(mnist_workload, ["fgsm"], repeats=4, libraries=["foolbox", "advlib", "own"])
    assert seen == [None] + [0.25] * 4  # None: the warm-up, on the clean images
    seen.clear()
    bench.benchmark(mnist_workload, ["fgsm"], repeats=2, libraries=["foolbox", "advlib"])
    assert len(seen) == 3 and set(seen[1:]) <= {0.5, 0.75}


@pytest.mark.slow
def test_the_floor_is_timed_right_after_own_and_its_best_round_kept(mnist_workload, monkeypatch):
    """Own and the passes it needs, back to back in every round (the machine's speed drifts); the floor of the
    round with the fastest forward + backward pair prices every row."""
    import advbridge.experiments.bench.attacks as bench

    events, floors = [], iter([(0.3, 0.3), (0.1, 0.4), (0.2, 0.2)])

    def fake_run(library, model, xs, ys, spec, num_classes):
        events.append(library)
        return _ran(library, spec, xs, xs.clone(), seconds=9.0)

    def fake_floor(model, xs, ys, passes, later=None):
        events.append("floor")
        return next(floors) if later is not None else (9.0, 9.0)

    monkeypatch.setattr(bench, "run_attack", fake_run)
    monkeypatch.setattr(bench, "pass_seconds", fake_floor)
    table = bench.benchmark(mnist_workload, ["fgsm"], repeats=3, libraries=["foolbox", "advlib", "own", "art"])
    rounds = [events[1:][i : i + 5] for i in range(0, 15, 5)]  # after the warm-up: 4 libraries and the floor
    assert all(r[r.index("own") + 1] == "floor" and r.count("floor") == 1 for r in rounds), rounds
    assert len({tuple(r) for r in rounds}) > 1  # a new order each round
    assert (table["floor_seconds"] == 0.4).all()  # the third round's pair: 0.2 + 0.2, the least sum


@pytest.mark.slow
def test_a_short_attack_runs_more_rounds_until_own_was_timed_long_enough(mnist_workload, monkeypatch):
    """Best of a few 0.2 s windows is noise on a drifting machine: more rounds until own's runs add up to
    ``min_seconds``, never fewer than ``repeats``, never more than MAX_ROUNDS."""
    import advbridge.experiments.bench.attacks as bench

    runs, seconds = [], {}

    def fake_run(library, model, xs, ys, spec, num_classes):
        runs.append(library)
        return _ran(library, spec, xs, xs.clone(), seconds=seconds[library])

    monkeypatch.setattr(bench, "run_attack", fake_run)
    monkeypatch.setattr(bench, "pass_seconds", lambda *a, **k: (1.0, 1.0))

    def rounds(own: float, other: float, repeats: int, libraries=("own", "foolbox")) -> int:
        seconds.update(own=own, foolbox=other)
        runs.clear()
        table = bench.benchmark(mnist_workload, ["fgsm"], repeats=repeats, libraries=list(libraries), min_seconds=5.0)
        assert (table["rounds"] == runs.count(libraries[0])).all() and runs.count("foolbox") == len(runs) / len(
            libraries
        )
        return runs.count(libraries[0])

    assert rounds(own=0.5, other=0.1, repeats=2) == 10  # 10 × 0.5 s = 5 s
    assert rounds(own=2.0, other=0.1, repeats=2) == 3
    assert rounds(own=6.0, other=0.1, repeats=2) == 2  # never fewer than repeats
    assert rounds(own=0.01, other=9.0, repeats=1) == bench.MAX_ROUNDS
    assert rounds(own=0.01, other=1.0, repeats=1, libraries=("foolbox",)) == 5  # no own: the first library leads


def test_peak_memory_is_the_least_round_and_time_the_fastest(mnist_workload, monkeypatch):
    """Heap fragmentation only adds pages to a run's peak: each library keeps its leanest round's peak,
    whichever round that is, as it keeps its fastest round's time."""
    import advbridge.experiments.bench.attacks as bench

    rounds = {
        "own": iter([(3.0, 300.0), (2.0, 250.0), (4.0, 280.0)]),
        "foolbox": iter([(5.0, 200.0), (6.0, 260.0), (7.0, 240.0)]),
    }
    level = {"peak": 0.0}

    def fake_run(library, model, xs, ys, spec, num_classes):
        seconds, level["peak"] = next(rounds[library])
        return _ran(library, spec, xs, xs.clone(), seconds=seconds)

    monkeypatch.setattr(bench, "run_attack", fake_run)
    monkeypatch.setattr(bench, "pass_seconds", lambda *a, **k: (1.0, 1.0))
    monkeypatch.setattr(bench, "reset_peak_memory", lambda device: 100.0)
    monkeypatch.setattr(bench, "peak_memory", lambda device: 100.0 + level["peak"])
    table = bench.benchmark(mnist_workload, ["fgsm"], repeats=3, libraries=["own", "foolbox"]).set_index("library")
    assert table.loc["own", "seconds"] == 2.0 and table.loc["foolbox", "seconds"] == 5.0
    assert table.loc["own", "peak_mb"] == 250.0 and table.loc["foolbox", "peak_mb"] == 200.0
    assert table.loc["foolbox", "own_speedup"] == 2.5


def test_target_lines_say_met_or_not():
    table = pd.DataFrame(
        {
            "attack": ["fgsm", "fgsm", "deepfool", "deepfool"],
            "library": ["own", "art", "own", "foolbox"],
            "own_speedup": [1.0, 0.9, 1.0, 6.0],
            "vs_floor": [1.2, 1.5, 0.8, 4.0],
            "peak_mb": [100.0, 95.0, 50.0, 60.0],
        }
    )
    lines = target_lines(table)
    assert "NOT met (lowest: 0.90x vs art on fgsm)" in lines[0]
    assert lines[1].endswith("met (6.00x vs foolbox)") and "NOT" not in lines[1]
    assert lines[2] == "own fgsm vs_floor <= 1.10: NOT met (1.20)"
    assert "met (100 MB vs 95 MB)" in lines[3] and "NOT" not in lines[3]  # 100 / 95 <= 1.10
    assert "met (50 MB vs 60 MB)" in lines[4]


@pytest.mark.slow
def test_bench_command_writes_csv_and_markdown(mnist_workload, tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["bench", "--n", "4", "--repeats", "1", "--attacks", "fgsm", "--libraries", "own", "--out", str(out)]
    assert cli_main([*argv, "--quiet"]) == 0
    table = pd.read_csv(f"{out}.csv")
    assert list(table["library"]) == ["own"] and table["n"].item() == 4
    for column in ("images_per_s", "own_speedup", "fwd_per_image", "bwd_per_image", "vs_floor", "peak_mb"):
        assert column in table and table[column].notna().all(), column
    assert table["success_rate"].between(0, 1).all()
    markdown = (tmp_path / "bench.md").read_text()
    assert "4 images" in markdown and "ATen CPU capability" in markdown and "own fgsm vs_floor" in markdown
    assert "images_per_s" in capsys.readouterr().out
    if memory.applies(torch.device("cpu")):  # measured in a child process that found the model in the cache
        assert "peak_mb: live peak, one run of each in a separate process" in markdown
        assert table["peak_mb"].gt(0).all()


@pytest.fixture(scope="module")
def agreement(mnist_workload, deterministic_block):
    """The agreement table (bitwise and float-noise comparisons), computed under deterministic algorithms as
    ``experiments.bench.agreement.main`` computes it."""
    with deterministic_block():
        return agreement_table(n=8)


@pytest.mark.slow
def test_agreement_in_the_references_layout_is_float_noise(agreement):
    default = agreement[agreement["own_layout"] == "default"]
    assert len(default) == 7  # DeepFool L2/L∞ × foolbox/adv-lib, DDN × foolbox/adv-lib, quantized DDN
    same_convention = default[default["comparison"].str.startswith("DeepFool")]
    assert (same_convention["max_abs_diff"] <= 1e-4).all(), same_convention
    ddn_advlib = default[default["comparison"].str.startswith("DDN") & (default["library"] == "advlib")]
    assert (ddn_advlib["max_abs_diff"] == 0).all(), ddn_advlib  # adv-lib's arithmetic: bitwise
    assert (agreement["compared"].dropna() >= 1).all()


@pytest.mark.slow
def test_agreement_reports_own_success(agreement):
    success = agreement[agreement["library"] == "own"].set_index("comparison")["success"]
    assert len(success) == 2 and (success >= 0.99).all()


@pytest.mark.slow
def test_agreement_pgd_rows(agreement):
    pgd_rows = agreement[agreement["comparison"].str.startswith("PGD L2")].set_index("library")
    assert sorted(pgd_rows.index) == ["foolbox", "foolbox", "torchattacks"]
    assert pgd_rows.loc["torchattacks", "max_abs_diff"] == 0, "own PGD L2 does torchattacks' arithmetic"
    smooth = pgd_rows[pgd_rows["comparison"].str.contains("smooth copy")]
    assert smooth["max_abs_diff"].item() <= 1e-5 and smooth["success_flags_equal"].item() == 1


def test_agreement_script_refuses_an_unwritable_out_before_running(capsys, monkeypatch):
    import advbridge.experiments.bench.agreement as module

    monkeypatch.setattr(module, "load_workload", lambda *a, **k: pytest.fail("ran although --out is unwritable"))
    assert module.main(["--out", "/proc/advbridge/x.csv"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write outputs to /proc/advbridge/x") and err.count("\n") == 1

"""The audit end to end: quiet and tight on the plain CNN; each defense the literature broke is broken again, with
its cause named; propagations as the hooks count them, within a budget; optimality as AttackBench scores it."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from broken_defenses import BROKEN

from advbridge.experiments.audit.engine import NAIVE, AuditConfig, run_audit
from advbridge.experiments.audit.report import write_audit
from advbridge.experiments.audit.tables import distance_table, results_table

#: A small cascade: our attacks only (the libraries' agreement is tested elsewhere), short Square, few restarts.
SMALL = {"norm": "Linf", "eps": 0.3, "steps": 20, "libraries": ("own",), "autoattack": False, "square_queries": 50,
         "restarts": 2, "eot": 4}  # fmt: skip


@pytest.fixture(scope="module")
def batch(mnist_batch):
    x, y = mnist_batch
    return x[:24], y[:24]


@pytest.fixture(scope="module")
def plain(mnist_model, batch):
    x, y = batch
    return run_audit(mnist_model, x, y, AuditConfig(**{**SMALL, "libraries": ("own", "advlib")}))


@pytest.fixture(scope="module")
def every_point(mnist_model, batch):
    """The audit before the cascade: every row on every sample (agreement studies, AttackBench's optimality)."""
    x, y = batch
    return run_audit(mnist_model, x, y, AuditConfig(**{**SMALL, "libraries": ("own", "advlib")}, every_point=True))


def test_the_cascade_attacks_only_what_is_still_robust_and_keeps_the_exact_worst_case(plain, every_point):
    """Each row attacks the samples no earlier row broke (own PGD also its PROBES of own FGSM's broken ones); a
    sample it did not attack is not broken by it and costs it nothing; the worst case is every_point's."""
    from advbridge.experiments.audit.cascade import PROBES

    left = plain.clean.clone()
    for row in [r for r in plain.rows if r.ok]:
        assert row.asked is not None and row.robust is not None and row.forward is not None, row.key
        extra = row.asked & ~left
        assert int(extra.sum()) <= (PROBES if row.key == "pgd | own | naive" else 0), row.key
        assert bool(row.robust[plain.clean & ~row.asked].all()), row.key  # not attacked: not broken by it
        assert int((row.forward + row.backward)[~row.asked].sum()) == 0, row.key  # ... and no query spent on it
        left &= row.robust
    assert bool((left == plain.robust_under()).all())
    assert plain.robust_after == every_point.robust_after
    cascade, everything = plain.cost(), every_point.cost()
    assert cascade["propagations_per_sample"] * 4 <= everything["propagations_per_sample"], (cascade, everything)
    assert cascade["model_propagations_per_sample"] < everything["model_propagations_per_sample"]


def test_plain_cnn_raises_no_indicator_and_its_worst_case_is_the_best_single_attack(plain):
    raised = {name: r.value for name, r in plain.indicators.items() if r.raised}
    assert raised == {}
    assert plain.robust_after <= 0.05  # the twin of every broken defense below is itself broken
    best = float(plain.best_single.robust.double().mean())
    assert abs(plain.robust_after - best) <= 0.01
    assert {r.stage for r in plain.rows} == {NAIVE}  # nothing to remedy


def test_propagations_are_the_hooks_counts(every_point):
    rows = [r for r in every_point.rows if r.ok and r.attack != "pgd-transfer"]
    assert rows
    for row in rows:
        assert int(row.forward.sum()) == row.hook_forward, row.key
        assert int(row.backward.sum()) == row.hook_backward, row.key
    own_pgd = next(r for r in rows if r.key == "pgd | own | naive")
    assert own_pgd.forward.tolist() == [20] * len(own_pgd.forward)  # one forward and one backward per step
    assert own_pgd.backward.tolist() == [20] * len(own_pgd.backward)


def test_optimality_is_attackbench_s(every_point, reference):
    table = results_table(every_point).set_index(["attack", "library", "stage"])
    distances = distance_table(every_point)
    best = distances.min(axis=1).to_numpy()
    for key in distances.columns:
        attack, library, stage = (part.strip() for part in key.split("|"))
        expected = reference.eval_optimality(distances[key].to_numpy(), best, clean_acc=every_point.clean_accuracy)
        assert table.loc[(attack, library, stage), "optimality"] == pytest.approx(expected, abs=1e-6, nan_ok=True)


@pytest.mark.parametrize(
    ("name", "cause"),
    [
        # two in make test-fast (each indicator's measurement: tests/audit/test_indicators.py), all six in the
        # full suite
        pytest.param("quantized", "unavailable_gradients", marks=pytest.mark.slow),
        ("numpy", "unavailable_gradients"),
        pytest.param("resize_pad", "randomized", marks=pytest.mark.slow),
        pytest.param("noise", "randomized", marks=pytest.mark.slow),
        pytest.param("saturated", "saturated_softmax", marks=pytest.mark.slow),
        ("probabilities", "probability_outputs"),
    ],
)
def test_a_broken_defense_is_broken_again_and_its_cause_named(mnist_model, batch, name, cause):
    x, y = batch
    torch.manual_seed(0)
    system = BROKEN[name](mnist_model).eval()
    audit = run_audit(system, x, y, AuditConfig(**{**SMALL, "minimal": False}), surrogate=mnist_model)
    assert audit.clean_accuracy >= 0.6
    assert audit.robust_after <= 0.05, results_table(audit)[["attack", "stage", "robust_acc"]]
    indicator = audit.indicators[cause]
    assert indicator.raised and indicator.remedy
    assert any(cause in r.indicators for r in audit.rows), "the remedy ran"
    assert not audit.stayed_raised


def test_budget_caps_every_row(mnist_model, batch):
    x, y = batch
    budget = 30
    config = AuditConfig(**{**SMALL, "libraries": ("own", "advlib")}, budget=budget)
    audit = run_audit(mnist_model, x[:12], y[:12], config)
    table = results_table(audit)
    rows = table[table["stage"] != ""]
    assert (rows.loc[rows["status"] == "ok", "max_propagations"] <= budget).all(), rows
    own_pgd = next(r for r in audit.rows if r.key == "pgd | own | naive")
    assert own_pgd.asked is not None and own_pgd.asked.any()
    spent = (own_pgd.forward + own_pgd.backward)[own_pgd.asked]
    assert spent.tolist() == [28] * len(spent)  # steps fitted to the budget: 14 = 30 // 2 - 1
    assert all(r.ok for r in audit.rows if r.library == "own")


def test_files(plain, tmp_path):
    paths = write_audit(plain, tmp_path / "audit", {"model": "advbridge_mnist_cnn", "dataset": "mnist-5k"})
    names = sorted(p.name for p in paths)
    assert names == sorted(["audit.csv", "audit-samples.csv", "audit-indicators.csv", "audit.json",
                            "audit-card.json", "audit.md", "audit.png"])  # fmt: skip
    info = json.loads((tmp_path / "audit.json").read_text())
    assert info["clean_accuracy"] == pytest.approx(plain.clean_accuracy)
    assert info["worst_case_robust_accuracy"] == pytest.approx(plain.robust_after)
    assert set(info["indicators"]["silent_success"]) >= {"value", "threshold", "raised", "remedy"}
    samples = pd.read_csv(tmp_path / "audit-samples.csv")
    assert list(samples.columns) == ["sample", "attack", "library", "stage", "distance"]
    ok_rows = [r for r in plain.rows if r.ok]
    assert len(samples) == len(ok_rows) * len(plain.clean)
    pgd = samples[(samples["attack"] == "pgd") & (samples["library"] == "own")].sort_values("sample")
    expected = next(r for r in ok_rows if r.key == "pgd | own | naive").distance.numpy()
    np.testing.assert_allclose(pgd["distance"].to_numpy(), expected)
    table = pd.read_csv(tmp_path / "audit.csv")
    assert {"optimality", "propagations", "max_propagations", "stage"} <= set(table.columns)
    card = (tmp_path / "audit.md").read_text()
    assert any(line.startswith("**worst-case robust accuracy") for line in card.splitlines()[:10])  # headline
    assert not math.isnan(info["worst_case_robust_accuracy_naive"])
    ok = [r for r in plain.rows if r.ok]
    expected_cost = sum(float((r.forward + r.backward).double().mean()) for r in ok)
    assert info["cost"]["propagations_per_sample"] == pytest.approx(expected_cost) and info["cost"]["seconds"] > 0


def test_a_model_at_chance_is_never_reported_as_a_defense(batch):
    """An untrained network is "robust" to every attack that needs a wrong prediction to start from: the audit
    raises failed_training, keeps it raised (no remedy makes it learn), and its verdict says so."""
    x, y = batch
    torch.manual_seed(0)
    untrained = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()
    with torch.no_grad():
        untrained[1].weight.zero_()
    audit = run_audit(untrained, x, y, AuditConfig(**{**SMALL, "minimal": False}))
    assert audit.indicators["failed_training"].raised and "failed_training" in audit.stayed_raised
    from advbridge.experiments.audit.tables import verdict

    assert "did not learn" in verdict(audit)


def test_summary_of_audit_files(plain, tmp_path):
    from advbridge.experiments.audit.summary import summary

    write_audit(plain, tmp_path / "a", {"model": "advbridge_mnist_cnn", "audited": "advbridge_mnist_cnn"})
    table = summary([tmp_path / "a.json"])
    row = table.iloc[0]
    assert row["audited"] == "advbridge_mnist_cnn" and row["threat"] == "Linf 0.3" and row["n"] == 24
    assert row["worst case"] == pytest.approx(plain.robust_after)
    assert row["white-box naive"] == pytest.approx(plain.robust_white_box) and row["still raised"] == ""


@pytest.mark.slow
def test_the_project_s_purifier_given_as_a_module_is_broken_end_to_end(mnist_model, batch):
    """VAE purification (the committed generator) in front of the classifier, given to the audit as a module with
    its twin: differentiable end to end, so the white-box rows alone break it (Carlini & Wagner 2017, MagNet)."""
    from pathlib import Path

    from advbridge.defenses.generative import Purifier, load_generator
    from advbridge.defenses.preprocessor import PreprocessedClassifier

    vae = load_generator(Path(__file__).resolve().parents[1] / "fixtures" / "generators" / "vae")[0].eval()
    x, y = batch
    system = PreprocessedClassifier(Purifier(vae), mnist_model).eval()
    audit = run_audit(system, x, y, AuditConfig(**{**SMALL, "minimal": False}), surrogate=mnist_model)
    assert audit.clean_accuracy >= 0.6
    assert audit.robust_white_box <= 0.05 and audit.robust_after <= audit.robust_white_box


def test_autoattack_alone_that_fails_is_reported_not_raised(mnist_model, batch):
    """--versus-autoattack on a model whose gradient call raises (numpy preprocessing): AutoAttack alone fails as it
    would for the user; the audit reports the failure beside its own number instead of ending in a traceback."""
    from advbridge.experiments.audit.card import card
    from advbridge.experiments.audit.tables import cost_line

    x, y = batch[0][:8], batch[1][:8]
    system = BROKEN["numpy"](mnist_model).eval()
    config = AuditConfig(**{**SMALL, "minimal": False, "square_queries": 20, "binarization_samples": 0},
                         versus_autoattack=True)  # fmt: skip
    audit = run_audit(system, x, y, config, surrogate=mnist_model)
    alone = audit.autoattack_alone
    assert alone is not None and alone["robust_accuracy"] is None and "RuntimeError" in alone["failed"]
    assert "AutoAttack standard alone failed after" in cost_line(audit)
    assert card(audit)["autoattack_acc"] is None and "failed" in card(audit)["autoattack"]["measured"]
    assert audit.robust_after <= 0.25  # the audit's own rows (BPDA through the surrogate) still break it

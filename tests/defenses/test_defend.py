"""The defend engine on real MNIST digits and the committed classifier: every mode, the zero-gradient flag
of a naive attack on bit depth, BPDA beating it, the worst case, the detector's numbers, and PGD's
objective/success hooks that the detector-aware attack stands on."""

from __future__ import annotations

import pytest
import torch

from advbridge.bridge.defense_spec import DefenseSpec
from advbridge.bridge.errors import UnsupportedDefenseError
from advbridge.bridge.spec import AttackSpec
from advbridge.defenses.detector import SqueezeDetector
from advbridge.defenses.preprocessor import BitDepth, MedianFilter
from advbridge.experiments.core.losses import margin_loss
from advbridge.experiments.defend.adaptive import detector_aware_pgd
from advbridge.experiments.defend.squeezers import check_defense_libraries, run_defend
from advbridge.experiments.engine import EvaluationOptions
from advbridge.own_attacks import pgd

PGD = AttackSpec(attack="pgd", norm="Linf", eps=0.3, steps=10)


@pytest.fixture(scope="module")
def small(mnist_workload):
    """A 24-digit copy of the suite's workload."""
    from dataclasses import replace

    return replace(mnist_workload, x=mnist_workload.x[:24], y=mnist_workload.y[:24])


@pytest.fixture(scope="module")
def bit_depth_table(small):
    spec = DefenseSpec(defense="bit-depth", bits=3).resolved("mnist")  # 1 bit holds at 0.3 (see README)
    table, agreement, _ = run_defend(spec, PGD, small, EvaluationOptions(["own", "torchattacks"]))
    return table.set_index(["defense_library", "mode", "attack_library"]), agreement


def test_bit_depth_rows_show_masking_and_the_bpda_number(bit_depth_table):
    table, agreement = bit_depth_table
    white = table.loc[("own", "white-box", "own")]
    adaptive = table.loc[("own", "adaptive", "own")]
    clean = table.loc[("own", "none", "")]
    assert white["zero_grad_share"] == 1.0, "the exact gradient of rounding is zero on every digit"
    assert white["robust_acc"] == clean["robust_acc"], "so the naive attack cannot move"
    assert adaptive["zero_grad_share"] == 0.0 and adaptive["robust_acc"] < white["robust_acc"]
    worst = table.loc[("own", "worst-case", "all")]
    ran = table.xs("own", level=0).drop(index=[("none", ""), ("worst-case", "all")])
    assert worst["robust_acc"] <= ran["robust_acc"].min()
    # ART's FeatureSqueezing: BPDA only, its adaptive rows equal ours (same bits, same identity gradient)
    assert table.loc[("art", "white-box", "own"), "status"] == "unsupported"
    art_adaptive = table.loc[("art", "adaptive", "torchattacks")]
    assert art_adaptive["robust_acc"] == table.loc[("own", "adaptive", "torchattacks"), "robust_acc"]
    assert (agreement.query("status == 'ok'")["max_abs_diff_vs_own"] == 0).all()
    assert set(agreement.query("status == 'unsupported'")["library"]) == {"foolbox", "torchattacks", "advlib"}


def test_transfer_rows_attack_the_undefended_model(bit_depth_table, small):
    table, _ = bit_depth_table
    transfer = table.loc[("own", "transfer", "own")]
    plain = pgd(small.model, small.x, small.y, eps=0.3, steps=10)
    with torch.no_grad():
        squeezed = small.model(BitDepth(3)(plain)).argmax(1)
        clean_ok = small.model(BitDepth(3)(small.x)).argmax(1) == small.y
    assert transfer["robust_acc"] == pytest.approx(float((clean_ok & (squeezed == small.y)).double().mean()))


def test_detector_rows(small):
    spec = DefenseSpec(defense="squeeze-detect").resolved("mnist")
    calibration = torch.cat([small.x, small.x])  # calibrated on the evaluated digits: fpr there at most 5 %
    table, agreement, _ = run_defend(spec, PGD, small, EvaluationOptions(["own", "foolbox"], calibration=calibration))
    rows = table.set_index(["mode", "attack_library"])
    assert rows.loc[("none", ""), "fpr"] <= 0.05
    transfer = rows.loc[("transfer", "own")]
    assert 0 <= transfer["detection_rate"] <= 1 and 0.5 <= transfer["roc_auc"] <= 1
    assert rows.loc[("adaptive", "foolbox"), "status"] == "unsupported"
    assert "joint objective" in rows.loc[("adaptive", "foolbox"), "reason"]
    assert rows.loc[("adaptive", "own"), "status"] == "ok"
    assert rows.loc[("worst-case", "all"), "robust_acc"] <= min(
        rows.loc[("transfer", "own"), "robust_acc"], rows.loc[("adaptive", "own"), "robust_acc"]
    )
    assert set(agreement["squeezer"]) == {"1-bit depth", "median 2×2", spec.describe()}


def test_detector_needs_calibration_images_or_a_threshold(small):
    spec = DefenseSpec(defense="squeeze-detect").resolved("mnist")
    with pytest.raises(UnsupportedDefenseError, match="calibrate"):
        run_defend(spec, PGD, small, EvaluationOptions(["own"]))
    with pytest.raises(UnsupportedDefenseError, match="art has no squeeze-detect.*libraries that have it: own"):
        check_defense_libraries(spec, "own,art")
    assert check_defense_libraries(DefenseSpec(defense="median", size=2), None) == ["own", "art"]


@pytest.mark.usefixtures("deterministic")
def test_pgd_objective_hook_is_the_default_when_it_is_cross_entropy(mnist_model, mnist_batch):
    x, y = mnist_batch[0][:16], mnist_batch[1][:16]

    def ce(xa, ya):
        return torch.nn.functional.cross_entropy(mnist_model(xa), ya, reduction="none")

    assert torch.equal(pgd(mnist_model, x, y, eps=0.1, steps=5), pgd(mnist_model, x, y, eps=0.1, steps=5, loss=ce))


@pytest.mark.usefixtures("deterministic")
def test_pgd_success_hook_returns_the_last_successful_iterate(mnist_model, mnist_batch):
    """With a success test that holds only at the first step, every sample returns its first iterate."""
    x, y = mnist_batch[0][:8], mnist_batch[1][:8]
    calls = []

    def first_step_only(xa, ya):
        calls.append(1)
        return torch.full((len(xa),), len(calls) == 1)

    out = pgd(mnist_model, x, y, eps=0.3, steps=4, step_size=0.05, success=first_step_only)
    assert torch.equal(out, pgd(mnist_model, x, y, eps=0.3, steps=1, step_size=0.05)) and len(calls) == 4


def test_margin_is_positive_exactly_when_misclassified():
    logits = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5]])
    assert torch.equal(-margin_loss(logits, torch.tensor([0, 0])), torch.tensor([-2.0, 1.0]))


def test_detector_aware_pgd_stays_in_the_ball_and_keeps_successes(mnist_model, mnist_batch):
    x, y = mnist_batch[0][:16], mnist_batch[1][:16]
    detector = SqueezeDetector(mnist_model, [BitDepth(1, "bpda"), MedianFilter(2, "bpda")], threshold=1.5)
    adv = detector_aware_pgd(detector, x, y, eps=0.3, steps=10)
    assert float((adv - x).abs().max()) <= 0.3 + 1e-6 and 0 <= float(adv.min()) and float(adv.max()) <= 1
    with torch.no_grad():
        both = (mnist_model(adv).argmax(1) != y) & (detector.score(adv) <= 1.5)
    assert bool(both.any()), "a lax threshold (1.5 of 2) is easy to pass"
    with pytest.raises(ValueError, match="threshold"):
        detector_aware_pgd(SqueezeDetector(mnist_model, [BitDepth(1)]), x, y, eps=0.3)

"""The binarization test (Zimmermann et al. 2022): its construction (inner points within 0.95 eps, the boundary point
at eps, a readout that separates them, so an adversarial example exists inside eps), the classifier's last layer
found inside a defense, the audit's indicator (no row of the audit changes), and defenses from the paper's case
studies: the naive PGD fails their tests, the audit's remedied attack passes them, and the plain CNN passes.

Bounds are rates against the pass threshold with room to spare (0 or 0.35 against 0.8), never bitwise."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from binarization_defenses import FAILING, Thermometer
from torch import nn

from advbridge.bridge.runner import predict
from advbridge.experiments.audit.binarization import GAP, THRESHOLD, BinarizationTest
from advbridge.experiments.audit.binarized import (
    CLOSENESS,
    Binarized,
    Readouts,
    boundary_point,
    find_head,
    fit_readout,
    head_features,
    inner_points,
)
from advbridge.experiments.audit.engine import AuditConfig, run_audit
from advbridge.experiments.audit.report import write_audit
from advbridge.experiments.audit.tables import indicator_table, results_table
from advbridge.experiments.audit.tracker import distances
from advbridge.experiments.core.indicators import INDICATORS

EPS = {"Linf": 0.3, "L2": 2.0}
#: The audit tests' small cascade.
SMALL = {"norm": "Linf", "eps": 0.3, "steps": 20, "libraries": ("own",), "autoattack": False, "square_queries": 50,
         "restarts": 2, "eot": 4}  # fmt: skip


@pytest.fixture(scope="module")
def digits(mnist_batch):
    return mnist_batch


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_inner_points_lie_within_095_eps(digits, norm):
    x, eps = digits[0][3], EPS[norm]
    points = inner_points(x, 500, eps, norm, torch.Generator().manual_seed(0), 1 - GAP)
    d = distances(points - x, norm)
    assert float(d.max()) <= 0.95 * eps * (1 + 1e-6)
    assert float(d.max()) > 0.8 * 0.95 * eps  # they fill the ball, not a point
    assert float(points.min()) >= 0 and float(points.max()) <= 1


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_the_boundary_point_is_at_eps(digits, norm):
    generator, eps = torch.Generator().manual_seed(0), EPS[norm]
    for x in digits[0][:8]:
        point = boundary_point(x, eps, norm, generator)
        assert point is not None
        assert float(distances((point - x)[None], norm)) == pytest.approx(eps, rel=1e-5)
        assert float(point.min()) >= 0 and float(point.max()) <= 1
        if norm == "Linf":  # a corner of the ball, clipped: every pixel moved by eps or to 0 or 1
            moved = (point - x).abs()
            assert bool((((moved - eps).abs() < 1e-6) | (point == 0) | (point == 1)).all())


def test_the_readout_puts_the_boundary_point_in_class_1_and_the_inner_points_in_class_0(mnist_model, digits):
    """The construction by hand for one digit: an adversarial example of the binarized model exists inside eps."""
    x, eps = digits[0][0], 0.3
    generator = torch.Generator().manual_seed(1)
    point = boundary_point(x, eps, "Linf", generator)
    assert point is not None
    inner = inner_points(x, 999, eps, "Linf", generator, 1 - GAP)
    points = torch.cat([x[None], inner, point[None]])
    head = find_head(mnist_model, 10)
    phi, logits, owner = head_features(mnist_model, head, points)
    assert phi.shape == (1001, 128) and torch.equal(owner, torch.arange(1001))
    labels = np.r_[np.zeros(1000, dtype=np.int64), 1]
    fitted = fit_readout(phi.double().numpy(), labels, logits.double().numpy())
    assert fitted is not None
    weight, bias = (torch.from_numpy(a)[None] for a in fitted)
    binarized = Binarized(mnist_model, head, Readouts(weight, bias))
    with torch.no_grad():
        out = binarized(points)  # one problem: any batch is its rows
    assert out[:-1].argmax(1).eq(0).all(), "x and every inner point (within 0.95 eps) are class 0"
    assert int(out[-1].argmax()) == 1, "the boundary point is class 1"
    assert float((point - x).abs().max()) == pytest.approx(eps)  # ... and inside the ball: adversarial
    margin = out[:, 1] - out[:, 0]
    assert 0 < float(margin[-1]) < 0.01 * float((-margin[:-1]).min())  # the boundary moved next to it


def test_fit_readout_math_on_separable_features():
    rng = np.random.default_rng(0)
    phi = np.r_[rng.normal(size=(200, 5)), [[4.0, 4, 4, 4, 4]]]
    labels = np.r_[np.zeros(200, dtype=np.int64), 1]
    model_logits = rng.normal(scale=7, size=(201, 10))
    fitted, unmoved = fit_readout(phi, labels, model_logits, closeness=0.9), fit_readout(phi, labels, model_logits, 0)
    assert fitted is not None and unmoved is not None
    g, g0 = phi @ fitted[0].T + fitted[1], phi @ unmoved[0].T + unmoved[1]
    assert np.array_equal(g.argmax(1), labels)
    d, d0 = g[:, 1] - g[:, 0], g0[:, 1] - g0[:, 0]
    assert d[-1] == pytest.approx((1 - 0.9) * d0[-1])  # (1 - κ) of the boundary point's margin is left
    assert d[:-1] == pytest.approx(d0[:-1] - 0.9 * d0[-1])  # every inner point moves as far from the boundary
    unmoved = fit_readout(phi, labels, model_logits, closeness=0.0)
    assert unmoved is not None
    g0 = phi @ unmoved[0].T + unmoved[1]  # adaptive rescaling: the model's logit range, from its minimum
    assert (g0.max() - g0.min(), g0.min()) == pytest.approx((np.ptp(model_logits), model_logits.min()))
    assert fit_readout(np.r_[phi[:200], phi[:1]], labels, model_logits) is None  # not separable: no problem


def test_readouts_route_stacked_passes():
    readouts = Readouts(torch.stack([torch.eye(2) * (k + 1) for k in range(3)]), torch.zeros(3, 2))
    phi = torch.ones(6, 2)
    assert readouts(phi)[:, 0].tolist() == [1, 2, 3, 1, 2, 3]  # two passes of three problems, in batch order
    with pytest.raises(ValueError, match="multiple of the 3"):
        readouts(torch.ones(4, 2))


def test_the_last_layer_is_found_inside_wrappers(mnist_model):
    assert find_head(mnist_model, 10).where == "backbone.get_classifier()"
    assert find_head(Thermometer(mnist_model), 10).where == "net.backbone.get_classifier()"
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    assert find_head(mlp, 10).module is mlp[-1]
    convolutional = nn.Sequential(nn.Conv2d(1, 10, 28), nn.Flatten())
    assert find_head(convolutional, 10).module is None  # no last linear layer: the logits are the features

    class Rejecting(nn.Module):
        reject_class = 10

        def __init__(self) -> None:
            super().__init__()
            self.net = mnist_model

        def forward(self, x):
            return torch.nn.functional.pad(self.net(x), (0, 1))

    assert find_head(Rejecting(), 11).module is None  # a detector is read at its outputs


def clean_correct(model: nn.Module, x, y, n: int):
    correct = predict(model, x) == y
    return x[correct][:n], y[correct][:n]


def test_the_plain_cnn_passes(mnist_model, digits):
    x, y = clean_correct(mnist_model, *digits, 3)  # the audit's default 5: tests/audit/test_audit.py's plain CNN
    test = BinarizationTest(mnist_model, x, y, AuditConfig(**SMALL))
    assert test.problems == 3 and not test.randomized
    with torch.no_grad():
        assert test.binarized()(test.boundary).argmax(1).eq(1).all()  # every problem has its adversarial example
    assert float(distances(test.boundary - x, "Linf").max()) == pytest.approx(0.3)
    assert test.naive().rate >= THRESHOLD


def test_an_l2_test_has_its_boundary_points_on_the_sphere(mnist_model, digits):
    x, y = clean_correct(mnist_model, *digits, 2)
    config = AuditConfig(norm="L2", eps=2.0, steps=10, libraries=("own",), restarts=1)
    test = BinarizationTest(mnist_model, x, y, config, inner=299)
    assert test.problems == 2
    assert distances(test.boundary - x, "L2").tolist() == pytest.approx([2.0, 2.0], rel=1e-5)
    with torch.no_grad():
        assert test.binarized()(test.boundary).argmax(1).eq(1).all()
    assert 0 <= test.naive().rate <= 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "remedy"),
    [("kwta", "pgd-margin-bpda-surrogate"), ("thermometer", "pgd-margin-bpda-surrogate"),
     ("empir", "pgd-margin-bpda-surrogate"), ("mahalanobis", "pgd-margin-4x")],
)  # fmt: skip
def test_the_naive_pgd_fails_a_case_study_s_test_and_the_remedied_attack_passes(mnist_model, digits, name, remedy):
    torch.manual_seed(0)
    defense = FAILING[name]().eval()
    x, y = clean_correct(defense, *digits, 10)
    test = BinarizationTest(defense, x, y, AuditConfig(**SMALL), surrogate=mnist_model)
    assert test.problems >= 8, test.reasons
    naive, remedied = test.naive(), test.remedied()
    assert naive.rate < THRESHOLD, naive.rows  # fails the test
    assert remedied.rate >= THRESHOLD and remedied.rows[remedy] >= THRESHOLD - 0.2, remedied.rows


def tiny(**extra) -> AuditConfig:
    return AuditConfig(**{**SMALL, "steps": 5, "square_queries": 20, "minimal": False, "binarization_inner": 199,
                          **extra})  # fmt: skip


def test_every_audit_reports_it_as_an_indicator_and_keeps_its_rows(mnist_model, digits, tmp_path):
    x, y = digits[0][:12], digits[1][:12]
    without = run_audit(mnist_model, x, y, tiny(binarization_samples=0))
    audit = run_audit(mnist_model, x, y, tiny(binarization_samples=2))
    assert "binarization" not in without.indicators
    columns = ["attack", "library", "stage", "status", "robust_acc", "propagations", "max_propagations"]
    assert results_table(audit)[columns].equals(results_table(without)[columns])  # the rows are the same rows
    result = audit.indicators["binarization"]
    assert result.details is not None and result.details["problems"] == 2
    assert result.details["naive"]["rows"]["pgd"] == result.value
    assert (result.details["remedied"] is None) == (not result.raised)  # its remedy runs when raised, only then
    assert not math.isnan(result.value) and result.robust_before is None
    spent = result.details["propagations"]
    assert spent >= 2 * 200 and audit.cost()["binarization_propagations_per_sample"] == pytest.approx(spent / 12)
    assert indicator_table(audit)["indicator"].tolist()[-1] == "binarization"
    write_audit(audit, tmp_path / "audit", {"model": "advbridge_mnist_cnn", "dataset": "mnist-5k"})
    info = json.loads((tmp_path / "audit.json").read_text())
    assert info["indicators"]["binarization"]["details"]["features"] == "backbone.get_classifier()"


@pytest.mark.slow
def test_a_raised_binarization_runs_the_strongest_remedies(mnist_model, digits):
    """The thermometer's zero gradients: the naive PGD fails every problem, BPDA through the surrogate finds them."""
    torch.manual_seed(0)
    x, y = digits[0][:12], digits[1][:12]
    config = tiny(steps=20, binarization_samples=3, binarization_inner=999)  # the case studies' 999 inner points
    audit = run_audit(Thermometer(mnist_model).eval(), x, y, config, surrogate=mnist_model)
    result = audit.indicators["binarization"]
    assert result.raised and result.value == 0.0
    assert "pgd-margin-bpda-surrogate" in result.remedy and result.after is not None and result.after >= THRESHOLD
    assert "binarization" not in audit.stayed_raised
    assert INDICATORS["binarization"].threshold == THRESHOLD and 0 < CLOSENESS < 1

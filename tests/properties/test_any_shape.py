"""Own attacks on any ``(N, ...)`` tensor: feature vectors ``(N, D)``, signals ``(N, C, L)``, images ``(N, C, H, W)``.

adv-lib and foolbox attack any batch; so do ours. Properties first (shape, dtype, range, eps ball, the
caller's tensor untouched, for batch sizes 1 and several), then strength on the affine model of
``tests/agreement/linear_model.py`` in each shape, whose optimum is known exactly: DeepFool (L2, L∞) within
1.05× of it, DDN within 1.25×, untargeted and targeted; PGD, a budget attack, targeted, succeeds on every
sample once eps is 1.05× the optimum, and never below the optimum (untargeted and targeted).
"""

from __future__ import annotations

import copy
from functools import cache

import pytest
import torch
from agreement.linear_model import LinearClassifier, exact_minimal_l2, exact_minimal_linf, exact_targeted, make_inputs
from torch import Tensor

from advbridge.own_attacks import ddn, deepfool, fgsm, pgd

SHAPES = [(40,), (2, 24), (3, 6, 6)]
SHAPE_IDS = ["N,D", "N,C,L", "N,C,H,W"]
BATCHES = [1, 5]


@cache
def _affine(shape: tuple[int, ...], n: int) -> tuple[LinearClassifier, Tensor, Tensor, Tensor]:
    """The affine model in ``shape``, ``n`` inputs it classifies correctly, and targets (read only)."""
    model = LinearClassifier(shape, seed=len(shape)).eval()
    x, y = make_inputs(model, n, seed=7)
    targets = (y + 1 + torch.arange(n) % 9) % 10
    return model, x, y, targets


def _predict(model: torch.nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


ATTACKS = {
    "fgsm": (lambda m, x, y, t: fgsm(m, x, y, eps=0.05), ("Linf", 0.05)),
    "fgsm-targeted": (lambda m, x, y, t: fgsm(m, x, t, eps=0.05, targeted=True), ("Linf", 0.05)),
    "pgd-linf-rs": (lambda m, x, y, t: pgd(m, x, y, eps=0.05, steps=5, random_start=True), ("Linf", 0.05)),
    "pgd-l2-rs": (lambda m, x, y, t: pgd(m, x, y, eps=0.5, norm="L2", steps=5, random_start=True), ("L2", 0.5)),
    "pgd-l2-targeted": (lambda m, x, y, t: pgd(m, x, t, eps=0.5, norm="L2", steps=5, targeted=True), ("L2", 0.5)),
    "deepfool-l2": (lambda m, x, y, t: deepfool(m, x, y), None),
    "deepfool-linf": (lambda m, x, y, t: deepfool(m, x, y, norm="Linf"), None),
    "ddn": (lambda m, x, y, t: ddn(m, x, y, steps=20), None),
    "ddn-targeted-quantized": (lambda m, x, y, t: ddn(m, x, t, steps=20, targeted=True, levels=256), None),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("attack", list(ATTACKS))
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_own_attack_on_any_shape(shape, batch, attack, dtype):
    model, x, y, t = _affine(shape, batch)
    model, x = copy.deepcopy(model).to(dtype), x.to(dtype)
    x_copy = x.clone()
    run, ball = ATTACKS[attack]
    out = run(model, x, y, t)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert out.is_contiguous()
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(x, x_copy), "the caller's tensor must not change"
    assert not torch.equal(out, x), "the attack must move the inputs"
    if ball is not None:
        norm, eps = ball
        delta = (out - x).flatten(1)
        dist = delta.abs().amax(1) if norm == "Linf" else delta.norm(dim=1)
        assert float(dist.max()) <= eps * (1 + 1e-5) + 1e-6


def _ratio(x_adv: Tensor, x: Tensor, optimum: Tensor, norm: str) -> Tensor:
    delta = (x_adv - x).flatten(1).double()
    dist = delta.abs().amax(1) if norm == "Linf" else delta.norm(dim=1)
    return dist / optimum


@pytest.mark.parametrize(
    ("attack", "norm", "bound"),
    [("deepfool", "L2", 1.05), ("deepfool", "Linf", 1.05), ("ddn", "L2", 1.25), ("ddn-targeted", "L2", 1.25)],
    ids=["deepfool-l2", "deepfool-linf", "ddn", "ddn-targeted"],
)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_minimal_attacks_reach_the_exact_optimum_in_any_shape(shape, batch, attack, norm, bound):
    """Measured (these shapes, batch sizes 1 and 5): DeepFool 1.0204–1.0215 (L2) and 1.0220–1.0328 (L∞),
    the 2 % overshoot plus the 1e-4 step term; DDN (100 steps) 1.0002–1.0888, targeted 1.0002–1.0234."""
    model, x, y, t = _affine(shape, batch)
    if attack == "deepfool":
        x_adv = deepfool(model, x, y, norm=norm)
        optimum = exact_minimal_l2(model, x, y) if norm == "L2" else exact_minimal_linf(model, x, y)
        reached = _predict(model, x_adv) != y
    elif attack == "ddn":
        x_adv = ddn(model, x, y)
        optimum, reached = exact_minimal_l2(model, x, y), _predict(model, x_adv) != y
    else:
        x_adv = ddn(model, x, t, targeted=True)
        optimum, reached = exact_targeted(model, x, t, "L2")[0], _predict(model, x_adv) == t
    assert bool(reached.all()), "every sample must be adversarial"
    ratio = _ratio(x_adv, x, optimum, norm)
    # no adversarial point is nearer than the optimum (float32 slack): a check of the optimum itself
    assert float(ratio.min()) >= 1 - 1e-5
    assert float(ratio.max()) <= bound, f"{attack}: {float(ratio.max()):.4f} x the exact optimum"


@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
@pytest.mark.parametrize("norm", ["Linf", "L2"])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_pgd_succeeds_just_above_the_exact_optimum_and_never_below(shape, batch, norm, targeted):
    """eps is one number per batch. 0.99× the smallest optimum of the batch must fool no sample (nothing
    that near is adversarial: the optimum is exact). Targeted, 1.05× the largest must fool every sample
    (with batch size 1, each sample's own optimum): on an affine model the targeted cross-entropy
    logsumexp_k(z_k − z_t) is convex in δ, so PGD (100 steps of 2.5·eps/100) descends to its minimum in
    the ball; measured enough from 1.02× on. Untargeted PGD *maximizes* a convex function, whose local
    maxima at vertices of the ball need not be adversarial (measured: one of five (N, D) samples stuck
    at 1.05×), so only the lower side is a guarantee there."""
    model, x, y, t = _affine(shape, batch)
    labels = t if targeted else y
    if targeted:
        optimum = exact_targeted(model, x, t, norm)[0]
    else:
        optimum = exact_minimal_l2(model, x, y) if norm == "L2" else exact_minimal_linf(model, x, y)
    for factor, expect in ((1.05, True), (0.99, False)) if targeted else ((0.99, False),):
        eps = factor * float(optimum.max() if expect else optimum.min())
        x_adv = pgd(model, x, labels, eps=eps, norm=norm, steps=100, targeted=targeted)
        pred = _predict(model, x_adv)
        fooled = pred == t if targeted else pred != y
        assert bool(fooled.all() if expect else ~fooled.any()), (factor, eps, fooled.tolist())

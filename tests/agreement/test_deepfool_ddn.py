"""Own DeepFool and DDN against the exact optimum of an affine model and against the libraries.

- On an affine classifier the minimal perturbation is known in closed form (``linear_model.py``):
  DeepFool must reach it up to its overshoot, DDN up to 1.25× (adv-lib's test idea).
- DeepFool vs foolbox / adv-lib (overshoot 0.02), vs torchattacks / ART (overshoot 0, with the own
  options that reproduce their conventions), on the affine model and on real MNIST digits.
- DDN vs foolbox / adv-lib: 1e-5 where the dynamics are smooth (affine model, a smooth CNN), per-sample
  norms on the ReLU CNN, where ulp differences can flip DDN's discrete ε decision or a ReLU and
  trajectories part (see ``test_ddn_on_relu_model_agrees_statistically``); bitwise adv-lib in its layout.

Every bound here was measured under ATEN_CPU_CAPABILITY default, avx2 and avx512 and with one thread
(``make test-portable``), on the committed test classifier (``tests/fixtures/mnist_cnn``).
- Targeted DeepFool is refused; targeted DDN is run or reported unsupported.
"""

from __future__ import annotations

from functools import cache

import pytest
import torch
from linear_model import LinearClassifier, exact_minimal_l2, exact_minimal_linf, make_inputs
from torch import Tensor, nn

from advbridge.bridge.errors import InvalidParameterError, UnsupportedAttackError
from advbridge.bridge.runner import Ran, Unsupported, run_attack
from advbridge.bridge.spec import AttackSpec
from advbridge.experiments.bench.agreement import smooth_copy
from advbridge.own_attacks import ddn, deepfool

SHAPES = [(1, 28, 28), (3, 8, 8)]
SHAPE_IDS = ["1x28x28", "3x8x8"]

# bitwise and 1e-5 comparisons with the libraries: deterministic algorithms for the module and its
# module-scoped fixtures, off again after it (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("deterministic_module")


@cache
def _linear(shape: tuple[int, int, int], n: int, seed: int = 0) -> tuple[LinearClassifier, Tensor, Tensor]:
    """An affine model and ``n`` inputs it classifies correctly, well inside the box (cached: read only)."""
    model = LinearClassifier(shape, seed=seed).eval()
    x, y = make_inputs(model, n, seed=seed + 1)
    return model, x, y


def _run(library: str, model: nn.Module, x: Tensor, y: Tensor, spec: AttackSpec) -> Ran:
    result = run_attack(library, model, x, y, spec, num_classes=10)
    assert isinstance(result, Ran) and result.status == "ok", (library, result.reason)
    return result


def _max_diff(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample max |a − b|."""
    return (a - b).flatten(1).abs().amax(1)


def _norms(a: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    delta = (a - x).flatten(1)
    return delta.norm(p=2, dim=1), delta.abs().amax(1)


def _predict(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


# --------------------------------------------------------------------------------------------------
# a. The exact optimum of an affine model
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("batch_size", [1, 3, 8])
@pytest.mark.parametrize(
    ("attack", "bound"),
    [("deepfool-L2", 1.05), ("deepfool-Linf", 1.05), ("ddn", 1.25)],
    ids=["df-l2", "df-linf", "ddn"],
)
def test_minimal_attacks_reach_the_exact_optimum_of_an_affine_model(shape, batch_size, attack, bound):
    model, x, y = _linear(shape, batch_size)
    if attack == "ddn":
        x_adv = ddn(model, x, y, steps=100)
    else:
        x_adv = deepfool(model, x, y, norm=attack.split("-")[1], overshoot=0.02)
    l2, linf = _norms(x_adv, x)
    if attack == "deepfool-Linf":
        ratio = linf.double() / exact_minimal_linf(model, x, y)
    else:
        ratio = l2.double() / exact_minimal_l2(model, x, y)
    assert bool((_predict(model, x_adv) != y).all()), "every sample must be misclassified"
    # Any adversarial point is at least the optimum away (float32 slack): a check of the exact value.
    assert float(ratio.min()) >= 1 - 1e-5
    assert float(ratio.max()) <= bound, f"{attack}: {float(ratio.max()):.4f} x the exact minimal norm"
    if attack.startswith("deepfool"):
        # measured 1.0204-1.0229 (L2) and 1.022-1.040 (L∞): the 2 % overshoot and the 1e-4 step term
        assert float(ratio.min()) >= 1.02 - 1e-4
        assert float(x_adv.min()) > 0 and float(x_adv.max()) < 1, "the box must not bind here"


# --------------------------------------------------------------------------------------------------
# b. DeepFool vs foolbox and adv-lib (overshoot 0.02)
# --------------------------------------------------------------------------------------------------


def _nearest_sample(rows: Tensor, x: Tensor) -> Tensor:
    """Index of the clean input each row (an iterate) belongs to: the nearest one, checked unambiguous."""
    dist = torch.cdist(rows.flatten(1).double(), x.flatten(1).double())
    two = dist.topk(min(2, len(x)), dim=1, largest=False)
    if len(x) > 1:
        assert bool((two.values[:, 0] < 0.8 * two.values[:, 1]).all()), "ambiguous iterate-to-sample mapping"
    return two.indices[:, 0]


def _own_deepfool_with_clipping(model: nn.Module, x: Tensor, y: Tensor, norm: str) -> tuple[Ran, Tensor]:
    """Own DeepFool through the runner (default conventions) and, per sample, whether clipping occurred.

    "Clipping occurred" is decided from the own trajectory: a forward pre-hook records every iterate
    the attack evaluates with gradients (each row mapped to its sample by the nearest clean input); a
    sample is flagged if any iterate after the clean one, or the output, has a pixel at exactly 0 or
    1. A clipped pixel is exactly 0 or 1, so no clipped sample goes unflagged; the flag is conservative
    (a pixel sitting at 0 or 1 with a zero step is flagged too). Looking at the reference's output
    only ("at 0 or 1 where the clean input was not") is not enough: on MNIST the background is at
    exactly 0 and the pixels pushed below 0 are clipped back to 0, i.e. to their clean value.
    """
    iterates: list[Tensor] = []

    def record(module: nn.Module, args: tuple) -> None:
        if torch.is_grad_enabled() and args[0].requires_grad:
            iterates.append(args[0].detach().clone())

    handle = model.register_forward_pre_hook(record)
    try:
        result = _run("own", model, x, y, AttackSpec(attack="deepfool", norm=norm))
    finally:
        handle.remove()
    rows = torch.cat([*iterates, result.x_adv])
    owner = _nearest_sample(rows, x)
    after_start = (rows != x[owner]).flatten(1).any(1)
    at_bound = ((rows == 0) | (rows == 1)).flatten(1).any(1)
    clipped = torch.zeros(len(x), dtype=torch.bool)
    clipped[owner[after_start & at_bound]] = True
    return result, clipped


@pytest.fixture(scope="module")
def own_deepfool_mnist(mnist_model, mnist_batch):
    """Own DeepFool (runner, default spec) on the 64 digits, per norm, with the clipping flags (cached)."""
    x, y = mnist_batch
    return {norm: _own_deepfool_with_clipping(mnist_model, x, y, norm) for norm in ("L2", "Linf")}


def _check_deepfool_against(model, x, y, norm, library, own, clipped, *, linf_tol=None) -> dict[str, float]:
    """The comparison of part b; returns the measured numbers (shown on failure)."""
    spec = AttackSpec(attack="deepfool", norm=norm)  # candidates=None: all classes (foolbox too)
    ref = _run(library, model, x, y, spec)
    correct = own.clean_correct
    # adv-lib returns the clean input where it failed, own its last iterate: compare where both succeed.
    both = correct & own.success & ref.success
    assert int(both.sum()) >= 0.95 * int(correct.sum()), (int(both.sum()), int(correct.sum()))
    diff = _max_diff(own.x_adv, ref.x_adv)
    l2_rel = (own.l2 / ref.l2 - 1).abs()
    linf_rel = (own.linf / ref.linf - 1).abs()
    free, hit = both & ~clipped, both & clipped
    measured = {
        "unclipped": int(free.sum()),
        "clipped": int(hit.sum()),
        "max_diff_unclipped": float(diff[free].max()) if free.any() else 0.0,
        "max_l2_rel_clipped": float(l2_rel[hit].max()) if hit.any() else 0.0,
        "max_linf_rel_clipped": float(linf_rel[hit].max()) if hit.any() else 0.0,
    }
    assert measured["max_diff_unclipped"] <= 1e-4, measured
    assert measured["max_l2_rel_clipped"] <= 0.02, measured
    if linf_tol is not None:
        assert measured["max_linf_rel_clipped"] <= linf_tol, measured

    # The same conventions must agree everywhere, clipping or not. foolbox places the overshoot on the
    # accumulated unclipped perturbation like our default; adv-lib per step (overshoot_mode="step", an
    # option the runner's spec does not expose, hence the direct call).
    same = own.x_adv if library == "foolbox" else deepfool(model, x, y, norm=norm, overshoot_mode="step")
    same_diff = _max_diff(same, ref.x_adv)[both]
    same_l2, same_linf = _norms(same, x)
    measured["same_convention_max_diff"] = float(same_diff.max())
    measured["same_convention_frac_1e-4"] = float((same_diff <= 1e-4).double().mean())
    # On the ReLU CNN a 1e-7 difference in an iterate can switch a ReLU (measured on an earlier model:
    # L∞, foolbox, a conv1 pre-activation at 6e-8 vs -1.5e-8 after 3 steps; on the fixture: L∞, adv-lib,
    # one digit under some capabilities); L∞ DeepFool's sign() step turns the changed gradient into a
    # 2e-3 to 1e-2 pixel difference. Hence a fraction for the elementwise check and a tight bound on
    # every norm.
    assert measured["same_convention_frac_1e-4"] >= 0.95, measured
    assert float((same_l2[both] / ref.l2[both] - 1).abs().max()) <= 1e-3, measured
    assert float((same_linf[both] / ref.linf[both] - 1).abs().max()) <= 1e-3, measured
    return measured


@pytest.mark.parametrize("library", ["foolbox", "advlib"])
@pytest.mark.parametrize("norm", ["L2", "Linf"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_deepfool_matches_foolbox_and_advlib_on_affine_model(shape, norm, library):
    model, x, y = _linear(shape, 16)
    own, clipped = _own_deepfool_with_clipping(model, x, y, norm)
    assert not bool(clipped.any()), "inputs around 0.5: no sample may be clipped, so 1e-4 applies to all"
    measured = _check_deepfool_against(model, x, y, norm, library, own, clipped)
    assert measured["unclipped"] == 16  # measured max |diff| 6e-8 (foolbox), 6e-8 / 0 (adv-lib)


@pytest.mark.parametrize(
    ("norm", "library"),  # one pair in make test-fast (the affine model's test has every pair), all in the full suite
    [("L2", "foolbox"), pytest.param("L2", "advlib", marks=pytest.mark.slow),
     pytest.param("Linf", "foolbox", marks=pytest.mark.slow), pytest.param("Linf", "advlib", marks=pytest.mark.slow)],
)  # fmt: skip
def test_deepfool_matches_foolbox_and_advlib_on_mnist(mnist_model, mnist_batch, own_deepfool_mnist, norm, library):
    """On MNIST every sample is clipped (the background sits at 0), so the 2 % norm rule applies.

    Measured on the committed classifier (63 correct digits, all compared; ``python -m
    experiments.bench.agreement --checkpoint tests/fixtures/mnist_cnn`` under ATEN_CPU_CAPABILITY default,
    avx2, avx512 and with one thread), own in its default channels-last layout: foolbox L2 ≤ 4.4e-7,
    L∞ ≤ 3.7e-7; adv-lib with own's per-step overshoot: L2 ≤ 2.4e-5 (61 of 63 within 1e-5), L∞ ≤ 2.2e-7
    but for one digit at 2.4e-3 under some capabilities (a ReLU switch, norms within 7.5e-6). In the
    references' layout (``channels_last=False``): ≤ 4.8e-7 (L2), ≤ 3.9e-7 (L∞, foolbox), ≤ 3e-8 (L∞,
    adv-lib). Our default (overshoot on the total) vs adv-lib: L2 within 0.95 % (L2 attack), L2 within
    1.48 % but L∞ within 3.9 % (L∞ attack; 4.4 %, and up to 6 % on other digit subsets, with an earlier
    model): with clipping, where the overshoot is applied changes which pixels stay clipped, and the L∞
    norm, the max over pixels, reacts most (L2 attack: L∞ within 1.9 %, up to 2.9 % on other subsets).
    The 2 % rule is therefore asserted on L2; the L∞ norms get 5 % (L2 attack) and 10 % (L∞ attack)
    against adv-lib.
    """
    x, y = mnist_batch
    own, clipped = own_deepfool_mnist[norm]
    linf_tol = {"foolbox": 0.02, "advlib": 0.10 if norm == "Linf" else 0.05}[library]
    measured = _check_deepfool_against(mnist_model, x, y, norm, library, own, clipped, linf_tol=linf_tol)
    assert measured["clipped"] + measured["unclipped"] >= 60


# --------------------------------------------------------------------------------------------------
# c. DeepFool without overshoot vs torchattacks and ART
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["affine", pytest.param("mnist", marks=pytest.mark.slow)])  # ART: 9 s on 64 digits
def test_deepfool_without_overshoot_matches_torchattacks_and_art(mnist_model, mnist_batch, case):
    """torchattacks and ART stop ON the boundary (overshoot 0, no 1e-4 term), so whether the last
    iterate is misclassified is float noise (measured on MNIST: 53 % own vs 40 % torchattacks): compare
    perturbations only, on samples whose clean prediction is the label (ART attacks the prediction).

    The own options (not in the spec, hence direct calls) that reproduce them: ``min_step=0`` and per
    step overshoot (torchattacks); ``source="prediction"`` and overshoot at the end (ART). torchattacks
    loops over samples in Python and ART round-trips through numpy: 16 images.
    Measured max |diff|: affine 5e-7 (torchattacks), 3e-7 (ART); MNIST 3.5e-5 for both (14 of the 15
    correct digits within 1e-5; the same under every capability and thread count tried).
    """
    if case == "affine":
        model, x, y = _linear((1, 28, 28), 16)
    else:
        model, x, y = mnist_model, mnist_batch[0][:16], mnist_batch[1][:16]
    keep = _predict(model, x) == y
    spec = AttackSpec(attack="deepfool", norm="L2", overshoot=0.0)

    ta = _run("torchattacks", model, x, y, spec).x_adv
    own_ta = deepfool(model, x, y, overshoot=0.0, min_step=0.0, overshoot_mode="step")
    assert float(_max_diff(own_ta, ta)[keep].max()) <= 1e-4

    art = _run("art", model, x, y, spec).x_adv  # the adapter passes nb_grads = 10 = all classes
    own_art = deepfool(model, x, y, overshoot=0.0, min_step=0.0, overshoot_mode="end", source="prediction")
    assert float(_max_diff(own_art, art)[keep].max()) <= 1e-4

    if case == "affine":
        # One step lands exactly on the closest boundary of an affine model: the norm is the optimum.
        l2 = _norms(own_ta, x)[0].double()
        assert torch.allclose(l2, exact_minimal_l2(model, x, y), rtol=1e-4)
        # ...and the reference 1e-4 term is what separates our default from theirs.
        default_l2 = _norms(deepfool(model, x, y, overshoot=0.0), x)[0]
        assert bool((default_l2 - l2.float() >= 0.5e-4).all())


# --------------------------------------------------------------------------------------------------
# d. DDN vs foolbox and adv-lib
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smooth_model(mnist_model):
    """The trained CNN with ReLU → Softplus(β=5) and max → average pooling: C∞ everywhere.

    Random seeded smooth CNNs were tried first: on the digits (4 seeds) they predicted one to three
    classes, with logits within ~0.2 of each other. With the trained weights the smooth copy classifies
    63 of the 64 digits correctly, so DDN runs on realistic, confident logits.
    """
    return smooth_copy(mnist_model)


@pytest.fixture(scope="module")
def smooth_batch(smooth_model, mnist_batch):
    """16 real digits, labelled with the smooth model's predictions (so every sample is attackable).
    Softplus makes this model about 3x slower than the ReLU one, hence 16."""
    x = mnist_batch[0][:16]
    return x, _predict(smooth_model, x)


def _targets(y: Tensor) -> Tensor:
    return (y + 1 + torch.arange(len(y)) % 9) % 10


DDN = AttackSpec(attack="ddn", norm="L2", steps=100)


def _check_ddn_equal(model, x, labels, spec, libraries=("foolbox", "advlib"), tol=1e-5) -> None:
    own = _run("own", model, x, labels, spec)
    assert bool(own.success.all())
    for library in libraries:
        ref = _run(library, model, x, labels, spec)
        assert bool(ref.success.all()), library
        diff = float(_max_diff(own.x_adv, ref.x_adv).max())
        assert diff <= tol, f"{library}: max |diff| {diff:.3g}"


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_ddn_matches_foolbox_and_advlib_on_affine_model(shape):
    model, x, y = _linear(shape, 16)
    _check_ddn_equal(model, x, y, DDN)  # measured 6e-8 (both)


@pytest.mark.slow
def test_ddn_matches_foolbox_and_advlib_on_smooth_model(smooth_model, smooth_batch):
    x, y = smooth_batch
    _check_ddn_equal(smooth_model, x, y, DDN)  # measured 2.1e-7 to 3.9e-7 (both, every capability)


@pytest.mark.slow
def test_targeted_ddn_matches_foolbox_and_advlib_on_smooth_model(smooth_model, smooth_batch):
    x, y = smooth_batch
    # foolbox: TargetedMisclassification; adv-lib: targeted=True (both through the adapters)
    _check_ddn_equal(smooth_model, x, _targets(y), DDN.with_(targeted=True))  # measured 4.2e-7 / 4.8e-7


@pytest.mark.slow
def test_ddn_on_relu_model_agrees_statistically(mnist_model, mnist_batch):
    """DDN's ε update is a discrete decision (adversarial or not), and the ReLU CNN is only piecewise
    linear: ulp differences (foolbox multiplies by 1/‖g‖, we divide; channels-last convolutions, own's
    default, sum in another order than the default layout) can flip a decision or a unit, and the two
    trajectories part. Where they part, they still end at perturbations of the same size: what a
    minimal-norm attack is judged by. Measured on the 63 correct digits under ATEN_CPU_CAPABILITY
    default / avx2 / avx512 (2 threads) and avx512 with 1 thread: 70-78 % of the digits within 1e-5 of
    foolbox and adv-lib, pixel differences up to 0.02 on the rest (which share therefore is no bound:
    it is chaos, not math), but every digit's L2 norm within 0.19 % of the reference's, success 100 %
    for all three, median L2 ratio 1.00000. Bounds: success within 2 points, every norm within 1 %
    (5× the largest measured), median within 0.5 %. In the same layout adv-lib is bitwise equal (next
    test), which is the test of the arithmetic."""
    x, y = mnist_batch
    own = _run("own", mnist_model, x, y, DDN)
    for library in ("foolbox", "advlib"):
        ref = _run(library, mnist_model, x, y, DDN)
        rate_own, rate_ref = float(own.success.double().mean()), float(ref.success.double().mean())
        assert abs(rate_own - rate_ref) <= 0.02, (library, rate_own, rate_ref)
        assert rate_own >= 0.95
        both = own.success & ref.success & own.clean_correct
        ratio = own.l2[both].double() / ref.l2[both].double()
        assert float((ratio - 1).abs().max()) <= 0.01, (library, float((ratio - 1).abs().max()))
        median = float(own.l2[both].median() / ref.l2[both].median())
        assert abs(median - 1) <= 0.005, (library, median)


@pytest.mark.parametrize("levels", [None, pytest.param(256, marks=pytest.mark.slow)])
def test_ddn_in_the_default_layout_is_bitwise_advlib_on_relu_model(mnist_model, mnist_batch, levels):
    """Own DDN with ``channels_last=False`` does adv-lib's arithmetic: bitwise equal on the ReLU CNN,
    quantized or not. What the statistical test above allows is layout rounding, not different math."""
    x, y = mnist_batch[0][:32], mnist_batch[1][:32]
    own = ddn(mnist_model, x, y, levels=levels, channels_last=False)
    ref = _run("advlib", mnist_model, x, y, DDN.with_(levels=levels))
    assert bool(ref.success.all())
    assert torch.equal(own, ref.x_adv), float(_max_diff(own, ref.x_adv).max())


def test_targeted_ddn_reaches_the_target_on_trained_model(mnist_model, mnist_batch):
    x, y = mnist_batch[0][:32], mnist_batch[1][:32]
    own = _run("own", mnist_model, x, _targets(y), DDN.with_(targeted=True))
    assert float(own.success.double().mean()) >= 0.95  # measured 100 %


@pytest.mark.parametrize("case", ["affine", pytest.param("smooth", marks=pytest.mark.slow)])
def test_quantized_ddn_matches_advlib(smooth_model, smooth_batch, case):
    """levels=256 (adv-lib's default): bitwise on the affine model. On the smooth CNN own's step rounds
    once like adv-lib's (``torch.add(δ, g, alpha=α)``), but own's channels-last convolutions give
    gradients that differ in the last ulp, and one such ulp can put a pixel on the other side of a
    rounding midpoint of the 1/255 grid, after which the trajectories differ. Measured on the fixture's
    smooth copy: 63 of 64 digits bitwise (default, avx512), 64 of 64 (avx2); all of these 16 everywhere.
    So: bitwise on ≥ 90 % of the samples; elsewhere the difference must be whole grid steps and the
    norms close."""
    if case == "affine":
        model, x, y = _linear((1, 28, 28), 16)
    else:
        model, (x, y) = smooth_model, smooth_batch
    spec = DDN.with_(levels=256)
    own = _run("own", model, x, y, spec)
    ref = _run("advlib", model, x, y, spec)
    assert torch.equal(own.success, ref.success) and bool(own.success.all())
    equal = (own.x_adv == ref.x_adv).flatten(1).all(1)
    if case == "affine":
        assert bool(equal.all()), float(_max_diff(own.x_adv, ref.x_adv).max())
        return
    assert float(equal.double().mean()) >= 0.9
    if not bool(equal.all()):
        steps = (own.x_adv - ref.x_adv)[~equal] * 255
        assert float((steps - steps.round()).abs().max()) <= 1e-3, "differences must be whole 1/255 levels"
        assert float((own.l2[~equal] / ref.l2[~equal] - 1).abs().max()) <= 0.05
    # the returned points are on the 1/255 grid (x0 + (q − x0) may be one ulp off q)
    grid = own.x_adv * 255
    assert float((grid - grid.round()).abs().max()) <= 1e-4


# --------------------------------------------------------------------------------------------------
# e. DeepFool success rate on the trained model
# --------------------------------------------------------------------------------------------------


def test_deepfool_success_rate_on_trained_model(own_deepfool_mnist):
    own, _ = own_deepfool_mnist["L2"]  # the runner with AttackSpec(attack="deepfool", norm="L2")
    assert own.spec == AttackSpec(attack="deepfool", norm="L2")
    rate = float(own.success[own.clean_correct].double().mean())
    assert rate >= 0.99, rate  # measured 63/63


# --------------------------------------------------------------------------------------------------
# f. Targeted DeepFool is refused; targeted DDN is run or reported unsupported
# --------------------------------------------------------------------------------------------------


def test_targeted_deepfool_is_refused():
    with pytest.raises(UnsupportedAttackError, match="no reference library") as info:
        AttackSpec(attack="deepfool", norm="L2", targeted=True)
    assert "targeted DeepFool is not supported" in str(info.value)
    model, x, y = _linear((3, 8, 8), 3)
    with pytest.raises(InvalidParameterError, match="targeted DeepFool is not supported"):
        deepfool(model, x, (y + 1) % 10, targeted=True)


def test_targeted_ddn_through_the_runner():
    model, x, y = _linear((3, 8, 8), 8)
    targets = _targets(y)
    spec = DDN.with_(targeted=True)
    for library in ("own", "foolbox", "advlib"):
        result = run_attack(library, model, x, targets, spec, num_classes=10)
        assert result.status == "ok", (library, result.reason)
        assert bool(result.success.all()), library
    for library in ("art", "torchattacks"):
        result = run_attack(library, model, x, targets, spec, num_classes=10)
        assert result.status == "unsupported", library
        assert isinstance(result, Unsupported) and "no DDN" in result.reason, (library, result.reason)

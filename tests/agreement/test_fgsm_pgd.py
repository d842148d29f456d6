"""Own FGSM/PGD against torchattacks, foolbox, ART and adv-lib on real MNIST digits.

Exact agreement where the math is identical (FGSM; PGD L∞ without random start: bitwise), a tolerance
where only float rounding differs, and a test that ART's PGD-L2 differs by its clip/project order alone.
"""

from __future__ import annotations

import pytest
import torch

from advbridge.bridge.adapters.own import OwnAdapter
from advbridge.bridge.runner import run_attack
from advbridge.bridge.spec import AttackSpec
from advbridge.own_attacks import pgd

# bitwise and 1e-6 comparisons with the libraries: deterministic algorithms for the module (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("deterministic_module")

#: own in the references' memory layout, hence their arithmetic (the default runs channels-last: see
#: test_channels_last_agrees_to_rounding)
OWN = OwnAdapter(channels_last=False)


def _run(library, model, x, y, spec):
    result = run_attack(library, model, x, y, spec, num_classes=10)
    assert result.status == "ok", (library, result.reason)
    return result


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_bitwise_equal(mnist_model, mnist_batch, targeted):
    x, y = mnist_batch
    labels = (y + 1) % 10 if targeted else y
    spec = AttackSpec(attack="fgsm", eps=0.15, targeted=targeted)
    own = _run(OWN, mnist_model, x, labels, spec).x_adv
    libraries = ["torchattacks", "art"] + ([] if targeted else ["foolbox"])
    for library in libraries:
        ref = _run(library, mnist_model, x, labels, spec).x_adv
        assert torch.equal(own, ref), f"{library}: max |diff| {float((own - ref).abs().max())}"
    assert float((own - x).abs().max()) == pytest.approx(0.15, abs=1e-6)


@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_linf_without_random_start_bitwise_equal(mnist_model, mnist_batch, targeted):
    x, y = mnist_batch
    labels = (y + 1) % 10 if targeted else y
    spec = AttackSpec(attack="pgd", norm="Linf", eps=0.2, steps=10, step_size=0.03, targeted=targeted)
    own = _run(OWN, mnist_model, x, labels, spec).x_adv
    for library in ("torchattacks", "foolbox", "art"):
        ref = _run(library, mnist_model, x, labels, spec).x_adv
        assert torch.equal(own, ref), f"{library}: max |diff| {float((own - ref).abs().max())}"


def test_pgd_linf_random_start_same_seed(mnist_model, mnist_batch):
    x, y = mnist_batch
    spec = AttackSpec(attack="pgd", norm="Linf", eps=0.2, steps=10, step_size=0.03, random_start=True, seed=3)
    own = _run(OWN, mnist_model, x, y, spec).x_adv
    for library in ("torchattacks", "foolbox"):
        ref = _run(library, mnist_model, x, y, spec).x_adv
        assert float((own - ref).abs().max()) <= 1e-6, library
    other_seed = _run(OWN, mnist_model, x, y, spec.with_(seed=4)).x_adv
    assert float((own - other_seed).abs().max()) > 1e-3, "the seed must change the random start"


def test_pgd_l2_matches_foolbox(mnist_model, mnist_batch):
    """The same update rule in other arithmetic: foolbox computes ‖g‖ as (Σ|g|²)^(1/2) with eagerpy and
    multiplies by 1/‖g‖; we divide by torch's norm. That is float rounding per step, so on a C∞ copy of
    the CNN (ReLU → Softplus: no unit can switch) the iterates stay within 1e-5 (measured 1.8e-7 to
    2.4e-7 under ATEN_CPU_CAPABILITY default/avx2/avx512, 1 and 2 threads). On the ReLU CNN a rounding
    difference can switch a ReLU and the two trajectories part: measured on 1 of 64 digits (the same
    digit everywhere; max 4e-5 to 2e-3 by capability), none with one thread; success flags equal on all
    64. So: every sample on the smooth model, ≥ 90 % of them and every success flag on the ReLU one."""
    from advbridge.experiments.bench.agreement import smooth_copy

    x, y = mnist_batch
    spec = AttackSpec(attack="pgd", norm="L2", eps=1.5, steps=10, step_size=0.4)
    smooth = smooth_copy(mnist_model)
    own, ref = _run(OWN, smooth, x, y, spec), _run("foolbox", smooth, x, y, spec)
    assert float((own.x_adv - ref.x_adv).abs().max()) <= 1e-5
    own, ref = _run(OWN, mnist_model, x, y, spec), _run("foolbox", mnist_model, x, y, spec)
    close = (own.x_adv - ref.x_adv).flatten(1).abs().amax(1) <= 1e-5
    assert float(close.float().mean()) >= 0.9 and torch.equal(own.success, ref.success)


@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_l2_bitwise_torchattacks_up_to_its_division_guard(mnist_model, mnist_batch, targeted):
    """torchattacks normalizes the gradient of the *mean* CE as g/(‖g‖+1e-10): on confident samples
    ‖g‖ is ~1e-6, so the guard shortens the step. With the guard made negligible (1e-30) the
    operations are ours, and so are the bits: the mean's 1/N is a power of two for these 64 digits
    (an exact scaling, undone exactly by the normalization), and we, like torchattacks, divide g by
    its norm before multiplying by α. Bitwise under every ATEN_CPU_CAPABILITY and thread count tried."""
    import torchattacks

    x, y = mnist_batch
    assert len(x) & (len(x) - 1) == 0, "the mean's 1/N is an exact scaling only for a power of two"
    labels = (y + 1) % 10 if targeted else y
    own = pgd(
        mnist_model, x, labels, eps=1.5, norm="L2", steps=10, step_size=0.4, targeted=targeted, channels_last=False
    )
    attack = torchattacks.PGDL2(mnist_model, eps=1.5, alpha=0.4, steps=10, random_start=False, eps_for_division=1e-30)
    if targeted:
        attack.set_mode_targeted_by_label(quiet=True)
    assert torch.equal(own, attack(x, labels))


def test_torchattacks_pgd_l2_guard_shortens_the_step_by_its_formula():
    """What the guard does, exactly: torchattacks' first step is ours times ‖ḡ‖ / (‖ḡ‖ + 1e-10), with ḡ
    the gradient of the mean CE. On the affine model (inputs around 0.5, a step that neither the box nor
    the ball clips, no ReLU to switch) that ratio is measured per sample. With logits scaled to 100 the
    samples range from confident (‖ḡ‖ far below 1e-10: the step shrinks to nothing) to unsure (‖ḡ‖ ≫ 1e-10:
    the guard is negligible); the ratio is measured to 1e-3 (a step of 0.05 in L2 moves a pixel by ~1e-3,
    whose float32 rounding at 0.5 is 6e-8)."""
    from linear_model import LinearClassifier, make_inputs

    model = LinearClassifier((1, 28, 28), seed=0, logit_scale=100.0).eval()
    x, y = make_inputs(model, 16, seed=1)
    spec = AttackSpec(attack="pgd", norm="L2", eps=1.0, steps=1, step_size=0.05)
    own = _run(OWN, model, x, y, spec).x_adv
    ref = _run("torchattacks", model, x, y, spec).x_adv
    assert 0 < float(own.min()) and float(own.max()) < 1, "the box must not clip this step"
    xg = x.clone().requires_grad_(True)
    grad = torch.autograd.grad(torch.nn.functional.cross_entropy(model(xg), y), xg)[0]
    mean_norm = grad.flatten(1).norm(dim=1).double()
    expected = mean_norm / (mean_norm + 1e-10)
    measured = (ref - x).flatten(1).norm(dim=1).double() / (own - x).flatten(1).norm(dim=1).double()
    torch.testing.assert_close(measured, expected, rtol=1e-3, atol=1e-3)
    assert float(expected.min()) < 0.01 and float(expected.max()) > 0.99, "both regimes among these samples"


def test_art_pgd_l2_differs_exactly_by_clip_then_project_order(mnist_model, mnist_batch):
    x, y = mnist_batch
    spec = AttackSpec(attack="pgd", norm="L2", eps=1.5, steps=10, step_size=0.4)
    art = _run("art", mnist_model, x, y, spec).x_adv
    own_default = _run(OWN, mnist_model, x, y, spec).x_adv
    art_order = pgd(
        mnist_model, x, y, eps=1.5, norm="L2", steps=10, step_size=0.4, clip_before_projection=True, channels_last=False
    )
    # With ART's order our PGD reproduces ART up to float rounding (ART normalizes the gradient of the
    # mean loss as |g|·(1/‖g‖)·sign(g)); a rounding difference can flip a ReLU late in the run, so we
    # require almost every sample to agree to 1e-5 and all to 1e-3. With our order it does not (MNIST
    # pixels sit at 0 and 1, so clipping is active from the first step).
    same_order = (art_order - art).abs().flatten(1).amax(1)
    our_order = (own_default - art).abs().flatten(1).amax(1)
    assert float((same_order <= 1e-5).float().mean()) >= 0.95 and float(same_order.max()) <= 1e-3
    assert float((our_order > 1e-3).float().mean()) >= 0.5


def test_advlib_pgd_returns_adversarial_iterates_or_clean_inputs(mnist_model, mnist_batch):
    x, y = mnist_batch
    spec = AttackSpec(attack="pgd", norm="Linf", eps=0.1, steps=10, step_size=0.02)
    own = _run(OWN, mnist_model, x, y, spec)
    ref = _run("advlib", mnist_model, x, y, spec)
    changed = (ref.x_adv != x).flatten(1).any(1)
    # adv-lib's contract: an adversarial iterate where it found one, the clean input elsewhere.
    assert bool(ref.success[changed].all())
    assert not bool(ref.success[~changed & own.clean_correct].any())
    assert abs(float(own.success.float().mean()) - float(ref.success.float().mean())) <= 0.1


def test_channels_last_agrees_to_rounding(mnist_model, mnist_batch):
    """Own's default (channels-last) layout changes the gradient's rounding only: FGSM's sign differs at
    most where the exact gradient is rounding noise, and PGD's path ends on the same predictions."""
    x, y = mnist_batch
    spec = AttackSpec(attack="fgsm", eps=0.15)
    fast, exact = _run("own", mnist_model, x, y, spec).x_adv, _run(OWN, mnist_model, x, y, spec).x_adv
    x_grad = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(mnist_model(x_grad), y, reduction="sum"), x_grad)
    differ = fast != exact
    assert float(differ.float().mean()) < 1e-3
    assert not differ.any() or float(grad[differ].abs().max()) <= 1e-6 * float(grad.abs().max())
    spec = AttackSpec(attack="pgd", norm="Linf", eps=0.2, steps=10, step_size=0.03)
    fast, exact = _run("own", mnist_model, x, y, spec), _run(OWN, mnist_model, x, y, spec)
    assert float((fast.x_adv != exact.x_adv).float().mean()) < 0.05
    assert float((fast.adv_pred == exact.adv_pred).float().mean()) >= 0.95

"""Properties every supported (library, attack) must have, checked through the runner.

Output in [0, 1], inside the eps ball, same shape/dtype/device; the caller's tensor and the model's
train/eval mode unchanged; the same seed gives the same output.
"""

from __future__ import annotations

import pytest
import torch

from advbridge.bridge.adapters import LIBRARIES, get_adapter
from advbridge.bridge.runner import Unsupported, run_attack
from advbridge.bridge.spec import AttackSpec

SPECS = {
    "fgsm": AttackSpec(attack="fgsm", eps=0.1),
    "fgsm-targeted": AttackSpec(attack="fgsm", eps=0.1, targeted=True),
    "pgd-linf": AttackSpec(attack="pgd", norm="Linf", eps=0.1, steps=5, step_size=0.03),
    "pgd-linf-rs": AttackSpec(attack="pgd", norm="Linf", eps=0.1, steps=5, step_size=0.03, random_start=True, seed=7),
    "pgd-l2": AttackSpec(attack="pgd", norm="L2", eps=1.0, steps=5, step_size=0.3),
    "pgd-l2-rs": AttackSpec(attack="pgd", norm="L2", eps=1.0, steps=5, step_size=0.3, random_start=True, seed=7),
    "pgd-linf-targeted": AttackSpec(attack="pgd", norm="Linf", eps=0.1, steps=5, step_size=0.03, targeted=True),
}

CASES = [
    pytest.param(lib, key, id=f"{lib}-{key}")
    for lib in LIBRARIES
    for key, spec in SPECS.items()
    if get_adapter(lib).unsupported_reason(spec) is None
]


@pytest.mark.usefixtures("deterministic")
@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize(("library", "key"), CASES)
def test_properties(mnist_model, mnist_batch, library, key, mode):
    spec = SPECS[key]
    x, y = mnist_batch[0][:8].clone(), mnist_batch[1][:8]
    labels = (y + 1) % 10 if spec.targeted else y
    x_copy = x.clone()
    mnist_model.train(mode == "train")
    try:
        first = run_attack(library, mnist_model, x, labels, spec, num_classes=10)
        assert mnist_model.training == (mode == "train"), "the caller's train/eval mode must be restored"
        second = run_attack(library, mnist_model, x, labels, spec, num_classes=10)
    finally:
        mnist_model.eval()
    assert first.status == "ok", first.reason  # "invalid" would mean a range/ball/side-effect check failed
    adv = first.x_adv
    assert adv.shape == x.shape and adv.dtype == x.dtype and adv.device == x.device
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    dist = first.linf if spec.norm.value == "Linf" else first.l2
    assert float(dist.max()) <= spec.eps * (1 + 1e-5) + 1e-6
    assert torch.equal(x, x_copy), "the input tensor must not be modified"
    assert torch.equal(first.x_adv, second.x_adv), "same seed must reproduce the same output"
    assert first.forward_images >= len(x) and first.backward_images >= len(x)


def test_unsupported_combinations_are_reported_not_emulated(mnist_model, mnist_batch):
    x, y = mnist_batch
    result = run_attack("advlib", mnist_model, x[:4], y[:4], SPECS["fgsm"], num_classes=10)
    assert isinstance(result, Unsupported) and result.status == "unsupported" and "no FGSM" in result.reason
    result = run_attack("foolbox", mnist_model, x[:4], y[:4], SPECS["fgsm-targeted"], num_classes=10)
    assert result.status == "unsupported" and "untargeted only" in result.reason

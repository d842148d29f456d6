"""A defended model is an ``nn.Module`` like any other: every library attacks it through the runner,
with the squeezer's backward deciding what the attacker sees."""

from __future__ import annotations

import pytest
import torch

from advbridge.bridge.adapters import LIBRARIES
from advbridge.bridge.runner import run_attack
from advbridge.bridge.spec import AttackSpec
from advbridge.defenses.preprocessor import BitDepth, PreprocessedClassifier

PGD = AttackSpec(attack="pgd", norm="Linf", eps=0.3, steps=10, step_size=0.05)


@pytest.fixture(scope="module")
def batch(mnist_batch):
    return mnist_batch[0][:32], mnist_batch[1][:32]


@pytest.mark.usefixtures("deterministic")
def test_every_library_attacks_the_defended_model_and_agrees_bitwise_through_bpda(mnist_model, batch):
    x, y = batch
    defended = PreprocessedClassifier(BitDepth(1, backward="bpda"), mnist_model)
    assert defended.in_chans == 1 and defended.num_classes == 10
    own = run_attack("own", defended, x, y, PGD)
    assert own.status == "ok"
    for library in LIBRARIES:
        result = run_attack(library, defended, x, y, PGD)
        assert result.status == "ok", (library, result.reason)
        if library in ("art", "foolbox", "torchattacks"):  # PGD L∞ without random start: the same operations
            assert torch.equal(result.x_adv, own.x_adv), library
    assert float(own.success[own.clean_correct].double().mean()) > 0, "BPDA-PGD must find some examples"


def test_naive_gradient_of_bit_depth_is_zero_so_pgd_does_not_move(mnist_model, batch):
    """The exact gradient of rounding is zero: sign(0) = 0, PGD stays at the clean input and the defense
    looks perfect. That is the gradient-masking row a naive evaluation reports; BPDA is the real number."""
    x, y = batch
    naive = run_attack("own", PreprocessedClassifier(BitDepth(1), mnist_model), x, y, PGD)
    assert torch.equal(naive.x_adv, x) and not bool((naive.success & naive.clean_correct).any())
    bpda = run_attack("own", PreprocessedClassifier(BitDepth(1, backward="bpda"), mnist_model), x, y, PGD)
    assert bool((bpda.success & bpda.clean_correct).any())

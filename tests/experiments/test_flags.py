"""Each gradient-masking flag fires on a model built to trip it and stays quiet on the plain CNN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from defenses.preprocessor import BitDepth, PreprocessedClassifier
from experiments import flags


class Softmax(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).softmax(1)


class Noisy(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model((x + 0.1 * torch.randn_like(x)).clamp(0, 1))


@pytest.fixture(scope="module")
def plain(mnist_workload):
    return mnist_workload.model, mnist_workload.x[:32], mnist_workload.y[:32]


def test_quiet_on_the_plain_cnn(plain):
    model, x, y = plain
    values = {
        "random_outputs": flags.random_outputs(model, x),
        "probability_outputs": flags.probability_outputs(model, x),
        "zero_grad_share": flags.zero_gradient_share(model, x, y),
    }
    assert values == {"random_outputs": 0.0, "probability_outputs": 0.0, "zero_grad_share": 0.0}
    assert not any(flags.raised(name, value) for name, value in values.items())


def test_bit_depth_without_bpda_has_zero_gradients(plain):
    model, x, y = plain
    exact = PreprocessedClassifier(BitDepth(1, backward="exact"), model)
    assert flags.zero_gradient_share(exact, x, y) == 1.0
    bpda = PreprocessedClassifier(BitDepth(1, backward="bpda"), model)
    assert flags.zero_gradient_share(bpda, x, y) == 0.0


def test_softmax_outputs_are_flagged(plain):
    model, x, _ = plain
    value = flags.probability_outputs(Softmax(model), x)
    assert value == 1.0 and flags.raised("probability_outputs", value)


def test_random_model_is_flagged_and_mode_restored(plain):
    model, x, _ = plain
    noisy = Noisy(model).train()
    value = flags.random_outputs(noisy, x)
    assert value > 0.9 and flags.raised("random_outputs", value)
    assert noisy.training


def test_value_flags():
    assert flags.raised("single_step_beats_iterative", flags.single_step_beats_iterative(0.2, 0.6))
    assert not flags.raised("single_step_beats_iterative", flags.single_step_beats_iterative(0.6, 0.2))
    assert flags.weaker_attack_beats_white_box(0.3, 0.5) == pytest.approx(0.2)
    assert flags.unbounded_incomplete(0.95) == pytest.approx(0.05)
    assert not flags.raised("unbounded_incomplete", flags.unbounded_incomplete(1.0))
    assert flags.non_monotone_eps([(0.1, 0.8), (0.3, 0.2), (0.2, 0.5)]) == 0.0
    assert flags.non_monotone_eps([(0.1, 0.8), (0.2, 0.3), (0.3, 0.6)]) == pytest.approx(0.3)

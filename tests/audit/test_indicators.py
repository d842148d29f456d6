"""Each indicator fires on a model built to trip it and stays quiet on the committed CNN."""

from __future__ import annotations

import math

import pytest
import torch
from broken_defenses import GaussianNoise, NumpyPreprocess, Probabilities, Quantized, SaturatedLogits
from torch import nn

from advbridge.experiments.core import indicators as ind


@pytest.fixture(scope="module")
def batch(mnist_batch):
    x, y = mnist_batch
    return x[:16], y[:16]


class Dynamic(nn.Module):
    """A test-time defense: one gradient step on the input inside ``forward`` (named ``grad`` by import)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        from torch.autograd import grad

        with torch.enable_grad():
            z = x.detach().requires_grad_(True)
            (g,) = grad(self.net(z).logsumexp(1).sum(), z)
        return self.net((x - 0.01 * g.sign()).clamp(0, 1))


def test_model_indicators_are_quiet_on_the_plain_cnn(mnist_model, batch):
    x, y = batch
    values = {
        "randomized": ind.randomized(mnist_model, x, y),
        "probability_outputs": ind.probability_outputs(mnist_model, x),
        "zero_gradients": ind.zero_gradients(mnist_model, x, y, 10),
        "dynamic": ind.dynamic(mnist_model, x),
        "unavailable_gradients": ind.unavailable_gradients(mnist_model, x, y),
        "unstable_predictions": ind.unstable_predictions(mnist_model, x, y),
        "saturated_softmax": ind.saturated_softmax(mnist_model, x),
        "too_few_classes": 10.0,
    }
    raised = {name: v for name, v in values.items() if ind.INDICATORS[name].raised(v)}
    assert raised == {}


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (GaussianNoise, "randomized"),
        (GaussianNoise, "unstable_predictions"),
        (Probabilities, "probability_outputs"),
        (Quantized, "zero_gradients"),
        (Quantized, "unavailable_gradients"),
        (NumpyPreprocess, "unavailable_gradients"),
        (SaturatedLogits, "unavailable_gradients"),
        (SaturatedLogits, "saturated_softmax"),
        (Dynamic, "dynamic"),
    ],
)
def test_model_indicator_fires_on_the_model_built_to_trip_it(mnist_model, batch, make, name):
    x, y = batch
    model = make(mnist_model).eval()
    torch.manual_seed(0)
    value = {
        "randomized": lambda: ind.randomized(model, x, y),
        "unstable_predictions": lambda: ind.unstable_predictions(model, x, y),
        "probability_outputs": lambda: ind.probability_outputs(model, x),
        "zero_gradients": lambda: ind.zero_gradients(model, x, y, 10),
        "unavailable_gradients": lambda: ind.unavailable_gradients(model, x, y),
        "saturated_softmax": lambda: ind.saturated_softmax(model, x),
        "dynamic": lambda: ind.dynamic(model, x),
    }[name]()
    assert ind.INDICATORS[name].raised(value), (name, value)


def test_saturated_logits_keep_their_margin_gradient(mnist_model, batch):
    """The remedy's choice: scaled logits lose the cross-entropy's gradient, not the margin's; quantization both."""
    x, y = batch
    assert ind.margin_gradients_unavailable(SaturatedLogits(mnist_model), x, y) == 0
    assert ind.margin_gradients_unavailable(Quantized(mnist_model), x, y) == 1


def test_too_few_classes_is_raised_below_three():
    info = ind.INDICATORS["too_few_classes"]
    assert info.raised(2.0) and not info.raised(3.0)
    assert math.isnan(ind.zero_gradients(nn.Linear(4, 2), torch.rand(3, 4), torch.zeros(3, dtype=torch.long), 2))


def test_attack_level_indicators_on_known_cases():
    attacked = torch.tensor([True, True, True, False])
    # silent success: sample 1's path was adversarial, its returned point is not
    returned = torch.tensor([True, False, False, False])
    path = torch.tensor([True, True, False, True])
    assert ind.silent_success(returned, path, attacked) == pytest.approx(1 / 3)
    # transfer failure: samples 0 and 2 fool the surrogate, only 0 the target
    assert ind.transfer_failure(torch.tensor([True, False, True, True]), returned, attacked) == pytest.approx(1 / 3)
    assert ind.unconstrained_failure(torch.tensor([True, False, True, False]), attacked) == pytest.approx(1 / 3)


def test_incomplete_optimization_on_traces():
    converged = torch.cat([torch.linspace(1, -1, 30), torch.full((20,), -1.0)])
    still_falling = torch.linspace(1, -1, 50)
    flat = torch.ones(50)
    assert not ind.incomplete(converged)
    assert ind.incomplete(still_falling)
    assert not ind.incomplete(flat)
    failed = torch.tensor([True, True, False])
    # the falling trace of a sample the attack succeeded on does not count
    assert ind.incomplete_optimization([converged, still_falling, still_falling], failed) == pytest.approx(1 / 3)


def test_reject_class_counts_with_the_true_class():
    """A detector as a classifier with a reject class: fooled means wrong *and* not rejected; the margin is
    max(z_y, z_reject) − max over the other classes."""
    from advbridge.experiments.core.losses import fooled, margin_loss

    logits = torch.tensor([[3.0, 1.0, 0.0, 5.0], [0.0, 4.0, 1.0, 2.0], [2.0, 0.0, 1.0, -1.0]])
    labels = torch.tensor([0, 0, 0])
    assert margin_loss(logits, labels, reject=3).tolist() == [4.0, -2.0, 1.0]
    assert margin_loss(logits, labels).tolist() == [-2.0, -4.0, 1.0]
    assert fooled(logits.argmax(1), labels, reject=3).tolist() == [False, True, False]


def test_rejecting_classifier_predicts_reject_exactly_above_the_threshold(mnist_model, batch):
    from advbridge.defenses.detector import RejectingClassifier

    x, _ = batch
    score = torch.linspace(0, 1, len(x))
    system = RejectingClassifier(mnist_model, lambda inputs: score[: len(inputs)], 0.5, num_classes=10)
    pred = system(x).argmax(1)
    assert torch.equal(pred == 10, score > 0.5)
    assert torch.equal(pred[score <= 0.5], mnist_model(x).argmax(1)[score <= 0.5])

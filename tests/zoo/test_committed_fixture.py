"""The committed test classifier (``tests/fixtures/mnist_cnn``) is what the suite says it is."""

from __future__ import annotations

import json
from dataclasses import asdict

from fixture_models import MNIST_CNN, default_mnist_config

from advbridge.zoo.checkpoints import load_checkpoint
from advbridge.zoo.datasets import load_dataset
from advbridge.zoo.train_config import LATER_DEFAULTS
from advbridge.zoo.training_data import evaluate


def test_fixture_is_the_default_mnist_model_and_the_suite_uses_it(mnist_workload):
    state, card = load_checkpoint(MNIST_CNN)  # sha256 of the weights checked against the card
    cfg = default_mnist_config().resolved()
    # fields added to the config after the fixture was trained count at their defaults (as in its cache key)
    recorded = {**LATER_DEFAULTS, **card["config"]}
    assert recorded == json.loads(json.dumps(asdict(cfg))), "retrain the fixture: the default config changed"
    assert mnist_workload.card["sha256"] == card["sha256"], "the session must attack the committed weights"
    assert all(name.startswith("backbone.") or name in ("mean", "std") for name in state)


def test_fixture_accuracy_is_reproduced_here(mnist_workload):
    """The card's test accuracy was measured where the fixture was trained; predicting the 1,000 test
    digits here may flip a digit whose two top logits tie within rounding, no more."""
    test = load_dataset("mnist-5k", "test")
    accuracy = evaluate(mnist_workload.model, test)
    assert abs(accuracy - mnist_workload.card["accuracy"]) <= 0.002, accuracy

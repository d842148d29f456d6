"""The training check (``zoo.training_check``): a model that did not learn is named, from its card alone."""

from __future__ import annotations

import math

import pytest

from advbridge.zoo.training_check import CHANCE_MARGIN, check_card, classifier_check, generator_check, warn_if_failed


def card(accuracy: float, *, val_clean: float | None = None, initial: float | None = 2.4, losses=(1.0, 0.5), **config):
    return {
        "num_classes": 10,
        "accuracy": accuracy,
        "val_clean_accuracy": val_clean,
        "initial_loss": initial,
        "history": [{"epoch": i + 1, "loss": v} for i, v in enumerate(losses)],
        "config": {"weights": None, "pretrained": False, **config},
    }


def test_a_model_at_chance_failed_and_the_reason_names_the_numbers():
    check = classifier_check(card(0.075, losses=(2.33, 2.30)))
    assert check.failed and check.value == pytest.approx(0.075 - 0.1)
    assert check.reasons == ("clean test accuracy 0.0750, chance 0.1000",)
    assert "did not learn (clean test accuracy 0.0750, chance 0.1000)" in check.warning("net")


def test_the_validation_accuracy_speaks_before_the_test_accuracy_and_the_margin_is_the_bound():
    assert not classifier_check(card(0.99, val_clean=0.1 + CHANCE_MARGIN + 1e-9)).failed
    assert classifier_check(card(0.99, val_clean=0.1 + CHANCE_MARGIN - 1e-9)).failed  # validation says chance
    assert classifier_check(card(0.99, val_clean=0.14)).reasons[0].startswith("clean validation accuracy 0.1400")


def test_a_loss_that_never_fell_from_scratch_failed_but_a_warm_start_may_keep_its_loss():
    flat = classifier_check(card(0.9, initial=0.03, losses=(0.031, 0.04)))
    assert flat.failed and "never fell below its start 0.0300 (lowest epoch mean 0.0310)" in flat.reasons[0]
    assert not classifier_check(card(0.9, initial=0.03, losses=(0.031,), weights="w.safetensors")).failed
    assert not classifier_check(card(0.9, initial=0.03, losses=(0.031,), pretrained=True)).failed


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_loss_that_became_nan_or_inf_failed_even_from_a_warm_start(bad):
    check = classifier_check(card(0.9, losses=(0.5, bad), weights="w.safetensors"))
    assert check.failed and check.reasons == (f"training loss became {bad}",)


def test_a_card_without_a_trained_models_fields_gets_no_verdict():
    check = classifier_check({})
    assert not check.failed and math.isnan(check.value)


def test_a_generator_no_better_than_the_mean_image_failed():
    good = {"kind": "generator", "test_reconstruction": 10.0, "mean_image_reconstruction": 50.0}
    assert check_card(good).value == pytest.approx(0.8) and not check_card(good).failed
    bad = {**good, "test_reconstruction": 49.0}
    assert generator_check(bad).failed and "the mean image's 50.000 (removes 2.0%)" in generator_check(bad).reasons[0]
    assert not generator_check({"kind": "generator", "test_reconstruction": 10.0}).failed  # older card


def test_the_warning_is_one_line_naming_the_model(caplog):
    warn_if_failed(card(0.1, losses=(2.3,)), "advbridge_mnist_cnn on mnist-5k (adv-pgd, own trainer)")
    (record,) = caplog.records
    assert record.levelname == "WARNING" and "\n" not in record.getMessage()
    assert record.getMessage().startswith("advbridge_mnist_cnn on mnist-5k (adv-pgd, own trainer) did not learn")
    caplog.clear()
    warn_if_failed(card(0.9), "fine")
    assert not caplog.records

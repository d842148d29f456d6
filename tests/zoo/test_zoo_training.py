"""Training runs, the model cache and the training config."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from advbridge.bridge.errors import InvalidParameterError, UnknownNameError
from advbridge.zoo import training
from advbridge.zoo.models import NormalizedClassifier
from advbridge.zoo.optim import make_optimizer, make_schedule
from advbridge.zoo.train_config import FAST_RECIPE, TrainConfig
from advbridge.zoo.training import get_or_train, train
from advbridge.zoo.training_data import augment_batch, training_data

QUICK = {"dataset": "mnist-5k", "model": "advbridge_mnist_cnn", "epochs": 1, "batch_size": 100}


@pytest.mark.slow
def test_short_training_run_gives_a_model_and_a_card() -> None:
    rng_before = torch.random.get_rng_state()
    model, card = train(TrainConfig(**QUICK, max_train=1000), progress=False)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the caller's RNG is left alone
    assert isinstance(model, NormalizedClassifier) and not model.training
    assert (card["train_samples"], card["val_samples"], card["test_samples"]) == (1000, 400, 1000)
    assert card["accuracy"] > 0.6 and card["epochs_run"] == 1  # one epoch on 1,000 digits: ~90 %
    assert card["config"]["augment"] is False and card["family"] == "mnist" and card["num_classes"] == 10


@pytest.mark.slow
def test_get_or_train_reuses_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ADVBRIDGE_CACHE", str(tmp_path))
    config = TrainConfig(**QUICK, max_train=300, val_fraction=0.05)
    with caplog.at_level(logging.INFO, logger="advbridge.zoo"):
        first, card = get_or_train(config, progress=False)
    assert "no cached model for advbridge_mnist_cnn" in caplog.text
    (folder,) = (tmp_path / "models").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["card.json", "model.safetensors"]
    mtime = (folder / "model.safetensors").stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("trained again although the cache holds the model")

    monkeypatch.setattr(training, "train", no_training)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="advbridge.zoo"):
        second, card2 = get_or_train(config, progress=False)
    assert "using cached model" in caplog.text and "no cached model" not in caplog.text
    assert card2 == card and (folder / "model.safetensors").stat().st_mtime_ns == mtime
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(first(x), second(x))
    assert not second.training


@pytest.mark.slow
def test_get_or_train_retrains_a_corrupt_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ADVBRIDGE_CACHE", str(tmp_path))
    config = TrainConfig(**QUICK, max_train=200, val_fraction=0.05)
    _, card = get_or_train(config, progress=False)
    (folder,) = (tmp_path / "models").iterdir()
    (folder / "model.safetensors").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="advbridge.zoo"):
        _, card2 = get_or_train(config, progress=False)
    assert "unusable" in caplog.text and "does not match its card" in caplog.text
    assert card2["sha256"] == card["sha256"]  # same seed, same weights


def test_cache_key_ignores_data_root_and_resolves_defaults() -> None:
    a = TrainConfig("mnist-5k", "advbridge_mnist_cnn")
    b = TrainConfig("mnist-5k", "advbridge_mnist_cnn", data_root="/elsewhere", augment=False)
    assert a.cache_fields() == b.cache_fields()
    resolved = a.resolved()
    assert resolved.epochs >= 1 and resolved.lr > 0 and resolved.augment is False
    assert TrainConfig("cifar10", "advbridge_cifar_cnn").resolved().augment is True


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"epochs": 0}, InvalidParameterError, "expected epochs as an int >= 1, got 0"),
        ({"lr": -1.0}, InvalidParameterError, "expected lr > 0"),
        ({"val_fraction": 1.0}, InvalidParameterError, r"expected val_fraction in \[0, 1\), got 1.0"),
        ({"max_train": 0}, InvalidParameterError, "expected max_train as an int >= 1, got 0"),
        ({"finetune": "heads"}, UnknownNameError, "did you mean 'head'"),
        ({"optimizer": "sgdd"}, UnknownNameError, "did you mean 'sgd'"),
        ({"schedule": "cyclical"}, UnknownNameError, "did you mean 'cyclic'"),
        ({"clip_grad_norm": 0.0}, InvalidParameterError, "expected clip_grad_norm > 0 or None, got 0.0"),
    ],
)
def test_config_validation(changes: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        TrainConfig("mnist-5k", "advbridge_mnist_cnn", **changes)


def test_recipe_fields_enter_the_cache_key_only_when_set() -> None:
    plain = TrainConfig("mnist-5k", "advbridge_mnist_cnn").cache_fields()
    assert not {"optimizer", "schedule", "clip_grad_norm"} & set(plain)  # keys cached before them still hold
    fast = TrainConfig("mnist-5k", "advbridge_mnist_cnn", **FAST_RECIPE).cache_fields()
    assert {k: fast[k] for k in FAST_RECIPE} == FAST_RECIPE and fast != plain


def _learning_rates(cfg: TrainConfig, steps_per_epoch: int) -> list[float]:
    optimizer = make_optimizer(cfg, [torch.zeros(1, requires_grad=True)])
    schedule, rates = make_schedule(cfg, optimizer, steps_per_epoch), []
    for _ in range(cfg.epochs * steps_per_epoch):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


def test_cyclic_schedule_is_wong_et_al_s_and_art_fbf_s() -> None:
    cfg = TrainConfig("mnist-5k", "advbridge_mnist_cnn", epochs=5, **FAST_RECIPE).resolved()
    rates = _learning_rates(cfg, 7)
    # ART's AdversarialTrainerFBFPyTorch.fit: lr before batch b of epoch e is
    # interp(e + (b + 1) / nb_batches, [0, 2 * E // 5, E], [0, 0.21, 0])
    art = [np.interp(e + (b + 1) / 7, [0, 5 * 2 // 5, 5], [0, 0.21, 0]) for e in range(5) for b in range(7)]
    np.testing.assert_allclose(rates, art, rtol=1e-12, atol=1e-15)
    assert max(rates) == pytest.approx(0.21) and rates[-1] == 0.0 and rates[0] == pytest.approx(0.21 / 14)
    cosine = _learning_rates(TrainConfig("mnist-5k", "advbridge_mnist_cnn", epochs=2, lr=0.1).resolved(), 5)
    assert cosine[0] == 0.1 and all(a > b for a, b in zip(cosine, cosine[1:]))


@pytest.mark.slow
def test_gradient_clipping_reaches_the_weights() -> None:
    """SGD at lr 1 moves the weights by lr·‖g‖ per step at most: clipped at 1e-6, they barely move."""
    start = TrainConfig(**{**QUICK, "epochs": 1}, max_train=200, val_fraction=0.0, optimizer="sgd", lr=1.0)
    clipped = TrainConfig(**{**QUICK, "epochs": 1}, max_train=200, val_fraction=0.0, optimizer="sgd", lr=1.0,
                          clip_grad_norm=1e-6, weight_decay=0.0)  # fmt: skip
    initial, _ = training.initial_model(start.resolved(), training_data(start.resolved()).info)
    moved = {name: train(cfg, progress=False)[0].state_dict() for name, cfg in (("free", start), ("clipped", clipped))}
    shift = {
        k: sum(float((v - initial.state_dict()[n]).norm() ** 2) for n, v in s.items()) ** 0.5 for k, s in moved.items()
    }
    # two steps (200 digits, batch 100) of at most 1e-6 each, with momentum 0.9: under 3e-6 in all
    assert shift["clipped"] < 3e-6 < 1e-2 < shift["free"]


def test_augment_batch_crops_and_flips_within_the_padded_image() -> None:
    torch.manual_seed(0)
    x = torch.rand(64, 3, 8, 8)
    out = augment_batch(x, pad=2)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(len(x)):  # each output is one of the 2 * 5 * 5 shifted, maybe flipped crops
        crops = [padded[i, :, r : r + 8, c : c + 8] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], crop) or torch.equal(out[i], crop.flip(2)) for crop in crops)


@pytest.mark.slow
def test_training_on_image_files_with_augmentation(make_image_tree) -> None:
    tree = make_image_tree(["a", "b", "c"], per_class=10)
    config = TrainConfig(f"imagefolder:{tree}", "advbridge_cifar_cnn", epochs=2, batch_size=8, image_size=16)
    model, card = train(config, progress=False)
    assert card["config"]["augment"] is True and card["image_size"] == 16 and card["num_classes"] == 3
    assert (card["train_samples"], card["val_samples"], card["test_samples"]) == (22, 2, 6)
    assert 0.0 <= card["accuracy"] <= 1.0 and model(torch.rand(2, 3, 16, 16)).shape == (2, 3)

"""Training runs, the model cache and the training config."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from bridge.errors import InvalidParameterError, UnknownNameError
from zoo import training
from zoo.models import NormalizedClassifier
from zoo.training import TrainConfig, augment_batch, get_or_train, train

QUICK = {"dataset": "mnist-5k", "model": "advbridge_mnist_cnn", "epochs": 1, "batch_size": 100}


def test_short_training_run_gives_a_model_and_a_card() -> None:
    rng_before = torch.random.get_rng_state()
    model, card = train(TrainConfig(**QUICK, max_train=1000), progress=False)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the caller's RNG is left alone
    assert isinstance(model, NormalizedClassifier) and not model.training
    assert (card["train_samples"], card["val_samples"], card["test_samples"]) == (1000, 400, 1000)
    assert card["accuracy"] > 0.6 and card["epochs_run"] == 1  # one epoch on 1,000 digits: ~90 %
    assert card["config"]["augment"] is False and card["family"] == "mnist" and card["num_classes"] == 10


def test_get_or_train_reuses_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ADVBRIDGE_CACHE", str(tmp_path))
    config = TrainConfig(**QUICK, max_train=300, val_fraction=0.05)
    with caplog.at_level(logging.INFO, logger="zoo"):
        first, card = get_or_train(config, progress=False)
    assert "no cached model for advbridge_mnist_cnn" in caplog.text
    (folder,) = (tmp_path / "models").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["card.json", "model.safetensors"]
    mtime = (folder / "model.safetensors").stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("trained again although the cache holds the model")

    monkeypatch.setattr(training, "train", no_training)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="zoo"):
        second, card2 = get_or_train(config, progress=False)
    assert "using cached model" in caplog.text and "no cached model" not in caplog.text
    assert card2 == card and (folder / "model.safetensors").stat().st_mtime_ns == mtime
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(first(x), second(x))
    assert not second.training


def test_get_or_train_retrains_a_corrupt_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ADVBRIDGE_CACHE", str(tmp_path))
    config = TrainConfig(**QUICK, max_train=200, val_fraction=0.05)
    _, card = get_or_train(config, progress=False)
    (folder,) = (tmp_path / "models").iterdir()
    (folder / "model.safetensors").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="zoo"):
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
    ],
)
def test_config_validation(changes: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        TrainConfig("mnist-5k", "advbridge_mnist_cnn", **changes)


def test_augment_batch_crops_and_flips_within_the_padded_image() -> None:
    torch.manual_seed(0)
    x = torch.rand(64, 3, 8, 8)
    out = augment_batch(x, pad=2)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(len(x)):  # each output is one of the 2 * 5 * 5 shifted, maybe flipped crops
        crops = [padded[i, :, r : r + 8, c : c + 8] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], crop) or torch.equal(out[i], crop.flip(2)) for crop in crops)


def test_training_on_image_files_with_augmentation(make_image_tree) -> None:
    tree = make_image_tree(["a", "b", "c"], per_class=10)
    config = TrainConfig(f"imagefolder:{tree}", "advbridge_cifar_cnn", epochs=2, batch_size=8, image_size=16)
    model, card = train(config, progress=False)
    assert card["config"]["augment"] is True and card["image_size"] == 16 and card["num_classes"] == 3
    assert (card["train_samples"], card["val_samples"], card["test_samples"]) == (22, 2, 6)
    assert 0.0 <= card["accuracy"] <= 1.0 and model(torch.rand(2, 3, 16, 16)).shape == (2, 3)

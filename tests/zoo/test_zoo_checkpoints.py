"""Checkpoint folders: atomic writes, sha256 verification, cache paths."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from advbridge.bridge.errors import CheckpointError
from advbridge.zoo import checkpoints
from advbridge.zoo.checkpoints import cache_dir, checkpoint_dir, config_key, load_checkpoint, save_checkpoint
from advbridge.zoo.models import create_classifier


@pytest.fixture
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_classifier("advbridge_mnist_cnn", num_classes=10, in_chans=1, mean=(0.1307,), std=(0.3081,))


def test_save_and_load_round_trip(tmp_path: Path, model: torch.nn.Module) -> None:
    folder = tmp_path / "ckpt"
    card = save_checkpoint(model, {"dataset": "mnist-5k", "model": "advbridge_mnist_cnn", "accuracy": 0.5}, folder)
    assert sorted(os.listdir(folder)) == ["card.json", "model.safetensors"]  # no temporary files left
    assert set(card["versions"]) == {"torch", "torchvision", "timm"} and card["created"]
    assert card == json.loads((folder / "card.json").read_text())
    state, loaded = load_checkpoint(folder)
    assert loaded == card
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert load_checkpoint(folder / "model.safetensors")[1] == card


def test_changed_weights_fail_the_sha256_check(tmp_path: Path, model: torch.nn.Module) -> None:
    save_checkpoint(model, {"accuracy": 0.5}, tmp_path)
    weights = tmp_path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{weights} does not match its card"):
        load_checkpoint(tmp_path)


def test_missing_or_broken_card(tmp_path: Path, model: torch.nn.Module) -> None:
    with pytest.raises(CheckpointError, match="expected a checkpoint folder"):
        load_checkpoint(tmp_path)
    save_checkpoint(model, {}, tmp_path)
    (tmp_path / "card.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="could not read the card"):
        load_checkpoint(tmp_path)


def test_interrupted_write_leaves_old_files_and_no_temp(
    tmp_path: Path, model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_checkpoint(model, {"run": 1}, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.os, "replace", crash)
    with torch.no_grad():
        model.backbone.fc.bias.add_(1)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(model, {"run": 2}, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    load_checkpoint(tmp_path)  # still valid


def test_cache_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADVBRIDGE_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    assert config_key({"a": 1, "b": [2, 3]}) == config_key({"b": [2, 3], "a": 1})
    assert config_key({"a": 1}) != config_key({"a": 2}) and len(config_key({})) == 12
    folder = checkpoint_dir("imagefolder:/data/my pets", "resnet18", {"a": 1})
    assert folder.parent == tmp_path / "models"
    assert folder.name == f"imagefolder_data_my_pets-resnet18-{config_key({'a': 1})}"
    monkeypatch.delenv("ADVBRIDGE_CACHE")
    assert cache_dir() == Path("~/.cache/advbridge").expanduser()

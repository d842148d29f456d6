"""The normalization wrapper, the in-house nets in timm's registry, and loading weights safely."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from advbridge.bridge.errors import CheckpointError, InvalidInputError, InvalidParameterError, UnknownNameError
from advbridge.zoo import models
from advbridge.zoo.models import NormalizedClassifier, create_classifier, set_trainable

MNIST = {"num_classes": 10, "in_chans": 1, "mean": (0.1307,), "std": (0.3081,)}


def test_normalized_classifier_normalizes_inside() -> None:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    backbone.num_classes = 5
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    model = NormalizedClassifier(backbone, mean, std, model_name="lin")
    x = torch.rand(2, 3, 4, 4)
    manual = backbone((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    torch.testing.assert_close(model(x), manual)
    assert model.mean.shape == (1, 3, 1, 1) and (model.num_classes, model.in_chans) == (5, 3)
    assert {"mean", "std"} <= set(dict(model.named_buffers()))
    with pytest.raises(InvalidInputError, match=r"expected images \[N, 3, H, W\], got shape \(2, 1, 4, 4\)"):
        model(torch.rand(2, 1, 4, 4))
    with pytest.raises(InvalidParameterError, match="expected std with 1 or 3 values"):
        NormalizedClassifier(backbone, mean, (0.2, 0.3))
    with pytest.raises(InvalidParameterError, match="expected std > 0"):
        NormalizedClassifier(backbone, mean, (0.2, 0.0, 0.3))


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [
        ("advbridge_mnist_cnn", {}, (2, 1, 28, 28)),
        ("advbridge_cifar_cnn", {}, (2, 3, 32, 32)),
        ("advbridge_cifar_cnn", {"num_classes": 7, "in_chans": 1}, (2, 1, 64, 64)),
    ],
)
def test_inhouse_nets_are_in_timm(name: str, kwargs: dict, shape: tuple[int, ...]) -> None:
    assert name in timm.list_models() and name in timm.list_models("advbridge*")
    net = timm.create_model(name, **kwargs)
    assert net(torch.rand(shape)).shape == (shape[0], kwargs.get("num_classes", 10))
    assert not any(isinstance(m, nn.ReLU) and m.inplace for m in net.modules())  # hooks need non-inplace
    assert isinstance(net.get_classifier(), nn.Linear)


def test_timm_backbone_by_name_on_grey_digits() -> None:
    model = create_classifier("resnet18", **MNIST)
    assert not model.training and model.model_name == "resnet18"
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown model 'resnet19'; did you mean 'resnet18'"):
        create_classifier("resnet19", **MNIST)


def test_pretrained_errors_are_checkpoint_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CheckpointError, match="no pretrained weights for 'advbridge_mnist_cnn'"):
        create_classifier("advbridge_mnist_cnn", pretrained=True, **MNIST)

    def offline(*args, **kwargs):
        raise OSError("Name or service not known")  # what the hub raises without a network

    monkeypatch.setattr(models.timm, "create_model", offline)
    with pytest.raises(CheckpointError, match="could not download pretrained weights.*--weights FILE"):
        create_classifier("resnet18", pretrained=True, **MNIST)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize("wrapped", [False, True])
def test_weights_file_with_other_head(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, suffix: str, wrapped: bool
) -> None:
    torch.manual_seed(0)
    source = create_classifier("advbridge_mnist_cnn", **MNIST)
    # our own checkpoints carry the backbone. prefix (and mean/std buffers); plain files do not
    state = (source if wrapped else source.backbone).state_dict()
    path = tmp_path / f"w{suffix}"
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    with caplog.at_level(logging.WARNING, logger="advbridge.zoo"):
        target = create_classifier("advbridge_mnist_cnn", weights=path, **{**MNIST, "num_classes": 3})
    assert "skipped 2 tensors" in caplog.text and "fc.weight" in caplog.text
    src, dst = source.backbone.state_dict(), target.backbone.state_dict()
    assert dst["fc.weight"].shape == (3, 128)
    for key in src:
        if not key.startswith("fc."):
            assert torch.equal(src[key], dst[key]), key


def test_weights_file_that_matches_nothing(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(CheckpointError, match="no matching tensor"):
        create_classifier("advbridge_mnist_cnn", weights=path, **MNIST)
    with pytest.raises(CheckpointError, match="no file at"):
        create_classifier("advbridge_mnist_cnn", weights=tmp_path / "missing.pt", **MNIST)


class _Payload:
    """Unpickling this object would create a file: the weights loader must never do it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"fc.weight": torch.zeros(10, 128), "payload": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="refused to load .*code execution"):
        create_classifier("advbridge_mnist_cnn", weights=path, **MNIST)
    assert not marker.exists()
    path.write_bytes(pickle.dumps(_Payload(marker)))  # a bare pickle, not a torch zip
    with pytest.raises(CheckpointError, match="refused to load"):
        create_classifier("advbridge_mnist_cnn", weights=path, **MNIST)
    assert not marker.exists()


def test_set_trainable_head_only() -> None:
    model = create_classifier("advbridge_cifar_cnn", num_classes=10, in_chans=3, mean=(0.5,), std=(0.5,))
    n_head = set_trainable(model, "head")
    assert n_head == 128 * 16 * 10 + 10
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["backbone.fc.weight", "backbone.fc.bias"]
    assert set_trainable(model, "all") == sum(p.numel() for p in model.parameters())
    with pytest.raises(UnknownNameError, match="did you mean 'head'"):
        set_trainable(model, "heads")

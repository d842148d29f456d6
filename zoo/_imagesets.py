"""Dataset containers and helpers shared by the loaders in :mod:`zoo.datasets`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset
from torchvision.transforms import functional as TF

from advbridge.bridge.errors import DataNotFoundError, InvalidParameterError


class TensorImages(Dataset):
    """A whole dataset held as two tensors (fast: no per-item PIL decoding).

    Args:
        images: ``uint8`` in [0, 255] or float in [0, 1].
        labels: integer class labels.

    Shape:
        images: ``[N, C, H, W]``; labels: ``[N]``.
    """

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        if images.ndim != 4 or labels.shape != (images.shape[0],):
            raise InvalidParameterError(
                f"expected images [N,C,H,W] and labels [N], got {tuple(images.shape)} and {tuple(labels.shape)}"
            )
        self.images = images
        self.labels = labels.long()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return to_float(self.images[index]), int(self.labels[index])

    def tensors(self, indices: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Images as float32 in [0, 1] and int64 labels, all or the given ``indices``."""
        if indices is None:
            return to_float(self.images), self.labels.clone()
        return to_float(self.images[indices]), self.labels[indices]


class ImageFiles(Dataset):
    """Image files decoded on access, converted to RGB, optionally resized and center-cropped to a square.

    Args:
        samples: ``(path, label)`` pairs.
        image_size: side of the output square; ``None`` keeps the file's size (all files must then match).
    """

    def __init__(self, samples: Sequence[tuple[str, int]], image_size: int | None) -> None:
        self.samples, self.image_size = list(samples), image_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        with Image.open(path) as img:
            img = img.convert("RGB")
        if self.image_size is not None and img.size != (self.image_size, self.image_size):
            # Shorter side to image_size, then the central square: keeps the aspect ratio.
            img = TF.center_crop(TF.resize(img, self.image_size, antialias=True), self.image_size)
        return TF.pil_to_tensor(img).float().div_(255), label


#: What the loaders of :mod:`zoo.datasets` return: a sized map-style dataset of ``(image, label)`` items.
ImageDataset: TypeAlias = TensorImages | ImageFiles


def to_float(images: Tensor) -> Tensor:
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()


def stratified_split(labels: Sequence[int] | Tensor, test_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded stratified split: per class, a random ``test_fraction`` of its indices goes to the test side.

    Returns:
        Sorted ``(train_indices, test_indices)`` as int64 tensors.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_test = round(len(idx) * test_fraction)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def resize_tensors(images: Tensor, image_size: int | None) -> Tensor:
    if image_size is None or images.shape[-1] == image_size:
        return images
    out = F.interpolate(to_float(images), size=(image_size, image_size), mode="bilinear", antialias=True)
    return out.clamp_(0, 1)


def scan_images(folder: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    try:
        return make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as exc:
        raise DataNotFoundError(f"expected images ({', '.join(IMG_EXTENSIONS)}) in {folder}: {exc}") from exc


def class_folders(folder: Path) -> list[str]:
    if not (names := sorted(p.name for p in folder.iterdir() if p.is_dir())):
        raise DataNotFoundError(f"expected one sub-folder per class in {folder}, got none")
    return names

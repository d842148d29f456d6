"""The data of a training run: the seeded train/validation split, batches (tensors or decoded files),
augmentation, and accuracy on a split."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from advbridge.bridge.errors import InvalidParameterError
from advbridge.zoo._imagesets import ImageDataset
from advbridge.zoo.datasets import TensorImages, dataset_info, load_dataset


def augment_batch(x: Tensor, pad: int = 4) -> Tensor:
    """CIFAR-style augmentation on a batch: random crop from a zero-padded image and random horizontal flip.

    Uses the global torch RNG (seeded by :func:`train`).

    Shape:
        x: ``[N, C, H, W]``; output: the same.
    """
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device) + torch.arange(h, device=x.device)
    cols = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device) + torch.arange(w, device=x.device)
    batch = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indices around a slice put their dimensions first: [N, H, W, C].
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    flip = torch.rand(n, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out).contiguous()


def batches(ds: Dataset, indices: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """The samples ``indices`` of ``ds`` in batches of ``batch_size``, in that order, as tensors."""
    if isinstance(ds, TensorImages):
        for start in range(0, len(indices), batch_size):
            yield ds.tensors(indices[start : start + batch_size])
        return
    # Files are decoded in worker processes; the sampler fixes the (seeded) order.
    workers = min(4, (os.cpu_count() or 1) - 1)
    yield from DataLoader(ds, batch_size=batch_size, sampler=indices.tolist(), num_workers=workers)


@torch.inference_mode()
def evaluate(model: nn.Module, ds: ImageDataset, indices: Tensor | None = None, batch_size: int = 500) -> float:
    """Accuracy of ``model`` (left in eval mode) on ``ds`` or on its ``indices``, in [0, 1]."""
    model.eval()
    device = next(model.parameters()).device
    indices = torch.arange(len(ds)) if indices is None else indices
    correct = 0
    for x, y in batches(ds, indices, batch_size):
        correct += (model(x.to(device)).argmax(1).cpu() == y).sum().item()
    return correct / max(len(indices), 1)


@dataclass
class TrainingData:
    """The splits of a training run: validation carved from the train split with the config's seed."""

    info: Any
    train_ds: ImageDataset
    test_ds: ImageDataset
    train_idx: Tensor
    val_idx: Tensor
    generator_state: Tensor  # the seeded generator after the split: it goes on to shuffle the epochs


class SplitConfig(Protocol):
    """What :func:`training_data` reads of a config: a classifier's :class:`~zoo.train_config.TrainConfig` or a
    generator's :class:`~defenses.generative.GeneratorConfig`."""

    dataset: str
    data_root: str | None
    image_size: int | None
    seed: int
    val_fraction: float
    max_train: int | None


def training_data(cfg: SplitConfig) -> TrainingData:
    """The datasets and the seeded train/validation split of a resolved config (every trainer uses it)."""
    info = dataset_info(cfg.dataset, cfg.data_root, cfg.image_size)
    train_ds = load_dataset(cfg.dataset, "train", cfg.data_root, cfg.image_size)
    test_ds = load_dataset(cfg.dataset, "test", cfg.data_root, cfg.image_size)
    gen = torch.Generator().manual_seed(cfg.seed)
    perm = torch.randperm(len(train_ds), generator=gen)
    n_val = round(len(train_ds) * cfg.val_fraction)
    val_idx, train_idx = perm[:n_val], perm[n_val:][: cfg.max_train]
    if len(train_idx) == 0:
        raise InvalidParameterError(f"expected training samples left after validation, got none of {len(train_ds)}")
    return TrainingData(info, train_ds, test_ds, train_idx, val_idx, gen.get_state())


def stack(ds: Dataset, indices: Tensor) -> tuple[Tensor, Tensor]:
    """The samples ``indices`` of ``ds`` as two tensors (images, labels)."""
    parts = list(batches(ds, indices, 500))
    return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])

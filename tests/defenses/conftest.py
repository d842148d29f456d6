"""Real images for the defense tests: MNIST digits of the suite's workload and exact CIFAR-10 test images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor


@pytest.fixture(scope="session")
def cifar_exact(shared_data) -> Tensor:
    """The first 64 exact CIFAR-10 test images (uint8 pixels from the official pickle), as (N, 3, 32, 32)."""
    path = shared_data / "cifar10_exact_partial" / "cifar10_exact_partial.npz"
    if not path.is_file():
        pytest.skip(f"exact CIFAR-10 images not found at {path}")
    images = np.load(path)["test_images"][:64]
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).contiguous()


@pytest.fixture(params=["mnist", "cifar10"])
def real_images(request, mnist_batch) -> Tensor:
    """64 real MNIST digits, then the 64 exact CIFAR-10 images."""
    return mnist_batch[0] if request.param == "mnist" else request.getfixturevalue("cifar_exact")

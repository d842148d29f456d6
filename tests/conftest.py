"""Shared fixtures: a trained MNIST CNN (trained once, then cached) and real MNIST digits."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def mnist_workload():
    """``advbridge_mnist_cnn`` trained on the embedded mnist-5k, and 64 of its test digits (CPU)."""
    from experiments.workload import load_workload

    torch.use_deterministic_algorithms(True)
    return load_workload("mnist-5k", n=64, seed=0, device="cpu", progress=False)


@pytest.fixture(scope="session")
def mnist_model(mnist_workload):
    return mnist_workload.model


@pytest.fixture(scope="session")
def mnist_batch(mnist_workload):
    return mnist_workload.x, mnist_workload.y

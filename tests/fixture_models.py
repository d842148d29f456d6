"""The committed test models: where they are and what config they stand for."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
#: ``advbridge_mnist_cnn`` trained on mnist-5k with the default config (``python cli.py train``).
MNIST_CNN = FIXTURES / "mnist_cnn"


def default_mnist_config():
    """The config whose trained model ``MNIST_CNN`` is: ``train --dataset mnist-5k`` with every default."""
    from advbridge.zoo.train_config import TrainConfig

    return TrainConfig(dataset="mnist-5k", model="advbridge_mnist_cnn")

"""A workload: a trained model plus a fixed, seeded batch of test images, the input of every experiment."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from advbridge.bridge.errors import InvalidParameterError
from advbridge.zoo.datasets import DatasetInfo, dataset_info, load_tensors
from advbridge.zoo.train_config import TrainConfig
from advbridge.zoo.training import get_or_train, load_trained

log = logging.getLogger(__name__)

#: The model trained when ``--model`` is not given, by dataset family.
DEFAULT_MODELS = {"mnist": "advbridge_mnist_cnn", "cifar10": "advbridge_cifar_cnn", "imagenet": "resnet18"}


@dataclass
class Workload:
    model: nn.Module
    x: Tensor
    y: Tensor
    info: DatasetInfo
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def context(self) -> dict[str, Any]:
        """Columns that identify the workload in a tidy table."""
        return {"dataset": self.info.name, "model": self.card.get("model", getattr(self.model, "model_name", "?"))}


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_workload(
    dataset: str = "mnist-5k",
    model: str | None = None,
    *,
    n: int = 100,
    seed: int = 0,
    data_root: str | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    **train_options: Any,
) -> Workload:
    """Load (or train and cache) ``model`` for ``dataset`` and ``n`` seeded test images.

    ``train_options`` go to :class:`zoo.train_config.TrainConfig` (``epochs``, ``lr``, ``batch_size``,
    ``pretrained``, ``weights``, ``finetune``...); ``None`` values are dropped so that the config's
    defaults apply (and the cache key stays the same). With ``checkpoint`` (a checkpoint folder, e.g. the
    one ``cli.py train`` prints), that model is used as it is, never trained; it must be for ``dataset``.
    """
    info = dataset_info(dataset, data_root=data_root)
    if checkpoint is not None:
        net, card = load_trained(checkpoint)
        if card.get("dataset") != dataset:
            raise InvalidParameterError(
                f"expected a checkpoint trained on {dataset}, got one trained on {card.get('dataset')!r}: {checkpoint}"
            )
    else:
        model_name = model or DEFAULT_MODELS[info.family]
        options = {k: v for k, v in train_options.items() if v is not None}
        config = TrainConfig(dataset=dataset, model=model_name, data_root=data_root, **options)
        net, card = get_or_train(config, progress=progress)
    x, y = load_tensors(dataset, split="test", n=n, data_root=data_root, seed=seed)
    dev = torch.device(device) if device is not None else default_device()
    return Workload(model=net.to(dev).eval(), x=x.to(dev), y=y.to(dev), info=info, card=card)

"""The card of a trained classifier: its test accuracy, the dataset's fields, the training history and config;
and a short name of the model from its card."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from torch import nn

from advbridge.zoo.train_config import TrainConfig
from advbridge.zoo.training_data import TrainingData, evaluate

logger = logging.getLogger(__name__)


def trained_card(cfg: TrainConfig, data: TrainingData, model: nn.Module, **fields: Any) -> dict[str, Any]:
    """The card of a trained model: its test accuracy (measured here), the dataset's fields, ``fields``."""
    info = data.info
    test_acc = evaluate(model, data.test_ds)
    logger.info("%s on %s: test accuracy %.2f%%", cfg.model, cfg.dataset, 100 * test_acc)
    card = {
        "dataset": cfg.dataset,
        "model": cfg.model,
        "accuracy": test_acc,
        "val_accuracy": None,
        "family": info.family,
        "num_classes": info.num_classes,
        "in_chans": info.in_chans,
        "image_size": info.image_size,
        "mean": list(info.mean),
        "std": list(info.std),
        "class_names": list(info.class_names),
        "train_samples": len(data.train_idx),
        "val_samples": len(data.val_idx),
        "test_samples": len(data.test_ds),
    }
    return {**card, **fields, "config": asdict(cfg)}


def describe_model(card: dict[str, Any]) -> str:
    """A short name of a trained classifier from its card, e.g. ``'advbridge_mnist_cnn on mnist-5k
    (adv-pgd, own trainer)'``."""
    defense = card.get("defense")
    whose = f", {defense.get('trainer', 'own')} trainer" if defense and "defense" in defense else ""
    return f"{card['model']} on {card['dataset']}" + (f" ({defense['defense']}{whose})" if defense else "")

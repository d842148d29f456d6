"""A classifier trained on squeezed images, to be deployed behind the same squeezer.

The CIFAR-10 study (``../shared/studies/002``) "pre-processed the training data via feature squeezing (a median
filter), then trained the model as usual", and evaluated it behind the filter: the classifier sees at test time
what it saw in training, so the squeezer costs less clean accuracy than in front of a plainly trained model
(Xu et al. 2018, Sec. 5, retrain on squeezed inputs). Training minimises E[CE(f(s(x)), y)] for the squeezer s;
validation (early stopping) is accuracy of f∘s. The squeezer is part of the model's cache key and card.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from advbridge.bridge.defense_spec import DefenseSpec
from advbridge.bridge.errors import UnsupportedDefenseError
from advbridge.defenses.preprocessor import build_squeezer
from advbridge.zoo.train_config import TrainConfig
from advbridge.zoo.training import cross_entropy_objective, get_or_train


def train_on_squeezed(
    config: TrainConfig, spec: DefenseSpec, *, progress: bool = True, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """The classifier of ``config`` trained on images squeezed by the resolved purifier ``spec`` (cached); the
    card's ``accuracy`` is on unsqueezed test images, ``val_accuracy`` on squeezed ones (deploy it behind
    the squeezer: :class:`~defenses.preprocessor.PreprocessedClassifier`)."""
    if spec.detector:
        raise UnsupportedDefenseError(f"expected a purifier to train on, got the detector {spec.describe()}")
    squeeze = build_squeezer(spec, "exact")

    def objective(model: nn.Module, x: Tensor, y: Tensor):
        with torch.no_grad():
            squeezed = squeeze(x)
        return cross_entropy_objective(model, squeezed, y)

    def validate(model: nn.Module, x: Tensor, y: Tensor) -> float:
        """accuracy on squeezed validation images"""
        with torch.no_grad():
            return float(torch.cat([model(squeeze(b)).argmax(1) for b in x.split(500)]).eq(y).double().mean())

    return get_or_train(
        config,
        progress=progress,
        device=device,
        objective=objective,
        validate=validate,
        defense={"defense": "train-on-squeezed", "squeezer": spec.to_dict()},
    )

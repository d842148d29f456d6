"""Generative defenses: autoencoder / VAE / class-conditional VAE (:mod:`.models`), trained and cached like
the classifiers (:mod:`.training`), used as purifier, reconstruction labeller and reconstruction-error
detector (:mod:`.purify`)."""

from advbridge.defenses.generative.models import GENERATORS, ConvGenerator
from advbridge.defenses.generative.purify import Purifier, ReconstructionDetector, ReconstructionLabeller
from advbridge.defenses.generative.training import (
    GeneratorConfig,
    check_generator_for,
    get_or_train_generator,
    load_generator,
    train_generator,
)

__all__ = [
    "GENERATORS",
    "ConvGenerator",
    "GeneratorConfig",
    "Purifier",
    "ReconstructionDetector",
    "ReconstructionLabeller",
    "check_generator_for",
    "get_or_train_generator",
    "load_generator",
    "train_generator",
]

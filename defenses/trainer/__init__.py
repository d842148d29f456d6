"""Trainers: defenses applied while the classifier is trained (adversarial training, defensive distillation,
training on squeezed images).

:func:`train_defended` trains (or takes from the model cache) a classifier with a
:class:`~bridge.defense_spec.TrainingDefenseSpec`; the resolved spec is part of the cache key and of the card.
"""

from defenses.trainer.adversarial import (
    AdversarialObjective,
    adversarial_examples,
    adversarial_validation,
    recipe_defaults,
)
from defenses.trainer.distillation import distillation_objective, temperature_objective
from defenses.trainer.squeezed import train_on_squeezed
from defenses.trainer.train import defense_key, teacher, train_defended, train_own

__all__ = [
    "adversarial_examples",
    "AdversarialObjective",
    "adversarial_validation",
    "recipe_defaults",
    "distillation_objective",
    "temperature_objective",
    "defense_key",
    "teacher",
    "train_defended",
    "train_own",
    "train_on_squeezed",
]

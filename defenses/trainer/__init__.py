"""Trainers: defenses applied while the classifier is trained (adversarial training, defensive distillation,
training on squeezed images).

:func:`train_own` trains a classifier with a :class:`~bridge.defense_spec.TrainingDefenseSpec`;
:func:`bridge.training.train_defended` runs any library's trainer (ours through the ``own`` adapter) and caches.
"""

from advbridge.defenses.trainer.adversarial import (
    AdversarialObjective,
    adversarial_examples,
    adversarial_validation,
    fast_fgsm,
    recipe_defaults,
)
from advbridge.defenses.trainer.distillation import distillation_objective, temperature_objective
from advbridge.defenses.trainer.squeezed import train_on_squeezed
from advbridge.defenses.trainer.train import teacher, train_own

__all__ = [
    "adversarial_examples",
    "AdversarialObjective",
    "adversarial_validation",
    "fast_fgsm",
    "recipe_defaults",
    "distillation_objective",
    "temperature_objective",
    "teacher",
    "train_own",
    "train_on_squeezed",
]

"""The three studies advbridge grew from (``../shared/studies/``), as :class:`~experiments.studies.engine.Study` objects.

Each reproduces the study's table (its defenses × its attacks, transfer attacks as it did) and adds the
adaptive and worst-case numbers. Default budgets (:data:`BUDGETS`) are sized to finish in ≤ 30 minutes on a
2-core CPU with an empty model cache; ``scale`` multiplies the images evaluated and the training samples
(for a GPU), and each budget entry can be given directly.

- ``cifar10-fs-at`` (study 002): the 6-conv CNN (``advbridge_cifar_cnn``), trained on the CIFAR-10 training
  images (the JPEG copies, the only complete ones offline) and evaluated on the **exact** test images
  (``cifar10-exact``); defenses none / FGSM adversarial training (eps 0.1, half of each batch, fine-tuned
  from the plain model) / a 2×2 median filter in front of a model trained on median-filtered images;
  attacks FGSM (L∞ 0.1) and DeepFool (L2).
- ``animals10-fs-dd`` (study 003): a timm backbone transfer-learned: pretrained on the CIFAR-10 vehicle
  classes, fine-tuned on the six animal classes (``cifar10-animals``; a real Animals-10 folder with
  ``dataset="animals10"`` and timm's pretrained weights online instead); defenses the feature-squeezing
  detector (bit depth, median, resampling; threshold 1.0 as the study, and calibrated at 5 % FPR) and
  defensive distillation (T = 100); attacks PGD (L∞ 8/255) and DDN (L2).
- ``mnist-cifar10-vae`` (study 001): VAE purification and class-conditional (CVAE) reconstruction
  labelling on MNIST and CIFAR-10 (exact test images), attacks FGSM and PGD.
"""

from __future__ import annotations

from collections.abc import Callable

from advbridge.bridge.errors import UnknownNameError, did_you_mean
from advbridge.experiments.studies.animals10_fs_dd import animals10_fs_dd
from advbridge.experiments.studies.budgets import STUDIES
from advbridge.experiments.studies.cifar10_fs_at import cifar10_fs_at
from advbridge.experiments.studies.common import StudyOptions
from advbridge.experiments.studies.engine import Study
from advbridge.experiments.studies.mnist_cifar10_vae import mnist_cifar10_vae

BUILDERS: dict[str, Callable[[StudyOptions], Study]] = {
    "cifar10-fs-at": cifar10_fs_at,
    "animals10-fs-dd": animals10_fs_dd,
    "mnist-cifar10-vae": mnist_cifar10_vae,
}


def build_study(name: str, options: StudyOptions | None = None) -> Study:
    """The study ``name`` (one of :data:`STUDIES`) with ``options``."""
    if name not in BUILDERS:
        raise UnknownNameError(did_you_mean("study", name, STUDIES))
    return BUILDERS[name](options or StudyOptions())

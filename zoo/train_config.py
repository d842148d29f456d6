"""What determines a trained classifier: :class:`TrainConfig` (and so its cache key), the defaults per model,
and the optimizer recipes (Adam with a cosine schedule; Wong et al.'s fast recipe)."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace
from typing import Any

from advbridge.bridge.errors import InvalidParameterError, check_name
from advbridge.zoo.checkpoints import file_sha256
from advbridge.zoo.datasets import dataset_info
from advbridge.zoo.models import FINETUNE_MODES

#: Bumped when a change to the training code should invalidate cached models.
CACHE_FORMAT = 1
DEFAULT_EPOCHS, DEFAULT_LR = 5, 1e-3
#: Per-model defaults for ``epochs`` and ``lr``: the small MNIST net reaches >= 97 % on mnist-5k only with a
#: higher rate (28 steps per epoch at batch size 128).
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {"advbridge_mnist_cnn": {"epochs": 8, "lr": 3e-3}}
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "cyclic")
#: Wong, Rice, Kolter 2020's "fast" recipe (their CIFAR-10 values), which ART's ``AdversarialTrainerFBFPyTorch``
#: imposes: SGD with momentum 0.9, a cyclic rate 0 → 0.21 → 0, gradient norms clipped at 0.5.
FAST_RECIPE: dict[str, Any] = {"optimizer": "sgd", "schedule": "cyclic", "lr": 0.21, "clip_grad_norm": 0.5}
#: Fields added after cache format 1: they enter the cache key only when they differ from these defaults,
#: so models cached before they existed keep their keys.
LATER_DEFAULTS = {"optimizer": "adam", "schedule": "cosine", "clip_grad_norm": None}


@dataclass
class TrainConfig:
    """Everything that determines a trained model (and so its cache key; ``data_root`` excepted).

    Args:
        dataset: a dataset name (see :data:`zoo.datasets.DATASETS`).
        model: a timm model name (see ``timm.list_models()``).
        epochs: maximum number of epochs (``None``: 5, or the model's entry in ``MODEL_DEFAULTS``).
        lr: the optimizer's peak learning rate (``None``: 1e-3, or the model's entry in ``MODEL_DEFAULTS``).
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9).
        schedule: ``"cosine"``: from ``lr`` down to 0 along a cosine over every step; ``"cyclic"``: linearly
            0 → ``lr`` at 2/5 of the epochs → 0 (Wong et al. 2020, Sec. 5.1).
        clip_grad_norm: clip the gradients' global L2 norm at this value before each step (``None``: no).
        batch_size: training batch size.
        seed: seeds weights, validation split, data order and augmentation.
        weight_decay: the optimizer's L2 penalty.
        patience: stop after this many epochs without a better validation accuracy.
        augment: random crop (padding 4) and horizontal flip; ``None``: on for the ``cifar10`` and
            ``imagenet`` families, off for ``mnist`` (flipped digits are other digits).
        finetune: ``"all"`` parameters or only the classifier ``"head"``.
        pretrained: start from timm's pretrained weights (needs a network).
        weights: start from a local weights file (head/stem tensors of other shapes are skipped).
        data_root: where the dataset files are (not part of the cache key).
        val_fraction: share of the train split held out for validation and early stopping (0 disables both).
        max_train: keep at most this many training samples (quick runs and tests).
        image_size: resize images to this side (default: the dataset's).
    """

    dataset: str
    model: str
    epochs: int | None = None
    lr: float | None = None
    batch_size: int = 128
    seed: int = 0
    weight_decay: float = 5e-4
    patience: int = 3
    augment: bool | None = None
    finetune: str = "all"
    pretrained: bool = False
    weights: str | None = None
    data_root: str | None = None
    val_fraction: float = 0.1
    max_train: int | None = None
    image_size: int | None = None
    optimizer: str = "adam"
    schedule: str = "cosine"
    clip_grad_norm: float | None = None

    def __post_init__(self) -> None:
        for name, low in (("epochs", 1), ("batch_size", 1), ("patience", 1), ("seed", 0), ("max_train", 1)):
            value = getattr(self, name)
            optional = name in ("epochs", "max_train") and value is None
            if not optional and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise InvalidParameterError(f"expected {name} as an int >= {low}, got {value!r}")
        if self.seed >= 2**63:
            raise InvalidParameterError(f"expected seed as an int in [0, 2**63), got {self.seed!r}")
        for name, value in (("lr", self.lr), ("weight_decay", self.weight_decay)):
            number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            # (``value is not None``: implied by ``number``, spelled out for the type checker)
            if (name == "lr" and value is None) or (
                number and value is not None and (value > 0 if name == "lr" else value >= 0)
            ):
                continue
            raise InvalidParameterError(f"expected {name} {'> 0' if name == 'lr' else '>= 0'}, got {value!r}")
        if not 0 <= self.val_fraction < 1:
            raise InvalidParameterError(f"expected val_fraction in [0, 1), got {self.val_fraction!r}")
        check_name("finetune mode", self.finetune, FINETUNE_MODES)
        check_name("optimizer", self.optimizer, OPTIMIZERS)
        check_name("schedule", self.schedule, SCHEDULES)
        clip = self.clip_grad_norm
        if clip is not None and (
            isinstance(clip, bool) or not isinstance(clip, (int, float)) or not 0 < clip < math.inf
        ):
            raise InvalidParameterError(f"expected clip_grad_norm > 0 or None, got {clip!r}")
        if self.weights is not None:
            self.weights = os.fspath(self.weights)

    def resolved(self) -> TrainConfig:
        """A copy with the defaults filled in: ``epochs``, ``lr``, and ``augment`` from the dataset family."""
        defaults = {"epochs": DEFAULT_EPOCHS, "lr": DEFAULT_LR, **MODEL_DEFAULTS.get(self.model, {})}
        changes = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        if self.augment is None:
            changes["augment"] = dataset_info(self.dataset, self.data_root, self.image_size).family != "mnist"
        return replace(self, **changes)

    def cache_fields(self) -> dict[str, Any]:
        """What identifies the trained weights: every field but ``data_root``, ``augment`` resolved, and the
        starting ``weights`` by the sha256 of their file rather than its path (a moved cache keeps its keys);
        fields added later (``optimizer``, ``schedule``, ``clip_grad_norm``) only where they are not the default."""
        fields = asdict(self.resolved())
        del fields["data_root"]
        for name, default in LATER_DEFAULTS.items():
            if fields[name] == default:
                del fields[name]
        if self.weights is not None and os.path.isfile(self.weights):
            fields["weights"] = {"sha256": file_sha256(self.weights)}
        return {**fields, "cache_format": CACHE_FORMAT}

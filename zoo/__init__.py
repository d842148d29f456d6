"""The model zoo: datasets, timm backbones behind a normalization wrapper, training and checkpoints.

Importing :mod:`zoo` registers the in-house architectures (``advbridge_mnist_cnn``, ``advbridge_cifar_cnn``)
in timm's registry.
"""

if __name__ != "advbridge.zoo":  # the folder is advbridge/zoo (a link): a bare ``import zoo`` would load a second copy
    raise ImportError(f"import advbridge.zoo, not {__name__}: the card's folders are subpackages of advbridge")


from advbridge.zoo.checkpoints import cache_dir, checkpoint_dir, config_key, load_checkpoint, save_checkpoint
from advbridge.zoo.datasets import DATASETS, DatasetInfo, TensorImages, dataset_info, load_dataset, load_tensors
from advbridge.zoo.models import (
    FINETUNE_MODES,
    NormalizedClassifier,
    create_classifier,
    load_backbone_weights,
    read_state_dict,
    set_trainable,
)
from advbridge.zoo.train_config import TrainConfig
from advbridge.zoo.training import get_or_train, train
from advbridge.zoo.training_data import evaluate

__all__ = [
    "DATASETS",
    "FINETUNE_MODES",
    "DatasetInfo",
    "NormalizedClassifier",
    "TensorImages",
    "TrainConfig",
    "cache_dir",
    "checkpoint_dir",
    "config_key",
    "create_classifier",
    "dataset_info",
    "evaluate",
    "get_or_train",
    "load_backbone_weights",
    "load_checkpoint",
    "load_dataset",
    "load_tensors",
    "read_state_dict",
    "save_checkpoint",
    "set_trainable",
    "train",
]

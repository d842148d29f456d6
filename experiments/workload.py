"""A workload: a trained model plus a fixed, seeded batch of test images, the input of every experiment."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from advbridge.bridge.errors import InvalidParameterError
from advbridge.zoo.datasets import SAME_TASK, DatasetInfo, dataset_info, load_tensors
from advbridge.zoo.train_config import TrainConfig
from advbridge.zoo.training import get_or_train, load_trained
from advbridge.zoo.user_models import is_factory

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
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    image_size: int | None = None,
    num_classes: int | None = None,
    logits: str | int | None = None,
    **train_options: Any,
) -> Workload:
    """Load (or train and cache) ``model`` for ``dataset`` and ``n`` seeded test images.

    ``train_options`` go to :class:`zoo.train_config.TrainConfig` (``epochs``, ``lr``, ``batch_size``,
    ``pretrained``, ``weights``, ``finetune``...); ``None`` values are dropped so that the config's
    defaults apply (and the cache key stays the same). With ``checkpoint`` (a checkpoint folder, e.g. the
    one ``cli.py train`` prints), that model is used as it is, never trained; it must be for ``dataset``.

    A user's model is never trained either: ``model`` a factory (``file.py:name``, ``package.module:name``;
    ``mean``/``std`` its normalization when it has none inside), and/or ``checkpoint`` a weights file loaded
    strictly into it (or into the timm model ``model``) — see :mod:`advbridge.zoo.user_models`. ``image_size``
    resizes the images (and is the trained model's input side); ``num_classes``, for a user's model only, the
    number of logits it returns when more than the dataset's classes (default: the dataset's); ``logits``, for a
    user's model with several outputs (a tuple or dict), the index or key of its logits
    (:func:`~advbridge.bridge.logits.select_logits`).
    """
    info = dataset_info(dataset, data_root=data_root, image_size=image_size)
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < info.num_classes:
            raise InvalidParameterError(
                f"expected --num-classes as an int >= {info.num_classes} (the classes of {dataset}), got {num_classes!r}"
            )
        if num_classes != info.num_classes and not (is_factory(model) or _is_file(checkpoint)):
            raise InvalidParameterError(
                f"expected --num-classes {info.num_classes} (or none) with a model advbridge trains on {dataset}, "
                f"got {num_classes}; a different head needs your own model (--model FILE.py:factory or --checkpoint)"
            )
        info = replace(info, num_classes=num_classes)
    if is_factory(model) or _is_file(checkpoint):
        return _user_workload(info, model, checkpoint, n=n, seed=seed, data_root=data_root, device=device,
                              mean=mean, std=std, logits=logits, **train_options)  # fmt: skip
    if mean is not None or std is not None:
        raise InvalidParameterError("expected --mean/--std only with a user model (--model file.py:factory)")
    if checkpoint is not None:
        net, card = load_trained(checkpoint)
        if card.get("dataset") not in (dataset, SAME_TASK.get(dataset)):  # cifar10 serves cifar10-exact
            raise InvalidParameterError(
                f"expected a checkpoint trained on {dataset}, got one trained on {card.get('dataset')!r}: {checkpoint}"
            )
        if card.get("image_size", info.image_size) != info.image_size:
            raise InvalidParameterError(
                f"expected --image-size {card['image_size']} (the size this checkpoint was trained at), "
                f"got {info.image_size}: {checkpoint}"
            )
    # a bad n is refused before anything is trained
    x, y = load_tensors(dataset, split="test", n=n, data_root=data_root, seed=seed, image_size=image_size)
    if checkpoint is None:
        model_name = model or DEFAULT_MODELS[info.family]
        options = {k: v for k, v in {**train_options, "image_size": image_size}.items() if v is not None}
        config = TrainConfig(dataset=dataset, model=model_name, data_root=data_root, **options)
        net, card = get_or_train(config, progress=progress)
    dev = torch.device(device) if device is not None else default_device()
    return Workload(model=net.to(dev).eval(), x=x.to(dev), y=y.to(dev), info=info, card=card)


def _is_file(checkpoint: str | os.PathLike | None) -> bool:
    """Whether ``checkpoint`` is a user's weights file (not one of advbridge's cache folders)."""
    return checkpoint is not None and not Path(checkpoint).expanduser().is_dir()


def _user_workload(info: DatasetInfo, model: str | None, checkpoint, *, n: int, seed: int, data_root, device,
                   mean, std, logits: str | int | None = None, **train_options: Any) -> Workload:  # fmt: skip
    """A user's model (factory or timm name) with its weights file, never trained; checked against the dataset
    (classes, image shape) and given a card with its clean accuracy on the evaluated images."""
    from advbridge.zoo.models import create_classifier
    from advbridge.zoo.training_check import warn_if_failed
    from advbridge.zoo.user_models import build_factory_model, is_factory, load_checkpoint_file

    given = sorted(k for k, v in train_options.items() if v not in (None, False, "all"))
    if given:
        raise InvalidParameterError(
            f"expected no training options with a user model (it is evaluated as it is), got {', '.join(given)}"
        )
    if model is not None and is_factory(model):
        net = build_factory_model(model, mean, std)
    else:
        if mean is not None or std is not None:
            raise InvalidParameterError(
                "expected --mean/--std only with --model file.py:factory (timm models have theirs)"
            )
        name = model or DEFAULT_MODELS[info.family]
        net = create_classifier(name, num_classes=info.num_classes, in_chans=info.in_chans, mean=info.mean,
                                std=info.std, image_size=info.image_size)  # fmt: skip
    card: dict[str, Any] = {"model": model or DEFAULT_MODELS[info.family], "source": "user", "dataset": info.name}
    if checkpoint is not None:
        sha256 = load_checkpoint_file(net, checkpoint)
        card.update(checkpoint=str(checkpoint), checkpoint_sha256=sha256, sha256=sha256)
    x, y = load_tensors(info.name, split="test", n=n, data_root=data_root, seed=seed, image_size=info.image_size)
    dev = torch.device(device) if device is not None else default_device()
    net, x, y = net.to(dev).eval(), x.to(dev), y.to(dev)
    if logits is not None:  # the logits of a model with several outputs (a model returning a tensor: unchanged)
        from advbridge.bridge.logits import select_logits

        net = select_logits(net, logits, x[:1], name=card["model"])
    card["accuracy"], _ = check_user_model(net, x, y, card["model"], info.num_classes, info.name)
    card.update(num_classes=info.num_classes, accuracy_on=f"the {len(x)} evaluated test images")
    warn_if_failed(card, card["model"])
    return Workload(model=net, x=x, y=y, info=info, card=card)


def check_user_model(
    net: nn.Module, x: Tensor, y: Tensor, name: str, num_classes: int | None, data: str
) -> tuple[float, int]:
    """A user's model checked on its images before any attack: it takes them, returns logits (N, K) with
    ``K = num_classes`` (any K when ``None``) and every label below K; returns (its clean accuracy on them, K)."""
    with torch.no_grad():
        try:
            logits = net(x[:1])
        except Exception as exc:  # the user's forward on the dataset's images
            raise InvalidParameterError(
                f"expected {name} to take {data} images {tuple(x.shape[1:])} in [0, 1], it raised "
                f"{type(exc).__name__}: {exc}"
            ) from None
        if not isinstance(logits, Tensor):  # several outputs: the audit picks the logits (bridge.logits)
            from advbridge.bridge.logits import accepted_choices, output_kind

            raise InvalidParameterError(
                f"expected {name} to return a logits tensor (N, K), got {output_kind(logits)}; choose the logits "
                f"with --logits KEY_OR_INDEX (audit; API: logits=), one of {', '.join(accepted_choices(logits))}"
            )
        if logits.dim() != 2 or (num_classes is not None and logits.shape[1] != num_classes):
            expected = f"{num_classes} logits per image" if num_classes is not None else "logits (N, K)"
            raise InvalidParameterError(f"expected {name} to return {expected} for {data}, got {tuple(logits.shape)}")
        classes = int(logits.shape[1])
        if int(y.max()) >= classes or int(y.min()) < 0:
            raise InvalidParameterError(
                f"expected labels in 0..{classes - 1} (the model's {classes} outputs), got {int(y.min())}..{int(y.max())}"
            )
        return float((net(x).argmax(1) == y).double().mean()), classes

"""Training and the model cache: ``get_or_train(TrainConfig(...))`` returns a trained, verified classifier.

Training is plain and reproducible: Adam with a cosine-annealed learning rate (or SGD, a cyclic rate and
gradient clipping, :data:`FAST_RECIPE`), a fixed seed (weights, data
order, augmentation), a validation set carved from the train split with that seed, early stopping on
validation accuracy keeping the best weights, and the final accuracy measured on the test split. Models come
back in eval mode, ready to be attacked.

Measured on 2 CPU cores: ``advbridge_mnist_cnn`` on ``mnist-5k`` with the default config (8 epochs) reaches
97.7-97.8 % test accuracy (seeds 0, 1, 2).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from bridge import distributed
from bridge.errors import InvalidParameterError, check_name
from zoo.checkpoints import cached_or_trained, checkpoint_dir, file_sha256, load_checkpoint
from zoo.datasets import TensorImages, dataset_info, load_dataset
from zoo.models import FINETUNE_MODES, NormalizedClassifier, create_classifier, set_trainable
from zoo.training_check import warn_if_failed

logger = logging.getLogger(__name__)

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
        for name, value in (("lr", self.lr), ("weight_decay", self.weight_decay)):
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if (name == "lr" and value is None) or (number and (value > 0 if name == "lr" else value >= 0)):
                continue
            raise InvalidParameterError(f"expected {name} {'> 0' if name == 'lr' else '>= 0'}, got {value!r}")
        if not 0 <= self.val_fraction < 1:
            raise InvalidParameterError(f"expected val_fraction in [0, 1), got {self.val_fraction!r}")
        check_name("finetune mode", self.finetune, FINETUNE_MODES)
        check_name("optimizer", self.optimizer, OPTIMIZERS)
        check_name("schedule", self.schedule, SCHEDULES)
        clip = self.clip_grad_norm
        if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0):
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


def augment_batch(x: Tensor, pad: int = 4) -> Tensor:
    """CIFAR-style augmentation on a batch: random crop from a zero-padded image and random horizontal flip.

    Uses the global torch RNG (seeded by :func:`train`).

    Shape:
        x: ``[N, C, H, W]``; output: the same.
    """
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device) + torch.arange(h, device=x.device)
    cols = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device) + torch.arange(w, device=x.device)
    batch = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indices around a slice put their dimensions first: [N, H, W, C].
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    flip = torch.rand(n, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out).contiguous()


def batches(ds: Dataset, indices: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """The samples ``indices`` of ``ds`` in batches of ``batch_size``, in that order, as tensors."""
    if isinstance(ds, TensorImages):
        for start in range(0, len(indices), batch_size):
            yield ds.tensors(indices[start : start + batch_size])
        return
    # Files are decoded in worker processes; the sampler fixes the (seeded) order.
    workers = min(4, (os.cpu_count() or 1) - 1)
    yield from DataLoader(ds, batch_size=batch_size, sampler=indices.tolist(), num_workers=workers)


@torch.inference_mode()
def evaluate(model: nn.Module, ds: Dataset, indices: Tensor | None = None, batch_size: int = 500) -> float:
    """Accuracy of ``model`` (left in eval mode) on ``ds`` or on its ``indices``, in [0, 1]."""
    model.eval()
    device = next(model.parameters()).device
    indices = torch.arange(len(ds)) if indices is None else indices
    correct = 0
    for x, y in batches(ds, indices, batch_size):
        correct += (model(x.to(device)).argmax(1).cpu() == y).sum().item()
    return correct / max(len(indices), 1)


def make_optimizer(cfg: TrainConfig, params: list[Tensor]) -> torch.optim.Optimizer:
    """The optimizer of a resolved config: Adam, or SGD with momentum 0.9; the config's lr and weight decay."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)


def make_schedule(
    cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule of a resolved config, to be stepped once per batch.

    ``cyclic`` sets, before the s-th step (0-based), lr · interp((s + 1) / steps_per_epoch, [0, 2E/5, E],
    [0, 1, 0]) for E epochs: ART's ``AdversarialTrainerFBFPyTorch`` schedule (which puts the peak at the
    integer ``2E // 5``: the same when E is a multiple of 5).
    """
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs * steps_per_epoch)
    peak, end = 0.4 * cfg.epochs, float(cfg.epochs)

    def triangle(step: int) -> float:
        t = (step + 1) / steps_per_epoch
        return t / peak if t <= peak else max(0.0, (end - t) / (end - peak))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, triangle)


class RankBatches:
    """How one rank of a ``torchrun`` training takes its part of every global batch (one process: all of it).

    Global batch ``k`` of ``B`` samples, in the epoch's seeded order, is dealt ``rank::world size`` as
    ``DistributedSampler`` deals, so each rank trains on its own data on ``B / world size`` samples per step;
    ``DistributedDataParallel`` averages the gradients, and each rank's loss is weighted by its share of the
    batch (``size · n_rank / n``), so that a step is the one-process step on the same ``B`` samples (the
    last, smaller batch included; one with fewer samples than ranks is dropped).
    """

    def __init__(self, batch_size: int) -> None:
        self.world = distributed.world()
        size = self.world.size
        if batch_size % size:
            raise InvalidParameterError(
                f"expected a batch size that is a multiple of the world size {size}, got {batch_size}"
            )
        self.global_batch_size, self.batch_size = batch_size, batch_size // size

    def wrap(self, model: nn.Module, device: str | torch.device) -> nn.Module:
        """``model`` in ``DistributedDataParallel`` when there are several ranks (it syncs the gradients)."""
        if not self.world.distributed:
            return model
        ids = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def order(self, order: Tensor) -> tuple[Tensor, list[float]]:
        """This rank's samples of an epoch in training order, and the loss weight of each of its steps."""
        if not self.world.distributed:
            return order, [1.0] * -(-len(order) // self.batch_size)
        size, rank = self.world.size, self.world.rank
        chunks = [c for c in order.split(self.global_batch_size) if len(c) >= size]
        mine = torch.cat([c[rank::size] for c in chunks])
        weights = [size * len(c[rank::size]) / len(c) for c in chunks]  # size · n_rank / n
        return mine, weights


def _set_train_mode(model: NormalizedClassifier, finetune: str) -> None:
    model.train()
    if finetune == "head":
        # A frozen body stays in eval mode, so its batch-norm statistics do not drift either.
        model.backbone.eval()
        model.backbone.get_classifier().train()


#: A training objective: ``objective(model, x, y) -> (loss, counts)``, ``counts`` mapping a name to
#: ``(correct, out of)`` for the batch (``{"clean": (120, 128), "adv": (64, 64)}``), shown per epoch as shares.
#: An objective with a method ``at(done)`` is told before each step the share of training done once that
#: step is taken, in (0, 1] (a curriculum: adversarial training's eps ramp).
Objective = Callable[[nn.Module, Tensor, Tensor], tuple[Tensor, dict[str, tuple[int, int]]]]


def cross_entropy_objective(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, tuple[int, int]]]:
    """Plain training: the mean cross-entropy of the batch."""
    logits = model(x)
    return F.cross_entropy(logits, y), {"clean": (int((logits.argmax(1) == y).sum()), len(y))}


def train(
    config: TrainConfig,
    *,
    progress: bool = True,
    device: str | torch.device = "cpu",
    objective: Objective = cross_entropy_objective,
    validate: Callable[[nn.Module, Tensor, Tensor], float] | None = None,
    channels_last: bool = False,
) -> tuple[NormalizedClassifier, dict[str, Any]]:
    """Train a classifier as ``config`` says; the global torch RNG state is left as it was.

    Args:
        config: what to train.
        progress: show a tqdm progress bar per epoch.
        device: where to train.
        objective: the loss of a batch (default: cross-entropy); a training-time defense passes its own.
        validate: ``validate(model, x_val, y_val) -> accuracy`` for early stopping and the best weights
            (default: clean accuracy); adversarial training validates on adversarial accuracy.
        channels_last: run the model and the batches channels-last (NHWC; faster convolutions on CPU,
            measured 1.4× per attack step of the MNIST CNN), as adversarial training does; the weights come
            back in the default layout.

    Returns:
        ``(model, card)``: the model with the best validation weights, in eval mode, and a card with the
        test accuracy, the validation accuracy, sample counts, time and the config.
    """
    cfg = config.resolved()
    data = training_data(cfg)
    info, train_ds, train_idx, val_idx = data.info, data.train_ds, data.train_idx, data.val_idx
    n_val = len(val_idx)
    gen = torch.Generator()
    gen.set_state(data.generator_state)  # the seeded generator as the split left it: it shuffles the epochs
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        model, n_params = initial_model(cfg, info, device)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        model = model.to(memory_format=layout)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = make_optimizer(cfg, params)
        schedule = make_schedule(cfg, optimizer, -(-len(train_idx) // cfg.batch_size))
        logger.info(
            "training %s on %s: %d train / %d val samples, %d trainable parameters, up to %d epochs",
            cfg.model, cfg.dataset, len(train_idx), len(val_idx), n_params, cfg.epochs,
        )  # fmt: skip
        best_acc, best_epoch, best_state, epoch, history = -1.0, 0, None, 0, []
        val_x = val_y = None
        if validate is not None and n_val:
            val_x, val_y = (t.to(device) for t in stack(train_ds, val_idx))
            val_x = val_x.contiguous(memory_format=layout)
        shard = RankBatches(cfg.batch_size)
        trained = shard.wrap(model, device)
        schedule_budget, initial_loss = getattr(objective, "at", None), None
        for epoch in range(1, cfg.epochs + 1):
            _set_train_mode(model, cfg.finetune)
            order, weights = shard.order(train_idx[torch.randperm(len(train_idx), generator=gen)])
            total_loss, seen, counts = 0.0, 0, {}
            bar = tqdm(total=len(order), desc=f"epoch {epoch}/{cfg.epochs}", unit="img", disable=not progress)
            for step, (x, y) in enumerate(batches(train_ds, order, shard.batch_size)):
                x, y = x.to(device), y.to(device)
                if cfg.augment:
                    x = augment_batch(x)
                x = x.contiguous(memory_format=layout)
                if schedule_budget is not None:
                    schedule_budget((epoch - 1 + (step + 1) / len(weights)) / cfg.epochs)
                loss, batch_counts = objective(trained, x, y)
                if initial_loss is None:
                    initial_loss = loss.item()
                optimizer.zero_grad(set_to_none=True)
                (loss if weights[step] == 1 else loss * weights[step]).backward()
                if cfg.clip_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
                optimizer.step()
                schedule.step()
                total_loss, seen = total_loss + loss.item() * len(y), seen + len(y)
                for key, (correct, total) in batch_counts.items():
                    before = counts.get(key, (0, 0))
                    counts[key] = (before[0] + correct, before[1] + total)
                shares = {f"{k}_acc": c / max(t, 1) for k, (c, t) in counts.items()}
                bar.update(len(y))
                bar.set_postfix(loss=f"{total_loss / seen:.4f}", **{k: f"{v:.3f}" for k, v in shares.items()})
            bar.close()
            history.append({"epoch": epoch, "loss": total_loss / seen, **shares})
            if n_val == 0:
                logger.info("epoch %d/%d: train loss %.4f", epoch, cfg.epochs, total_loss / seen)
                continue
            acc = evaluate(model, train_ds, val_idx) if validate is None else _validated(validate, model, val_x, val_y)
            history[-1]["val_acc"] = acc
            # Ties go to the later epoch: further down the cosine schedule, usually better on the test set.
            improved = acc >= best_acc
            if improved:
                best_acc, best_epoch = acc, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            logger.info(
                "epoch %d/%d: train loss %.4f, val accuracy %.2f%%%s",
                epoch, cfg.epochs, total_loss / seen, 100 * acc, " (best)" if improved else "",
            )  # fmt: skip
            if epoch - best_epoch >= cfg.patience and epoch < cfg.epochs:
                logger.info("early stop: no better val accuracy for %d epochs", cfg.patience)
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model = model.to(memory_format=torch.contiguous_format)
    seconds = time.perf_counter() - start
    clean_val = None
    if n_val:  # early stopping on adversarial accuracy: the clean one is measured here
        clean_val = best_acc if validate is None else evaluate(model, train_ds, val_idx)
    card = trained_card(
        cfg,
        data,
        model,
        **({"world_size": shard.world.size} if shard.world.distributed else {}),
        val_accuracy=best_acc if n_val else None,
        val_clean_accuracy=clean_val,
        initial_loss=initial_loss,
        epochs_run=epoch,
        best_epoch=best_epoch or epoch,
        train_seconds=round(seconds, 2),
        validation="clean accuracy" if validate is None else getattr(validate, "__doc__", None) or "custom",
        history=history,
    )
    return model.eval(), card


@dataclass
class TrainingData:
    """The splits of a training run: validation carved from the train split with the config's seed."""

    info: Any
    train_ds: Dataset
    test_ds: Dataset
    train_idx: Tensor
    val_idx: Tensor
    generator_state: Tensor  # the seeded generator after the split: it goes on to shuffle the epochs


def training_data(cfg: TrainConfig) -> TrainingData:
    """The datasets and the seeded train/validation split of a resolved config (every trainer uses it)."""
    info = dataset_info(cfg.dataset, cfg.data_root, cfg.image_size)
    train_ds = load_dataset(cfg.dataset, "train", cfg.data_root, cfg.image_size)
    test_ds = load_dataset(cfg.dataset, "test", cfg.data_root, cfg.image_size)
    gen = torch.Generator().manual_seed(cfg.seed)
    perm = torch.randperm(len(train_ds), generator=gen)
    n_val = round(len(train_ds) * cfg.val_fraction)
    val_idx, train_idx = perm[:n_val], perm[n_val:][: cfg.max_train]
    if len(train_idx) == 0:
        raise InvalidParameterError(f"expected training samples left after validation, got none of {len(train_ds)}")
    return TrainingData(info, train_ds, test_ds, train_idx, val_idx, gen.get_state())


def initial_model(cfg: TrainConfig, info: Any, device: str | torch.device = "cpu") -> tuple[NormalizedClassifier, int]:
    """The untrained (or ``weights``/``pretrained``-initialized) classifier of a resolved config, seeded
    with ``cfg.seed`` (the same weights for every trainer), and its number of trainable parameters."""
    torch.manual_seed(cfg.seed)
    model = create_classifier(
        cfg.model,
        num_classes=info.num_classes,
        in_chans=info.in_chans,
        mean=info.mean,
        std=info.std,
        pretrained=cfg.pretrained,
        weights=cfg.weights,
        image_size=info.image_size,
    ).to(device)
    return model, set_trainable(model, cfg.finetune)


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


def stack(ds: Dataset, indices: Tensor) -> tuple[Tensor, Tensor]:
    """The samples ``indices`` of ``ds`` as two tensors (images, labels)."""
    parts = list(batches(ds, indices, 500))
    return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])


def _validated(validate: Callable[[nn.Module, Tensor, Tensor], float], model: nn.Module, x: Tensor, y: Tensor) -> float:
    model.eval()
    return float(validate(model, x, y))


def load_trained(folder: str | os.PathLike) -> tuple[NormalizedClassifier, dict[str, Any]]:
    """The classifier saved in a checkpoint folder (weights verified against its card), in eval mode.

    Raises:
        CheckpointError: see :func:`zoo.checkpoints.load_checkpoint`; ``KeyError``/``RuntimeError`` for a
        card without the architecture fields or weights of another shape.
    """
    state, card = load_checkpoint(folder)
    model = create_classifier(
        card["model"],
        num_classes=card["num_classes"],
        in_chans=card["in_chans"],
        mean=card["mean"],
        std=card["std"],
        image_size=card["image_size"],
    )
    model.load_state_dict(state)
    return model.eval(), card


def get_or_train(
    config: TrainConfig,
    *,
    progress: bool = True,
    device: str | torch.device = "cpu",
    objective: Objective = cross_entropy_objective,
    validate: Callable[[nn.Module, Tensor, Tensor], float] | None = None,
    defense: dict[str, Any] | None = None,
    make: Callable[[TrainConfig], tuple[nn.Module, dict[str, Any]]] | None = None,
    make_is_distributed: bool = False,
) -> tuple[NormalizedClassifier, dict[str, Any]]:
    """The cached model for ``config`` if there is a valid one, else train it and cache it.

    ``make(resolved_config) -> (model, card)`` trains it instead of :func:`train` (another library's
    trainer, in its adapter); its ``defense`` then says whose training it was. Under ``torchrun`` :func:`train`
    runs on every rank (``DistributedDataParallel``), ``make`` on rank 0 alone unless ``make_is_distributed``
    (it calls :func:`train` itself); rank 0 writes the checkpoint, the other ranks load it.

    The cache folder is :func:`zoo.checkpoints.checkpoint_dir` of the config (and of ``defense``, the
    resolved spec of a training-time defense whose ``objective``/``validate`` are given: part of the key
    and of the card); a checkpoint that fails its sha256 check is reported and retrained.

    Returns:
        ``(model, card)``, the model in eval mode.
    """
    cfg = config.resolved()
    key = cfg.cache_fields() if defense is None else {**cfg.cache_fields(), "defense": defense}
    folder = checkpoint_dir(cfg.dataset, cfg.model, key)
    distributed.check_same("model to train or load", key)

    def make_it() -> tuple[nn.Module, dict[str, Any]]:
        if make is None:  # under torchrun every rank trains its part of each batch (DistributedDataParallel)
            model, card = train(cfg, progress=progress and distributed.world().main, device=device,
                                objective=objective, validate=validate)  # fmt: skip
        else:  # another library's trainer (one process, unless ``make_is_distributed``: it calls train())
            model, card = make(cfg)
        return model, card if defense is None else {**card, "defense": defense}

    model, card = cached_or_trained(
        folder,
        load_trained,
        make_it,
        every_rank_trains=make is None or make_is_distributed,
        what=f"model for {cfg.model} on {cfg.dataset}",
    )
    logger.info("%s in %s (test accuracy %.2f%%)", cfg.model, folder, 100 * card["accuracy"])
    warn_if_failed(card, describe_model(card))
    return model.to(device).eval(), card


def describe_model(card: dict[str, Any]) -> str:
    """A short name of a trained classifier from its card, e.g. ``'advbridge_mnist_cnn on mnist-5k
    (adv-pgd, own trainer)'``."""
    defense = card.get("defense")
    whose = f", {defense.get('trainer', 'own')} trainer" if defense and "defense" in defense else ""
    return f"{card['model']} on {card['dataset']}" + (f" ({defense['defense']}{whose})" if defense else "")

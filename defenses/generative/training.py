"""Training and caching the generative models, like the classifiers (:mod:`zoo.training`): a seeded
train/validation split, Adam, tqdm per epoch with the loss terms, validation loss per epoch, early
stopping keeping the best weights, a checkpoint and card in the model cache keyed by the config."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from advbridge.bridge.errors import CheckpointError, InvalidParameterError, check_name
from advbridge.defenses.generative.models import GENERATORS, ConvGenerator
from advbridge.zoo.checkpoints import cached_or_trained, checkpoint_dir, load_checkpoint
from advbridge.zoo.training_check import warn_if_failed
from advbridge.zoo.training_data import batches, stack, training_data

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1


@dataclass
class GeneratorConfig:
    """Everything that determines a trained generator (its cache key; ``data_root`` excepted).

    Args:
        dataset: a dataset name (see :data:`zoo.datasets.DATASETS`).
        generator: ``"ae"``, ``"vae"`` or ``"cvae"``.
        latent_dim: size of the code (≥ 1).
        beta: weight of the KL term (VAE, CVAE; ≥ 0).
        epochs, lr, batch_size, seed, patience, val_fraction, max_train, image_size, data_root: as
            :class:`zoo.train_config.TrainConfig`.
    """

    dataset: str
    generator: str = "vae"
    latent_dim: int = 16
    beta: float = 1.0
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 128
    seed: int = 0
    patience: int = 3
    val_fraction: float = 0.1
    max_train: int | None = None
    image_size: int | None = None
    data_root: str | None = None

    def __post_init__(self) -> None:
        check_name("generator", self.generator, GENERATORS)
        if isinstance(self.latent_dim, bool) or not isinstance(self.latent_dim, int) or self.latent_dim < 1:
            raise InvalidParameterError(f"expected latent_dim >= 1 (an integer), got {self.latent_dim!r}")
        if not _finite(self.beta) or self.beta < 0:
            raise InvalidParameterError(f"expected beta as a finite number >= 0, got {self.beta!r}")
        for name in ("epochs", "batch_size", "patience", "max_train"):
            value = getattr(self, name)
            if name == "max_train" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidParameterError(f"expected {name} >= 1 (an integer), got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise InvalidParameterError(f"expected seed as an int in [0, 2**63), got {self.seed!r}")
        if not _finite(self.lr) or self.lr <= 0:
            raise InvalidParameterError(f"expected lr as a finite number > 0, got {self.lr!r}")
        if not _finite(self.val_fraction) or not 0 <= self.val_fraction < 1:
            raise InvalidParameterError(f"expected val_fraction in [0, 1), got {self.val_fraction!r}")

    def cache_fields(self) -> dict[str, Any]:
        fields = asdict(self)
        del fields["data_root"]
        if self.generator == "ae":
            fields["beta"] = None  # unused: the same autoencoder whatever beta says
        return {**fields, "cache_format": CACHE_FORMAT}


def _finite(value: Any) -> bool:
    """A real number (not a bool), neither infinite nor NaN."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _build(cfg: GeneratorConfig, info) -> ConvGenerator:
    return ConvGenerator(cfg.generator, info.in_chans, info.image_size, cfg.latent_dim, num_classes=info.num_classes)


@torch.no_grad()
def validation_loss(generator: ConvGenerator, x: Tensor, y: Tensor) -> float:
    """The squared reconstruction error per image on held-out images, the posterior mean as the code."""
    generator.eval()
    total = 0.0
    for start in range(0, len(x), 500):
        xb, yb = x[start : start + 500], y[start : start + 500]
        recon = generator(xb, yb if generator.conditional else None)
        total += float((recon - xb).pow(2).flatten(1).sum(1).sum())
    return total / max(len(x), 1)


def train_generator(cfg: GeneratorConfig, *, progress: bool = True, device: str | torch.device = "cpu"):
    """Train a generator as ``cfg`` says; returns ``(generator in eval mode, card)``."""
    data = training_data(cfg)
    info = data.info
    gen = torch.Generator()
    gen.set_state(data.generator_state)  # the seeded generator as the split left it
    val_x, val_y = (t.to(device) for t in stack(data.train_ds, data.val_idx)) if len(data.val_idx) else (None, None)
    start = time.perf_counter()
    history, best, best_epoch, best_state, epoch, image_sum = [], float("inf"), 0, None, 0, None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = _build(cfg, info).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            order = data.train_idx[torch.randperm(len(data.train_idx), generator=gen)]
            sums: dict[str, float] = {}
            seen = 0
            bar = tqdm(
                total=len(order), desc=f"{cfg.generator} epoch {epoch}/{cfg.epochs}", unit="img", disable=not progress
            )
            for x, y in batches(data.train_ds, order, cfg.batch_size):
                x, y = x.to(device), y.to(device)
                if epoch == 1:  # the mean training image: the baseline a generator must beat
                    image_sum = x.sum(0) if image_sum is None else image_sum + x.sum(0)
                loss, terms = model.loss(x, y if model.conditional else None, beta=cfg.beta)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                seen += len(x)
                for key, value in {"loss": float(loss.detach()), **terms}.items():
                    sums[key] = sums.get(key, 0.0) + value * len(x)
                bar.update(len(x))
                bar.set_postfix({k: f"{v / seen:.2f}" for k, v in sums.items()})
            bar.close()
            history.append({"epoch": epoch, **{k: v / seen for k, v in sums.items()}})
            if val_x is None:
                continue
            assert val_y is not None  # stacked with val_x
            val = validation_loss(model, val_x, val_y)
            history[-1]["val_reconstruction"] = val
            if val <= best:
                best, best_epoch = val, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            logger.info(
                "%s epoch %d: train loss %.3f, val reconstruction %.3f", cfg.generator, epoch, history[-1]["loss"], val
            )
            if epoch - best_epoch >= cfg.patience:
                logger.info("early stop: no better validation reconstruction for %d epochs", cfg.patience)
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    test_x, test_y = stack(data.test_ds, torch.arange(len(data.test_ds)))
    # summed over the first epoch's batches: epochs >= 1 and training_data refuses an empty training split
    assert image_sum is not None
    card = {
        "kind": "generator",
        "dataset": cfg.dataset,
        "model": cfg.generator,
        "generator": cfg.generator,
        "in_chans": info.in_chans,
        "image_size": info.image_size,
        "num_classes": info.num_classes,
        "latent_dim": cfg.latent_dim,
        "val_reconstruction": best if val_x is not None else None,
        "test_reconstruction": validation_loss(model, test_x.to(device), test_y.to(device)),
        "mean_image_reconstruction": float(
            (test_x.to(device) - image_sum / len(data.train_idx)).pow(2).flatten(1).sum(1).mean()
        ),
        "epochs_run": epoch,
        "best_epoch": best_epoch or epoch,
        "train_samples": len(data.train_idx),
        "train_seconds": round(time.perf_counter() - start, 2),
        "history": history,
        "config": asdict(cfg),
    }
    return model, card


def load_generator(folder) -> tuple[ConvGenerator, dict[str, Any]]:
    """The generator saved in a checkpoint folder (weights verified against its card), in eval mode."""
    state, card = load_checkpoint(folder)
    if card.get("kind") != "generator":
        raise CheckpointError(f"expected a generator checkpoint in {folder}, got a {card.get('kind', 'classifier')}")
    cfg = card["config"]
    model = ConvGenerator(
        card["generator"], card["in_chans"], card["image_size"], cfg["latent_dim"], card["num_classes"]
    )
    model.load_state_dict(state)
    return model.eval(), card


def get_or_train_generator(
    cfg: GeneratorConfig, *, progress: bool = True, device: str | torch.device = "cpu"
) -> tuple[ConvGenerator, dict[str, Any]]:
    """The cached generator of ``cfg`` if there is a valid one, else train it and cache it."""
    folder = checkpoint_dir(cfg.dataset, f"generator-{cfg.generator}", cfg.cache_fields())
    model, card = cached_or_trained(
        folder, load_generator, lambda: train_generator(cfg, progress=progress, device=device), what="generator"
    )
    warn_if_failed(card, f"generator {cfg.generator} on {cfg.dataset}")
    return model.to(device), card


def check_generator_for(card: dict[str, Any], dataset: str, in_chans: int, image_size: int) -> None:
    """A generator trained on another dataset or image size is refused, naming both (one trained on
    ``cifar10`` serves ``cifar10-exact``: :data:`zoo.datasets.SAME_TASK`)."""
    from advbridge.zoo.datasets import SAME_TASK

    if (
        card.get("dataset") not in (dataset, SAME_TASK.get(dataset))
        or card.get("image_size") != image_size
        or card.get("in_chans") != in_chans
    ):
        raise InvalidParameterError(
            f"expected a generator for {dataset} ({in_chans}×{image_size}×{image_size}), got one trained on "
            f"{card.get('dataset')!r} ({card.get('in_chans')}×{card.get('image_size')}×{card.get('image_size')})"
        )


__all__ = ["GeneratorConfig", "check_generator_for", "get_or_train_generator", "load_generator", "train_generator"]

"""Checkpoints: safetensors weights plus a JSON model card, written atomically and verified on load.

A checkpoint is a folder holding ``model.safetensors`` and ``card.json``. The card records what the weights
are (dataset, model, accuracy, training config), the library versions that made them, when, and the
sha256 of the weights file, which :func:`load_checkpoint` checks. Both files are written to a temporary
file in the same folder and moved into place with ``os.replace`` (atomic on POSIX and Windows), weights
first and card last, so a folder with a card always has complete weights; an interrupted save leaves at
most a stray ``.*.tmp`` file and never a half-written checkpoint.

Trained models are cached under ``cache_dir()/models/<dataset>-<model>-<config key>/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from advbridge.bridge import distributed
from advbridge.bridge.errors import CheckpointError, InvalidParameterError
from advbridge.bridge.io import atomic_write_bytes

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """advbridge's cache folder: ``$ADVBRIDGE_CACHE``, else ``~/.cache/advbridge``."""
    env = os.environ.get("ADVBRIDGE_CACHE")
    folder = Path(env).expanduser() if env else Path("~/.cache/advbridge").expanduser()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "$ADVBRIDGE_CACHE" if env else "the cache folder"
        raise InvalidParameterError(f"expected {where} {folder} to be a folder, got a file at {existing}")
    return folder


def config_key(config: Mapping[str, Any]) -> str:
    """A short, stable hash of a config: the first 12 hex digits of the sha256 of its sorted JSON."""
    text = json.dumps(dict(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def checkpoint_dir(dataset: str, model: str, config: Mapping[str, Any]) -> Path:
    """Where the model trained with ``config`` is cached: ``cache_dir()/models/<dataset>-<model>-<key>``."""

    def slug(text: str) -> str:
        # imagefolder:/some/path must become one folder name
        return re.sub(r"[^A-Za-z0-9._]+", "_", text).strip("_")[:60] or "x"

    return cache_dir() / "models" / f"{slug(dataset)}-{slug(model)}-{config_key(config)}"


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the weights, for the card."""
    import timm
    import torchvision

    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm.__version__}


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(model: nn.Module, card: Mapping[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """Save ``model``'s state dict and its card into the folder ``path`` (created if needed).

    Args:
        model: the model to save (a :class:`~zoo.models.NormalizedClassifier` keeps its ``backbone.`` prefix
            and its ``mean``/``std`` buffers).
        card: what to record: dataset, model, accuracy, config... (JSON-serializable; other values are
            written with ``str``).
        path: the checkpoint folder.

    Returns:
        The card as written, with ``versions``, ``sha256``, ``weights_file`` and ``created`` added.
    """
    from safetensors.torch import save

    if not isinstance(card, Mapping):
        raise InvalidParameterError(f"expected the card as a dict, got {type(card).__name__}")
    folder = Path(path).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    # clone(): safetensors refuses tensors sharing storage (tied weights); copies are fine to store twice.
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    data = save(state, metadata={"format": "pt"})
    atomic_write_bytes(folder / WEIGHTS_FILE, data)
    full_card = {
        **card,
        "weights_file": WEIGHTS_FILE,
        "sha256": hashlib.sha256(data).hexdigest(),
        "versions": library_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_bytes(folder / CARD_FILE, (json.dumps(full_card, indent=2, default=str) + "\n").encode())
    return json.loads(json.dumps(full_card, default=str))


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Load a checkpoint folder (or its ``model.safetensors``), verifying the weights against the card.

    Returns:
        ``(state_dict, card)``.

    Raises:
        CheckpointError: missing files, an unreadable card, or weights whose sha256 differs from the card's.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    folder = path.parent if path.is_file() else path
    card_path = folder / CARD_FILE
    if not card_path.is_file():
        raise CheckpointError(f"expected a checkpoint folder with {CARD_FILE} and {WEIGHTS_FILE}, got {path}")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"could not read the card {card_path}: {exc}") from exc
    if not isinstance(card, dict) or not isinstance(card.get("sha256"), str):
        raise CheckpointError(f"expected a card with a 'sha256' entry in {card_path}, got {str(card)[:200]}")
    weights = folder / card.get("weights_file", WEIGHTS_FILE)
    if not weights.is_file():
        raise CheckpointError(f"expected the weights file {weights} named by {card_path}, got no such file")
    actual = file_sha256(weights)
    if actual != card["sha256"]:
        raise CheckpointError(
            f"checkpoint {weights} does not match its card: expected sha256 {card['sha256']}, got {actual} "
            f"(corrupt or changed file); delete {folder} to retrain"
        )
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"could not read the weights {weights}: {exc}") from exc
    return state, card


M = TypeVar("M", bound=nn.Module)


def cached_or_trained(
    folder: Path,
    load: Callable[[Path], tuple[M, dict[str, Any]]],
    train: Callable[[], tuple[M, dict[str, Any]]],
    *,
    every_rank_trains: bool = False,
    what: str = "model",
) -> tuple[M, dict[str, Any]]:
    """The valid checkpoint in ``folder`` (``load(folder)``), else ``train()``'s model saved there, with its card.

    A checkpoint that fails to load is reported and trained again. Under ``torchrun`` rank 0 decides whether
    the cache has it and is the only one to write it; ``train`` runs on every rank when it is itself
    distributed (``every_rank_trains``), else on rank 0 while the others wait; the other ranks then load what
    rank 0 wrote, so that every rank holds the same weights and card.
    """
    world = distributed.world()
    cached = None
    if world.main and (folder / CARD_FILE).is_file():
        try:
            cached = load(folder)
        except (CheckpointError, KeyError, RuntimeError) as exc:
            log.warning("cached %s %s is unusable (%s: %s); training it again", what, folder, type(exc).__name__, exc)
    if distributed.broadcast(cached is not None):
        log.info("using cached %s %s", what, folder)
        return cached if cached is not None else load(folder)
    log.info("no cached %s in %s; training ...", what, folder)
    made = train() if every_rank_trains or world.main else None
    if world.main:
        assert made is not None  # rank 0 always trains (every_rank_trains or world.main above)
        model, card = made
        card = save_checkpoint(model, {**card, "config_key": folder.name.rsplit("-", 1)[-1]}, folder)
        log.info("saved %s", folder)
    distributed.barrier()
    return (model, card) if world.main else load(folder)

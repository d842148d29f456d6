"""Per-batch progress of long comparisons, so that ``--resume`` finishes a killed run.

Each (library, batch) result is saved atomically as ``<folder>/<library>-<batch>.safetensors``
(tensors, plus status, timing and pass counts as metadata) next to ``run.json``, the key of the run
(spec, workload, batch size). ``--resume`` reuses the saved parts only if the key matches; a run
without ``--resume`` starts from scratch. A finished run removes the folder.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from advbridge.bridge.errors import CheckpointError
from advbridge.bridge.io import atomic_write, atomic_write_text, read_json
from advbridge.bridge.runner import AttackResult
from advbridge.bridge.spec import AttackSpec

log = logging.getLogger(__name__)

_TENSORS = ("x_adv", "clean_correct", "success", "l2", "linf", "clean_pred", "adv_pred")
_NUMBERS = ("seconds", "forward_images", "backward_images")


def batch_seed(seed: int, batch: int) -> int:
    """An independent, reproducible seed for batch ``batch`` of a run seeded with ``seed``."""
    return int(np.random.SeedSequence([seed, batch]).generate_state(1)[0])


def read_resume_key(folder: str | Path) -> dict[str, Any] | None:
    """The settings a killed run saved in ``<folder>/run.json`` (``None`` when there is none); an unreadable or
    truncated file raises :class:`CheckpointError` in one line."""
    key_file = Path(folder) / "run.json"
    if not key_file.exists():
        return None
    saved = read_json(key_file, "the resume key", "run without --resume to start over")
    return saved if isinstance(saved, dict) else {"(not a mapping)": saved}


class ProgressStore:
    """Saved per-batch results of one comparison run."""

    def __init__(self, folder: str | Path, key: dict[str, Any], *, resume: bool) -> None:
        self.folder = Path(folder)
        self.key = json.loads(json.dumps(key, sort_keys=True, default=str))
        key_file = self.folder / "run.json"
        saved = read_resume_key(self.folder) if resume else None  # None: no key file
        if saved is not None:
            if saved != self.key:
                changed = sorted(k for k in set(saved) | set(self.key) if saved.get(k) != self.key.get(k))
                raise CheckpointError(
                    f"cannot resume from {self.folder}: it was made with different settings ({', '.join(changed)}); "
                    "run without --resume to start over"
                )
            log.info("resuming from %s (%d saved parts)", self.folder, len(list(self.folder.glob("*.safetensors"))))
        else:
            if self.folder.exists():
                shutil.rmtree(self.folder)
            self.folder.mkdir(parents=True)
            atomic_write_text(key_file, json.dumps(self.key, sort_keys=True, indent=1))

    def _path(self, library: str, batch: int) -> Path:
        return self.folder / f"{library}-{batch:05d}.safetensors"

    def load(self, library: str, batch: int, spec: AttackSpec) -> AttackResult | None:
        path = self._path(library, batch)
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:  # one read: metadata and tensors
                meta = f.metadata()
                tensors = {name: f.get_tensor(name) for name in f.keys()}
        except Exception as exc:  # a corrupt part is recomputed, never trusted
            log.warning("ignoring unreadable progress file %s: %s", path, exc)
            return None
        result = AttackResult(library=meta["library"], version=meta["version"], spec=spec, status=meta["status"])
        result.reason = meta["reason"]
        for name in _NUMBERS:
            setattr(result, name, type(getattr(result, name))(float(meta[name])))
        for name in _TENSORS:
            if name in tensors:
                setattr(result, name, tensors[name])
        return result

    def save(self, batch: int, result: AttackResult) -> None:
        tensors = {
            n: getattr(result, n).detach().cpu().contiguous() for n in _TENSORS if getattr(result, n) is not None
        }
        if not tensors:
            tensors = {"empty": torch.zeros(0)}
        meta = {"library": result.library, "version": result.version, "status": result.status, "reason": result.reason}
        meta.update({n: repr(float(getattr(result, n))) for n in _NUMBERS})
        atomic_write(self._path(result.library, batch), lambda tmp: save_file(tensors, str(tmp), metadata=meta))

    def finish(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class Measured(NamedTuple):
    """The per-sample tensors of a result that ran: the runner sets them all at once, :meth:`ProgressStore.load`
    and :func:`merge_results` keep them together."""

    x_adv: Tensor
    clean_correct: Tensor
    success: Tensor
    clean_pred: Tensor
    adv_pred: Tensor
    l2: Tensor
    linf: Tensor


def measured(result: AttackResult) -> Measured:
    """``result``'s per-sample tensors, for a result that ran (``success`` set: status ``ok`` or ``invalid``);
    ``ValueError`` for one that did not (``unsupported``, ``error``)."""
    x_adv, clean_correct, success = result.x_adv, result.clean_correct, result.success
    clean_pred, adv_pred, l2, linf = result.clean_pred, result.adv_pred, result.l2, result.linf
    if (x_adv is None or clean_correct is None or success is None or clean_pred is None or adv_pred is None
            or l2 is None or linf is None):  # fmt: skip
        raise ValueError(f"{result.library} ran no attack ({result.status}): it has no per-sample tensors")
    return Measured(x_adv, clean_correct, success, clean_pred, adv_pred, l2, linf)


def merge_results(parts: Sequence[AttackResult]) -> AttackResult:
    """One library's per-batch results as one result (tensors concatenated, times and passes summed)."""
    first = parts[0]
    merged = AttackResult(library=first.library, version=first.version, spec=first.spec, status="ok")
    for status in ("unsupported", "error", "invalid"):
        bad = [p for p in parts if p.status == status]
        if bad:
            merged.status = status
            merged.reason = "; ".join(dict.fromkeys(p.reason for p in bad))
            break
    merged.seconds = sum(p.seconds for p in parts)
    merged.forward_images = sum(p.forward_images for p in parts)
    merged.backward_images = sum(p.backward_images for p in parts)
    if merged.status in ("ok", "invalid") and all(p.x_adv is not None for p in parts):
        for name in _TENSORS:
            if all(getattr(p, name) is not None for p in parts):
                setattr(merged, name, torch.cat([getattr(p, name) for p in parts]))
    return merged

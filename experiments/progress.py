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
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from advbridge.bridge.errors import CheckpointError
from advbridge.bridge.io import atomic_write, atomic_write_text, read_json
from advbridge.bridge.runner import AttackResult, Failed, Ran, Unsupported
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
        who: dict[str, Any] = {"library": meta["library"], "version": meta["version"], "spec": spec}
        who.update(seconds=float(meta["seconds"]))
        who.update({name: int(float(meta[name])) for name in ("forward_images", "backward_images")})
        status = meta["status"]
        if status in ("ok", "invalid") and all(name in tensors for name in _TENSORS):
            problems = meta["reason"] if status == "invalid" else ""
            points: dict[str, Any] = {name: tensors[name] for name in _TENSORS}
            return Ran(**who, **points, problems=problems)
        if status == "unsupported":
            return Unsupported(**who, reason=meta["reason"])
        if status == "error":
            return Failed(**who, reason=meta["reason"])
        log.warning("ignoring progress file %s: status %r without its tensors", path, status)
        return None

    def save(self, batch: int, result: AttackResult) -> None:
        tensors = (
            {n: getattr(result, n).detach().cpu().contiguous() for n in _TENSORS}
            if isinstance(result, Ran)
            else {"empty": torch.zeros(0)}
        )
        meta = {"library": result.library, "version": result.version, "status": result.status, "reason": result.reason}
        meta.update({n: repr(float(getattr(result, n))) for n in _NUMBERS})
        atomic_write(self._path(result.library, batch), lambda tmp: save_file(tensors, str(tmp), metadata=meta))

    def finish(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def merge_results(parts: Sequence[AttackResult]) -> AttackResult:
    """One library's per-batch results as one result (tensors concatenated, times and passes summed): unsupported
    if any batch was, else failed if any batch raised, else the batches' points (invalid if any batch was)."""
    first = parts[0]
    who: dict[str, Any] = {"library": first.library, "version": first.version, "spec": first.spec}
    who.update(
        seconds=sum(p.seconds for p in parts),
        forward_images=sum(p.forward_images for p in parts),
        backward_images=sum(p.backward_images for p in parts),
    )
    for kind in (Unsupported, Failed):
        bad = [p.reason for p in parts if isinstance(p, kind)]
        if bad:
            return kind(**who, reason="; ".join(dict.fromkeys(bad)))
    ran = [p for p in parts if isinstance(p, Ran)]  # every part: none is unsupported or failed
    problems = "; ".join(dict.fromkeys(p.problems for p in ran if p.problems))
    points: dict[str, Any] = {name: torch.cat([getattr(p, name) for p in ran]) for name in _TENSORS}
    return Ran(**who, **points, problems=problems)

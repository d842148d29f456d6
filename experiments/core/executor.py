"""The executor: every attacked row of ``compare``, ``defend`` and ``audit`` runs through these two functions.

- :func:`run_library` — one library's spec (a ``compare`` row; a ``defend`` transfer or white-box row; an audit's
  library row), through :func:`bridge.runner.run_attack`;
- :func:`run_own` — an attack of ours, ``attack(x, y, seed) -> x_adv`` (a ``defend`` adaptive row; an audit's
  AutoAttack, Square, remedy and unbounded rows), through :func:`bridge.runner.run_batch_attack`.

Both run through the runner's one harness (:func:`bridge.runner.measure_call`: eval mode, pass counts, timing, the
output's range and eps-ball checks, the caller's tensors guarded) by attack batch. Batch ``b`` of ``batch_size``
images is seeded with :func:`~experiments.progress.batch_seed` ``(seed, b)`` when there are several batches, and with
``seed`` itself when one batch holds all the images (so a run without ``--attack-batch-size`` is what it was before
batches existed); the batch goes to rank ``b mod K`` (:func:`bridge.distributed.my_batches`) and the results are
gathered in order. The gathered result is the one a single process computes with the same batch size, whatever the
number of ranks: ``compare`` and ``defend`` write the same CSV under ``torchrun --nproc_per_node=K`` as in one
process (tested). ``shard=False`` runs every batch here (the audit: its path tracker must see every query). A random
defense (a sampling VAE) draws from the global RNG outside the attacks too (its predictions), and is the same only
batch by batch.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol

import torch
from torch import Tensor, nn

from advbridge.bridge import distributed
from advbridge.bridge.runner import AttackResult, BatchRun, Unsupported, run_attack, run_batch_attack, seed_everything
from advbridge.bridge.spec import AttackSpec
from advbridge.experiments.progress import ProgressStore, batch_seed, merge_results

#: An attack of ours on one batch: ``attack(x, y, seed) -> x_adv``.
BatchAttack = Callable[[Tensor, Tensor, int], Tensor]


class Progress(Protocol):
    """A progress bar (tqdm's ``update``)."""

    def update(self, n: float | None = 1) -> bool | None: ...


def attack_slices(n: int, batch_size: int | None) -> list[slice]:
    """The attack batches of ``n`` images: ``batch_size`` each (the last one smaller); all at once for ``None``."""
    size = batch_size or max(n, 1)
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def batch_seeds(seed: int, n_batches: int) -> list[int]:
    """The seed of each batch: ``seed`` for a single batch, else :func:`batch_seed` ``(seed, b)``."""
    return [seed] if n_batches == 1 else [batch_seed(seed, b) for b in range(n_batches)]


def _batches(n_batches: int, shard: bool) -> list[int]:
    return distributed.my_batches(n_batches) if shard else list(range(n_batches))


def run_library(
    library: str,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec,
    *,
    num_classes: int | None = None,
    batch_size: int | None = None,
    progress: ProgressStore | None = None,
    bar: Progress | None = None,
    during: Callable[[], AbstractContextManager] | None = None,
    shard: bool = True,
) -> AttackResult:
    """``spec`` by ``library`` on ``(x, y)`` by attack batch (module docstring), merged: times and passes summed,
    unsupported if any batch was (the first unsupported batch ends the run: every batch would say so).

    ``progress``: each finished batch is saved there and a saved one reused (``--resume``). ``bar``: advanced once
    per batch of this rank. ``during``: a context around each library call (the audit's path tracker).
    ``num_classes``: inferred from one forward pass when ``None``.
    """
    slices = attack_slices(len(x), batch_size)
    seeds = batch_seeds(spec.seed, len(slices))
    mine = _batches(len(slices), shard)
    parts: dict[int, AttackResult] = {}
    for b in mine:
        part = progress.load(library, b, spec) if progress is not None else None
        if part is None:
            s = slices[b]
            part = run_attack(library, model, x[s], y[s], spec, num_classes=num_classes, seed=seeds[b], during=during)
            if progress is not None:
                progress.save(b, part)
        parts[b] = part
        if bar is not None:
            bar.update()
        if isinstance(part, Unsupported):
            if bar is not None:
                bar.update(len(mine) - len(parts))
            break
    merged = distributed.gather_batches(parts) if shard else parts
    return merge_results([merged[b] for b in sorted(merged)])


class ShardFailed(RuntimeError):
    """Under ``torchrun``, an attack that raised on one rank's batch, raised again on every rank (so that none
    waits for the others forever)."""


def run_own(
    attack: BatchAttack,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    seed: int,
    batch_size: int | None = None,
    ball: tuple[str, float] | None = None,
    shard: bool = True,
) -> BatchRun:
    """``attack(x_b, y_b, seed_b)`` by attack batch through :func:`bridge.runner.run_batch_attack` (passes counted on
    ``model``, the module the attack targets; ``ball``: the eps ball its output must stay in), concatenated on
    ``x``'s device, passes and times summed.

    With several batches every RNG is seeded with the batch's seed before its attack (attacks that draw from the
    global RNG then repeat batch by batch); one batch leaves the RNGs as they are (the caller seeds).

    Raises:
        InvalidOutputError: a batch's output failed a check (one process).
        ShardFailed: under ``torchrun``, a batch raised on some rank.
    """
    slices = attack_slices(len(x), batch_size)
    seeds = batch_seeds(seed, len(slices))

    def one(b: int) -> BatchRun | str:
        if len(slices) > 1:
            seed_everything(seeds[b])
        try:
            done = run_batch_attack(attack, model, x[slices[b]], y[slices[b]], seeds[b], ball=ball)
            return done._replace(x_adv=done.x_adv.cpu())
        except Exception as exc:
            if not (shard and distributed.world().distributed):
                raise
            return f"{type(exc).__name__}: {exc} (rank {distributed.world().rank})"  # every rank hears of it

    if shard:
        parts = distributed.map_batches(one, len(slices))
    else:
        parts = [one(b) for b in range(len(slices))]
    failures = [p for p in parts if isinstance(p, str)]
    if failures:
        raise ShardFailed(failures[0])
    done = [p for p in parts if isinstance(p, BatchRun)]  # every part, none failed
    return BatchRun(
        torch.cat([p.x_adv for p in done]).to(x.device),
        sum(p.forward_images for p in done),
        sum(p.backward_images for p in done),
        sum(p.seconds for p in done),
    )

"""Attacks run by attack batch, each batch on its rank under ``torchrun``, the results gathered in order.

Batch ``b`` of ``batch_size`` images is seeded with :func:`~experiments.progress.batch_seed` ``(seed, b)`` when
there are several batches, and with ``seed`` itself when one batch holds all the images (so a run without
``--attack-batch-size`` is what it was before batches existed); the batch goes to rank ``b mod K``
(:func:`bridge.distributed.my_batches`). The gathered result is the one a single process computes with the
same batch size, whatever the number of ranks: ``compare`` and ``defend`` write the same CSV under
``torchrun --nproc_per_node=K`` as in one process (tested). A random defense (a sampling VAE) draws from the
global RNG outside the attacks too (its predictions), and is the same only batch by batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from advbridge.bridge import distributed
from advbridge.bridge.runner import AttackResult, run_attack, seed_everything
from advbridge.bridge.spec import AttackSpec
from advbridge.experiments.progress import batch_seed, merge_results

#: An attack of the adaptive rows: ``attack(x, y, seed) -> x_adv`` on one batch.
BatchAttack = Callable[[Tensor, Tensor, int], Tensor]


def attack_slices(n: int, batch_size: int | None) -> list[slice]:
    """The attack batches of ``n`` images: ``batch_size`` each (the last one smaller); all at once for ``None``."""
    size = batch_size or max(n, 1)
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def batch_seeds(seed: int, n_batches: int) -> list[int]:
    """The seed of each batch: ``seed`` for a single batch, else :func:`batch_seed` ``(seed, b)``."""
    return [seed] if n_batches == 1 else [batch_seed(seed, b) for b in range(n_batches)]


def sharded_run_attack(
    library: str,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec,
    *,
    num_classes: int,
    batch_size: int | None = None,
) -> AttackResult:
    """:func:`bridge.runner.run_attack` over the attack batches, merged (times and passes summed)."""
    slices = attack_slices(len(x), batch_size)
    seeds = batch_seeds(spec.seed, len(slices))

    def one(b: int) -> AttackResult:
        s = slices[b]
        return run_attack(library, model, x[s], y[s], spec, num_classes=num_classes, seed=seeds[b])

    return merge_results(distributed.map_batches(one, len(slices)))


class ShardFailed(RuntimeError):
    """Under ``torchrun``, an attack that raised on one rank's batch, raised again on every rank (so that none
    waits for the others forever)."""


def sharded_adversarial(
    attack: BatchAttack, x: Tensor, y: Tensor, *, seed: int, batch_size: int | None = None
) -> Tensor:
    """``attack(x_b, y_b, seed_b)`` over the attack batches, concatenated on ``x``'s device.

    With several batches every RNG is seeded with the batch's seed before its attack (attacks that draw from
    the global RNG then repeat batch by batch); one batch leaves the RNGs as they are.
    """
    slices = attack_slices(len(x), batch_size)
    seeds = batch_seeds(seed, len(slices))

    def one(b: int) -> Tensor | str:
        if len(slices) > 1:
            seed_everything(seeds[b])
        try:
            return attack(x[slices[b]], y[slices[b]], seeds[b]).detach().cpu()
        except Exception as exc:
            if not distributed.world().distributed:
                raise
            return f"{type(exc).__name__}: {exc} (rank {distributed.world().rank})"  # every rank hears of it

    parts = distributed.map_batches(one, len(slices))
    failures = [p for p in parts if isinstance(p, str)]
    if failures:
        raise ShardFailed(failures[0])
    return torch.cat([p for p in parts if isinstance(p, Tensor)]).to(x.device)  # every part, none failed

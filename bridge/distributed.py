"""Running past one process with ``torch.distributed``, as launched by ``torchrun``.

Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) every function here is the one-process
identity: one rank, nothing gathered, nothing waited for. Under ``torchrun --nproc_per_node=K`` (one node
or several, through its rendezvous; Slurm and Kubernetes launch it the same way), :func:`setup` joins
the process group: gloo on CPU, NCCL when the process has a GPU (one per rank, ``LOCAL_RANK``).

Evaluation is sharded **by attack batch**: batch ``b`` of a run goes to rank ``b mod K`` and keeps the
seed it has in a one-process run with the same batch size (:func:`experiments.progress.batch_seed`), so
the gathered per-sample results, and the tables written from them, are those of a one-process run. Only
rank 0 writes files; a model that must be trained first is trained by every rank together
(``DistributedDataParallel``, :mod:`zoo.training`) and saved once by rank 0.

A foundation module, as ``bridge.errors`` and ``bridge.io`` are: it imports nothing of advbridge's but the
errors, so every layer may use it (``zoo`` trains and caches under ``torchrun`` with it).
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from advbridge.bridge.errors import AdvBridgeError

T = TypeVar("T")

#: What ``torchrun`` sets for every rank; all of them or none must be there.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

#: How long a rank waits for the others (a model trained by rank 0 alone, a slow shard): ``$ADVBRIDGE_DIST_TIMEOUT``
#: seconds, default 6 hours.
DEFAULT_TIMEOUT_S = 6 * 3600


class DistributedSetupError(AdvBridgeError):
    """An incomplete ``torchrun`` environment, or ranks that disagree on what to run."""


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def environment_world(environ: dict[str, str] | None = None) -> World | None:
    """The world ``torchrun`` describes in ``environ`` (default ``os.environ``), or ``None`` when not launched
    by it; an incomplete or inconsistent environment raises :class:`DistributedSetupError`."""
    env = os.environ if environ is None else environ
    present = [name for name in TORCHRUN_VARIABLES if name in env]
    if not present:
        return None
    missing = [name for name in TORCHRUN_VARIABLES if name not in env]
    if missing:
        raise DistributedSetupError(
            f"incomplete torchrun environment: {', '.join(present)} set but {', '.join(missing)} missing; "
            "launch with torchrun --nproc_per_node=K cli.py ... (or unset them all for one process)"
        )
    try:
        rank, size, local = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"])
    except ValueError:
        values = ", ".join(f"{k}={env[k]!r}" for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
        raise DistributedSetupError(f"expected integer RANK, WORLD_SIZE, LOCAL_RANK, got {values}") from None
    if size < 1 or not 0 <= rank < size or local < 0:
        raise DistributedSetupError(f"expected 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0, got {rank}, {size}, {local}")
    return World(rank=rank, size=size, local_rank=local)


def world() -> World:
    """This process's world: the process group's when one is initialized, else a single rank."""
    if dist.is_available() and dist.is_initialized():
        return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", 0)))
    return World()


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA devices, gloo otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def setup(device: str | torch.device | None = None) -> World:
    """Join the process group ``torchrun`` prepared (a no-op without it, or when already joined).

    On CUDA each rank takes the GPU ``LOCAL_RANK``. Returns the world.
    """
    env_world = environment_world()
    if env_world is None or (dist.is_available() and dist.is_initialized()):
        return world()
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(env_world.local_rank)
    timeout = datetime.timedelta(seconds=float(os.environ.get("ADVBRIDGE_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)))
    dist.init_process_group(backend=backend_for(device), timeout=timeout)
    return world()


def teardown() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if world().distributed:
        dist.barrier()


def gather(obj: T) -> list[T]:
    """``obj`` from every rank, in rank order (picklable objects; tensors on the CPU). One rank: ``[obj]``."""
    if not world().distributed:
        return [obj]
    out: list[Any] = [None] * world().size
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: T) -> T:
    """Rank 0's ``obj`` on every rank."""
    if not world().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_same(what: str, value: Any) -> None:
    """Raise :class:`DistributedSetupError` on every rank unless all ranks have the same ``value`` (JSON)."""
    if not world().distributed:
        return
    text = json.dumps(value, sort_keys=True, default=str)
    texts = gather(text)
    if len(set(texts)) > 1:
        odd = next(r for r, t in enumerate(texts) if t != texts[0])
        raise DistributedSetupError(
            f"ranks disagree on the {what}: rank 0 has {texts[0][:200]}, rank {odd} has {texts[odd][:200]}; "
            "launch every rank with the same command and files"
        )


def my_batches(n_batches: int) -> list[int]:
    """The attack batches this rank runs: ``b`` with ``b mod world size == rank``."""
    w = world()
    return list(range(w.rank, n_batches, w.size))


def gather_batches(mine: dict[int, T]) -> dict[int, T]:
    """Every rank's ``{batch: result}`` merged into one dict (one process: ``mine``)."""
    if not world().distributed:
        return mine
    merged: dict[int, T] = {}
    for part in gather(mine):
        merged.update(part)
    return merged


def map_batches(run: Callable[[int], T], n_batches: int) -> list[T]:
    """``[run(b) for b in range(n_batches)]``, each batch run by its rank and the results gathered in order."""
    merged = gather_batches({b: run(b) for b in my_batches(n_batches)})
    return [merged[b] for b in range(n_batches)]


@contextmanager
def main_first() -> Iterator[bool]:
    """Rank 0 runs the block first, the others after it is done (e.g. a download or a cache written once).

    Yields whether this is rank 0.
    """
    main = world().main
    if not main:
        barrier()
    try:
        yield main
    finally:
        if main:
            barrier()


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (anything else as it is)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model

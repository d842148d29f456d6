"""Benchmark: own attacks vs every library, and vs the bare passes each one needs (``cli.py bench``).

    python cli.py bench [--model resnet18 --dataset cifar10-exact] [--n 500] [--attacks fgsm,pgd,...]
        [--libraries own,art,...] [--repeats 3] [--device cpu|cuda] [--out results/bench-<dataset>-<model>]

Every library runs the same attack (:data:`BENCH_ATTACKS`, at the dataset's standard budget) on the same
model and images, through the runner, so that every one pays the same hook overhead. One row per attack ×
library, measured in this one run:

- ``images_per_s``, and ``own_speedup`` = the library's time ÷ own time (> 1: own is faster);
- ``fwd_per_image``, ``bwd_per_image``: forward and input-backward passes per image (counted by hooks);
- ``floor_seconds``: the time those passes take run bare on the whole batch: ``fwd_per_image`` × F +
  ``bwd_per_image`` × B, where F is one forward (with its graph) and B one backward to the input of all n
  images, measured in this run as the mean of a block of consecutive passes (FGSM: 1, PGD: its steps,
  DeepFool and DDN: 10) started from the state an attack starts in, the first on the clean images and the
  others on the adversarial images own returned (the round's first library's when own is not run; a pass's
  cost depends on its input, see :func:`pass_seconds`), in the faster of the default and the channels-last
  memory layout, from the round with the fastest F + B;
  ``vs_floor`` = seconds ÷ floor (1.0: nothing paid beyond the passes themselves). A minimal-norm attack
  can be below 1: its later steps run on the few samples still going, and the floor prices every pass
  at the whole batch's rate;
- ``peak_mb``: peak memory above the level before the run. On a CPU with glibc (``cli.py bench``): the live
  bytes, one run of each in a separate process whose heap unmaps every block above 128 KiB when it is freed
  (:mod:`experiments.bench.memory`, which says why: in this process, the pages a run touches are its live
  tensors plus whatever the heap's fragmentation, left by the runs before it, makes it touch afresh: own PGD
  L∞ on the MNIST CNN, 500 digits, peaked anywhere from 215 to 304 MB). On CUDA: ``max_memory_allocated``, the least of the
  rounds. :func:`benchmark` alone (no command-line options to rebuild the workload in a child from) keeps
  the resident peak in this process (VmHWM after ``malloc_trim`` and a reset through
  /proc/self/clear_refs), the least of the rounds;
  ``success_rate`` on the images the model classifies correctly; ``rounds``, how many rounds the attack ran.

Times are the best of ``--repeats`` rounds (more for a short attack, until own has been timed for 5 s in
all, at most 25: see :data:`MIN_LEAD_SECONDS`); each round times every library once, in a new random order, so
that a change in machine load hits every library alike, and the floor right after own (after the first
library when own is not run), so that own and the passes it needs are timed back to back. ``<out>.md`` holds the
machine (CPU model, the ATen CPU capability, threads; the GPU), the versions, the table and the targets
of :func:`target_lines`.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import math
import platform
import random
import subprocess
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from advbridge.bridge.adapters import LIBRARIES, get_adapter
from advbridge.bridge.errors import InvalidParameterError, check_name
from advbridge.bridge.io import OutputPrefix, atomic_write_text
from advbridge.bridge.runner import Ran, run_attack, synchronize
from advbridge.bridge.spec import AttackSpec, Norm, standard_eps
from advbridge.experiments.bench import memory
from advbridge.experiments.requests import BenchRequest, Outcome
from advbridge.experiments.workload import Workload
from advbridge.own_attacks._common import working_layout

log = logging.getLogger(__name__)

#: The benchmark's attacks: (attack, norm, steps); PGD's step is eps/30 (L∞) or eps/20 (L2) of the dataset's
#: standard budget (0.01 and 0.1 on MNIST), DeepFool's overshoot 0.02 over all classes.
BENCH_ATTACKS: dict[str, tuple[str, Norm, int]] = {
    "fgsm": ("fgsm", Norm.LINF, 1),
    "pgd": ("pgd", Norm.LINF, 40),
    "pgd-l2": ("pgd", Norm.L2, 40),
    "deepfool": ("deepfool", Norm.L2, 50),
    "deepfool-linf": ("deepfool", Norm.LINF, 50),
    "ddn": ("ddn", Norm.L2, 100),
}


def bench_spec(key: str, family: str) -> AttackSpec:
    """The spec of benchmark attack ``key`` on a dataset of ``family`` (``mnist``, ``cifar10``, ``imagenet``)."""
    attack, norm, steps = BENCH_ATTACKS[key]
    if attack in ("fgsm", "pgd"):
        eps = standard_eps(family, norm)
        step_size = None if attack == "fgsm" else eps / (30 if norm is Norm.LINF else 20)
        return AttackSpec(attack=attack, norm=norm, eps=eps, steps=steps, step_size=step_size)
    if attack == "deepfool":
        return AttackSpec(attack=attack, norm=norm, steps=steps, overshoot=0.02)
    return AttackSpec(attack=attack, norm=norm, steps=steps)


def runnable_libraries(spec: AttackSpec, libraries: list[str]) -> list[str]:
    """The libraries of ``libraries`` that have ``spec``'s attack (in that order)."""
    return [lib for lib in libraries if get_adapter(lib).unsupported_reason(spec) is None]


#: Consecutive passes per floor measurement of the minimal-norm attacks (FGSM and PGD: their own steps, so
#: that the floor and the attack are timed over windows of one length: on a machine whose speed drifts, the
#: best of short windows would catch quiet moments a long attack cannot).
FLOOR_PASSES = 10


def pass_seconds(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, passes: int, later: torch.Tensor | None = None
) -> tuple[float, float]:
    """Seconds per forward (with its graph) and per input-backward on the whole batch, in the faster of the
    default and the channels-last layout (the one with the smaller sum): ``passes`` of each run back to back,
    as an attack runs them, from the state an attack starts in (peak-memory counter reset, freed memory
    handed back), so that the floor pays what the attack pays for its passes and nothing else.

    The first pass runs on ``x`` (the clean images, where every attack starts), the others on ``later``
    (default ``x``): the adversarial images an attack returned, which stand for its later iterates. A pass's
    cost depends on its input: measured under ``ATEN_CPU_CAPABILITY=default`` (unvectorized elementwise
    kernels, whose branches follow the data), 40 passes of the MNIST CNN on PGD L∞ iterates took 7-10 % longer
    than on the clean digits, which are mostly zeros."""
    later = x if later is None else later
    forward, backward = math.inf, math.inf
    if x.dim() == 4:
        layouts = [
            (x.detach().clone(), later.detach().clone()),
            (working_layout(x.detach()), working_layout(later.detach())),
        ]
    else:
        layouts = [(x.detach().clone(), later.detach().clone())]
    for first, rest in layouts:
        reset_peak_memory(x.device)
        f = b = 0.0
        for i in range(passes):
            xg = (first if i == 0 else rest).detach().requires_grad_(True)
            synchronize(x.device)
            start = time.perf_counter()
            loss = F.cross_entropy(model(xg), y, reduction="sum")
            synchronize(x.device)
            middle = time.perf_counter()
            torch.autograd.grad(loss, xg)
            synchronize(x.device)
            f, b = f + middle - start, b + time.perf_counter() - middle
        if f + b < (forward + backward) * passes:
            forward, backward = f / passes, b / passes
    return forward, backward


def _read_hwm_kb() -> float:
    try:
        with open("/proc/self/status") as f:
            return next(float(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return math.nan


def reset_peak_memory(device: torch.device) -> float:
    """Reset the peak-memory counter; returns the current level in MB."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    gc.collect()
    try:  # hand freed heap memory back to the OS so that RSS is the live level again (glibc)
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _read_hwm_kb() / 1024
    except OSError:
        return math.nan


def peak_memory(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _read_hwm_kb() / 1024


#: An attack runs more than ``--repeats`` rounds until own (the first library when own is not run) has been
#: timed for this many seconds in all, up to :data:`MAX_ROUNDS`: the best of a few 0.2 s windows (FGSM on 500
#: digits) on a machine whose speed drifts by ±10-30 % put the same own FGSM at 0.99 and at 1.12 of its
#: floor in two runs of best of 3.
MIN_LEAD_SECONDS = 5.0
MAX_ROUNDS = 25


def benchmark(
    work: Workload, attacks: list[str], repeats: int, libraries: list[str], *, min_seconds: float = MIN_LEAD_SECONDS
) -> pd.DataFrame:
    """Time every (attack, library) on ``work`` in rounds, round-robin with the bare-pass floor and in a new
    random order each round; keep the best time of each (see the module docstring for the columns). Each
    attack runs ``repeats`` rounds, and more (up to :data:`MAX_ROUNDS`) while own has been timed for less
    than ``min_seconds`` in all."""
    device, n = work.x.device, len(work.x)
    was_training = work.model.training
    work.model.eval()
    rows = []
    try:
        pass_seconds(work.model, work.x, work.y, passes=1)  # warm-up: the kernels' first-call setup, for no one
        for key in attacks:
            spec = bench_spec(key, work.info.family)
            runnable = runnable_libraries(spec, libraries)
            best: dict[str, float] = {}
            info: dict[str, dict] = {}
            passes = (spec.steps or 1) if spec.attack in ("fgsm", "pgd") else FLOOR_PASSES
            floors: list[tuple[float, float]] = []
            lead = "own" if "own" in runnable else next(iter(runnable), None)
            lead_seconds, round_ = 0.0, 0
            while round_ < repeats or (0 < lead_seconds < min_seconds and round_ < MAX_ROUNDS):
                # The floor's later passes run on own's adversarial images (the first library's when own is not
                # run), in every round: one set of images per attack, whatever order the round ran in. Passes
                # on different libraries' images of one attack cost up to 15 % apart (ART's PGD L2 images were
                # the cheapest, MNIST CNN, AVX-512), so a floor on whichever library went first moved with it.
                # The floor is timed right after the run whose images it takes, so that own and its floor are
                # timed back to back: this machine's speed drifts from minute to minute, and a floor timed
                # after every other library could land in another minute than own (PGD L∞, MNIST CNN: own at
                # 0.98 and at 1.10 of a floor timed a round's length later, in two runs of the same code).
                returned = None
                for library in random.Random(f"{key}/{round_}").sample(runnable, len(runnable)):
                    before = reset_peak_memory(device)
                    r = run_attack(library, work.model, work.x, work.y, spec, num_classes=work.info.num_classes)
                    peak = peak_memory(device) - before
                    if not isinstance(r, Ran) or r.problems:
                        log.warning("%s %s: %s %s", library, key, r.status, r.reason)
                        continue
                    best[library] = min(best.get(library, math.inf), r.seconds)
                    lead_seconds += r.seconds if library == lead else 0.0
                    old_peak = info[library]["peak_mb"] if library in info else math.inf
                    info[library] = {
                        "version": r.version,
                        "success_rate": float(r.success[r.clean_correct].float().mean()),
                        "fwd_per_image": r.forward_images / n,
                        "bwd_per_image": r.backward_images / n,
                        "peak_mb": min(peak, old_peak),
                    }
                    if library == "own" or (returned is None and "own" not in runnable):
                        returned = r.x_adv.to(device)
                        floors.append(pass_seconds(work.model, work.x, work.y, passes, later=returned))
                if returned is None:  # own failed in this round: the floor on the clean images alone
                    floors.append(pass_seconds(work.model, work.x, work.y, passes))
                round_ += 1
            forward, backward = min(floors, key=sum)  # the best round's pair, not the best of each from two rounds
            for library, seconds in best.items():
                row = info[library]
                floor = row["fwd_per_image"] * forward + row["bwd_per_image"] * backward
                rows.append(
                    {
                        "attack": key,
                        "library": library,
                        "version": row["version"],
                        "n": n,
                        "success_rate": row["success_rate"],
                        "rounds": round_,
                        "seconds": seconds,
                        "images_per_s": n / seconds,
                        "own_speedup": seconds / best["own"] if "own" in best else math.nan,
                        "fwd_per_image": row["fwd_per_image"],
                        "bwd_per_image": row["bwd_per_image"],
                        "floor_seconds": floor,
                        "vs_floor": seconds / floor,
                        "peak_mb": row["peak_mb"],
                    }
                )
    finally:
        work.model.train(was_training)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    attack_order = {key: i for i, key in enumerate(BENCH_ATTACKS)}
    library_order = {library: i for i, library in enumerate(LIBRARIES)}
    return table.sort_values(
        ["attack", "library"],
        key=lambda c: c.map(library_order if c.name == "library" else attack_order),
        kind="stable",
    ).reset_index(drop=True)


#: The libraries DeepFool L2 is held to 5× (the issue's "fastest of torchattacks, foolbox and ART").
DEEPFOOL_RIVALS = ("torchattacks", "foolbox", "art")


def target_lines(table: pd.DataFrame) -> list[str]:
    """The speed targets, read off ``table``: own ≥ 1.0× every library on every attack; DeepFool L2 ≥ 5× the
    fastest of torchattacks, foolbox and ART; own FGSM and PGD within 1.10× their floor; own's peak memory
    within 10 % of the leanest library's. Each line says met or NOT met, with the figure."""
    lines = []
    if table.empty or "own" not in set(table.library):
        return ["no own rows: no targets to check"]
    others = table[table.library != "own"]
    if not others.empty:
        worst = others.loc[others.own_speedup.idxmin()]
        ok = bool((others.own_speedup >= 1.0).all())
        lines.append(
            f"own >= 1.0x every library on every attack: {'met' if ok else 'NOT met'} "
            f"(lowest: {worst.own_speedup:.2f}x vs {worst.library} on {worst.attack})"
        )
    rivals = table[(table.attack == "deepfool") & table.library.isin(DEEPFOOL_RIVALS)]
    if not rivals.empty:
        fastest = rivals.loc[rivals.own_speedup.idxmin()]
        lines.append(
            f"DeepFool L2 >= 5x the fastest of {', '.join(DEEPFOOL_RIVALS)}: "
            f"{'met' if fastest.own_speedup >= 5 else 'NOT met'} ({fastest.own_speedup:.2f}x vs {fastest.library})"
        )
    own = table[table.library == "own"].set_index("attack")
    for attack in (a for a in ("fgsm", "pgd", "pgd-l2") if a in own.index):
        ratio = own.loc[attack, "vs_floor"]
        lines.append(f"own {attack} vs_floor <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'} ({ratio:.2f})")
    for attack, group in table.groupby("attack", sort=False):
        if attack not in own.index or len(group) < 2:
            continue
        leanest = group[group.library != "own"].peak_mb.min()
        ratio = own.loc[attack, "peak_mb"] / leanest if leanest > 0 else math.nan
        lines.append(
            f"own {attack} peak memory within 10 % of the leanest library: "
            f"{'met' if ratio <= 1.10 else 'NOT met'} ({own.loc[attack, 'peak_mb']:.0f} MB vs {leanest:.0f} MB)"
        )
    return lines


def machine_line(device: torch.device) -> str:
    """The machine as the benchmark saw it: CPU model and ATen capability, threads, GPU, torch."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = (
        f"{cpu} ({platform.machine()}, ATen CPU capability {torch.backends.cpu.get_cpu_capability()}), "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )
    if device.type == "cuda":
        text = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}); host: {text}"
    return text


def replace_peaks_by_live_ones(
    table: pd.DataFrame,
    request: BenchRequest,
    attacks: list[str],
    libraries: list[str],
    device: torch.device,
    timeout: float | None = None,
) -> str:
    """On a CPU with glibc, ``table.peak_mb`` becomes the live peak measured in a separate process
    (:mod:`experiments.bench.memory`), given ``timeout`` seconds; returns the line that says how ``peak_mb``
    was measured (this process's peaks stay when the child fails or runs out of time)."""
    if table.empty or not memory.applies(device):
        kind = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak resident memory in this process"
        return f"peak_mb: {kind}, the least of the rounds"
    try:
        peaks = memory.live_peaks(request, attacks, libraries, timeout=timeout)
    except (subprocess.SubprocessError, OSError, ValueError) as exc:
        log.warning("the separate memory measurement failed (%s); peak_mb is this process's", exc)
        return f"peak_mb: peak resident memory in this process, the least of the rounds (the separate measurement failed: {exc})"
    table["peak_mb"] = [peaks.get((a, lib), math.nan) for a, lib in zip(table.attack, table.library)]
    return (
        f"peak_mb: live peak, one run of each in a separate process with glibc's mmap threshold pinned at "
        f"{memory.MMAP_THRESHOLD // 1024} KiB (see advbridge.experiments.bench.memory)"
    )


def cli_bench(request: BenchRequest) -> Outcome:
    """``cli.py bench``: check every name, load (or train) the model, benchmark, write ``<out>.csv``/``.md``."""
    from advbridge.experiments.compare import results_prefix
    from advbridge.experiments.options import workload_of

    attacks = [check_name("bench attack", a.strip(), BENCH_ATTACKS) for a in request.attacks.split(",") if a.strip()]
    if request.libraries == "all":
        libraries = list(LIBRARIES)
    else:
        libraries = [check_name("library", name.strip(), LIBRARIES) for name in request.libraries.split(",") if name]
    if not attacks or not libraries:  # (--repeats and --n: checked by the request)
        raise InvalidParameterError(
            f"expected --attacks and --libraries not empty, got --attacks {request.attacks!r}, --libraries "
            f"{request.libraries!r}"
        )
    name = f"bench-{request.dataset}-{Path(str(request.model or 'default')).name}" + (
        f"-{request.image_size}px" if request.image_size else ""
    )
    out = OutputPrefix.parse(request.out or results_prefix(name), default_name="bench")
    out.check_writable()
    work = workload_of(request)
    model_name = work.context["model"]
    started = time.perf_counter()
    table = benchmark(work, attacks, request.repeats, libraries)
    # the memory child runs each attack once where the rounds ran each one at least --repeats times: given as
    # long as the rounds took (at least 2 minutes, for its start and warm-up), it adds at most that
    timeout = max(120.0, time.perf_counter() - started)
    memory_line = replace_peaks_by_live_ones(table, request, attacks, libraries, work.x.device, timeout=timeout)
    versions = ", ".join(f"{lib} {v}" for lib, v in dict(zip(table.library, table.version)).items())
    header = (
        f"bench: {work.info.name}, {model_name}, {len(work.x)} images of {tuple(work.x.shape[1:])}, "
        f"best of {request.repeats} rounds or more (column rounds; libraries in a new random order each round)\n"
        f"machine: {machine_line(work.x.device)}\nversions: {versions}\n{memory_line}"
    )
    targets = target_lines(table)
    shown = table.drop(columns=["version"]) if not table.empty else table
    csv, markdown = out.files([".csv", ".md"])
    atomic_write_text(csv, table.to_csv(index=False))
    atomic_write_text(
        markdown,
        f"{header}\n\n{shown.to_markdown(index=False, floatfmt='.3g')}\n\n" + "".join(f"- {t}\n" for t in targets),
    )
    lines = [header, shown.to_string(index=False, float_format=lambda v: f"{v:.3g}"), *targets]
    return Outcome(lines=lines, paths=[csv, markdown])

"""Benchmark: own attacks vs every library, and vs the plain forward+backward floor.

    python -m advbridge.experiments.bench.attacks [--n 500] [--attacks fgsm,pgd] [--repeats 3] [--out results/benchmark]

For each attack it runs every supported library on the same model and images (through the runner,
so every library pays the same hook overhead) and prints, measured in this one run:

- ``images_per_s`` and ``own_speedup`` = own images/s ÷ the library's images/s (> 1: own is faster);
- ``floor_seconds``: the time the passes that *own* needed would take as plain passes on the whole
  batch: (forward passes per image) × F + (backward passes per image) × B, where F is one forward and
  B one backward to the input of all n images, measured in this run (each the faster of the default
  and the channels-last layout); ``vs_floor`` = seconds ÷ floor
  (1.0 = no overhead beyond the gradients themselves). For FGSM/PGD the passes are one forward and one
  backward per step; DeepFool needs one forward and one backward per candidate class per step on the
  samples still running, DDN one of each per step;
- ``peak_mb``: peak resident memory above the level before the run (Linux: VmHWM after ``malloc_trim``
  and resetting it through /proc/self/clear_refs; CUDA: ``max_memory_allocated``).

Times are the best of ``--repeats`` rounds; each round runs the floor and every library once, in a
new random order. Results go to ``<out>.csv`` / ``<out>.md``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import logging
import math
import platform
import random
import time

import pandas as pd
import torch
import torch.nn.functional as F

from advbridge.bridge.adapters import LIBRARIES, get_adapter
from advbridge.bridge.errors import check_name
from advbridge.bridge.runner import run_attack
from advbridge.bridge.spec import AttackSpec
from advbridge.experiments.bench.report import output_prefix, print_and_save, user_errors_exit_2
from advbridge.experiments.workload import load_workload
from advbridge.own_attacks._common import working_layout

log = logging.getLogger(__name__)

BENCH_SPECS = {
    "fgsm": AttackSpec(attack="fgsm", eps=0.3),
    "pgd": AttackSpec(attack="pgd", norm="Linf", eps=0.3, steps=40, step_size=0.01),
    "pgd-l2": AttackSpec(attack="pgd", norm="L2", eps=2.0, steps=40, step_size=0.1),
    "deepfool": AttackSpec(attack="deepfool", norm="L2", steps=50, overshoot=0.02),
    "deepfool-linf": AttackSpec(attack="deepfool", norm="Linf", steps=50, overshoot=0.02),
    "ddn": AttackSpec(attack="ddn", steps=100),
}


def pass_seconds(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Best times of one forward (with graph) and of one input-backward on the whole batch, each the
    faster of the default and the channels-last layout (the layout own's minimal-norm attacks use)."""
    forward, backward = math.inf, math.inf
    layouts = (x.detach().clone(), working_layout(x.detach())) if x.dim() == 4 else (x.detach().clone(),)
    for _ in range(repeats + 1):  # the first round also warms up
        for batch in layouts:
            xg = batch.requires_grad_(True)
            start = time.perf_counter()
            loss = F.cross_entropy(model(xg), y, reduction="sum")
            middle = time.perf_counter()
            torch.autograd.grad(loss, xg)
            end = time.perf_counter()
            forward, backward = min(forward, middle - start), min(backward, end - middle)
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


def benchmark(attacks: list[str], n: int, repeats: int, libraries: list[str]) -> pd.DataFrame:
    """Time every (attack, library) ``repeats`` times, round-robin with the plain-pass floor and in a
    new random order each round, so that a change in machine load during the run hits every library
    alike; keep the best time of each."""
    work = load_workload("mnist-5k", n=n, seed=0, progress=False)
    device = work.x.device
    rows = []
    for key in attacks:
        spec = BENCH_SPECS[key]
        runnable = [lib for lib in libraries if get_adapter(lib).unsupported_reason(spec) is None]
        best: dict[str, float] = {}
        info: dict[str, tuple] = {}
        forward = backward = math.inf
        for round_ in range(repeats):
            f, b = pass_seconds(work.model, work.x, work.y, repeats=1)
            forward, backward = min(forward, f), min(backward, b)
            for library in random.Random(round_).sample(runnable, len(runnable)):
                before = reset_peak_memory(device)
                r = run_attack(library, work.model, work.x, work.y, spec, num_classes=work.info.num_classes)
                peak = peak_memory(device) - before
                if r.status != "ok":
                    log.warning("%s %s: %s %s", library, key, r.status, r.reason)
                    continue
                best[library] = min(best.get(library, math.inf), r.seconds)
                success = float(r.success[r.clean_correct].float().mean())
                old_peak = info[library][3] if library in info else 0.0
                info[library] = (r.version, r.forward_images / n, r.backward_images / n, max(peak, old_peak), success)
        if "own" not in best:
            continue
        _, own_fwd, own_bwd, _, _ = info["own"]
        floor = own_fwd * forward + own_bwd * backward
        for library, seconds in best.items():
            version, fwd, bwd, peak, success = info[library]
            rows.append(
                {
                    "attack": key,
                    "library": library,
                    "version": version,
                    "n": n,
                    "success": success,
                    "seconds": seconds,
                    "images_per_s": n / seconds,
                    "own_speedup": seconds / best["own"],
                    "forward_per_image": fwd,
                    "backward_per_image": bwd,
                    "floor_seconds": floor,
                    "vs_floor": seconds / floor,
                    "peak_mb": peak,
                }
            )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    order = {library: i for i, library in enumerate(LIBRARIES)}
    return table.sort_values(
        ["attack", "library"], key=lambda c: c.map(order) if c.name == "library" else c, kind="stable"
    )


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--attacks", default="fgsm,pgd,deepfool,ddn", help=f"any of {', '.join(BENCH_SPECS)}")
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="results/benchmark")
    args = parser.parse_args(argv)
    out = output_prefix(args.out, "benchmark")
    logging.basicConfig(level=logging.WARNING)
    attacks = [check_name("benchmark attack", a, BENCH_SPECS) for a in args.attacks.split(",") if a]
    libraries = [check_name("library", name, LIBRARIES) for name in args.libraries.split(",") if name]
    table = benchmark(attacks, args.n, args.repeats, libraries)
    device = f"CUDA {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "CPU"
    machine = f"{device}, {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    header = f"benchmark on mnist-5k, advbridge_mnist_cnn, {args.n} images, {machine}; best of {args.repeats}"
    print_and_save(table, header, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

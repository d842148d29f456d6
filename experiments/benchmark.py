"""Benchmark: own attacks vs every library, and vs the plain forward+backward floor.

    python -m experiments.benchmark [--n 500] [--attacks fgsm,pgd] [--repeats 3] [--out results/benchmark]

For each attack it runs every supported library on the same model and images (through the runner,
so every library pays the same hook overhead) and prints, measured in this one run:

- ``images_per_s`` and ``own_speedup`` = own images/s ÷ the library's images/s (> 1: own is faster);
- ``floor_seconds``: the time of the same number of plain passes — one forward and one backward to the
  input per gradient the attack needs — and ``vs_floor`` = own seconds ÷ floor seconds (1.0 = no
  overhead beyond the gradients themselves).

Times are the best of ``--repeats`` runs. Results go to ``<out>.csv`` / ``<out>.md``.
"""

from __future__ import annotations

import argparse
import logging
import math
import platform
import time

import pandas as pd
import torch
import torch.nn.functional as F

from bridge.adapters import LIBRARIES, get_adapter
from bridge.io import atomic_write_text
from bridge.runner import run_attack
from bridge.spec import AttackSpec
from experiments.workload import load_workload

log = logging.getLogger(__name__)

BENCH_SPECS = {
    "fgsm": AttackSpec(attack="fgsm", eps=0.3),
    "pgd": AttackSpec(attack="pgd", norm="Linf", eps=0.3, steps=40, step_size=0.01),
    "pgd-l2": AttackSpec(attack="pgd", norm="L2", eps=2.0, steps=40, step_size=0.1),
}


def floor_seconds(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, passes: int, repeats: int) -> float:
    """Best time of ``passes`` forward + input-backward passes on the whole batch."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(passes):
            xg = x.detach().requires_grad_(True)
            loss = F.cross_entropy(model(xg), y, reduction="sum")
            torch.autograd.grad(loss, xg)
        best = min(best, time.perf_counter() - start)
    return best


def gradient_passes(spec: AttackSpec) -> int:
    """Gradients the in-house attack needs: one per step."""
    return spec.steps


def benchmark(attacks: list[str], n: int, repeats: int, libraries: list[str]) -> pd.DataFrame:
    work = load_workload("mnist-5k", n=n, seed=0, device="cpu", progress=False)
    rows = []
    for key in attacks:
        spec = BENCH_SPECS[key]
        best: dict[str, float] = {}
        info: dict[str, tuple[str, int, int]] = {}
        for library in libraries:
            if get_adapter(library).unsupported_reason(spec) is not None:
                continue
            for _ in range(repeats):
                r = run_attack(library, work.model, work.x, work.y, spec, num_classes=work.info.num_classes)
                if r.status != "ok":
                    log.warning("%s %s: %s %s", library, key, r.status, r.reason)
                    break
                best[library] = min(best.get(library, math.inf), r.seconds)
                info[library] = (r.version, r.forward_images // n, r.backward_images // n)
        floor = floor_seconds(work.model, work.x, work.y, gradient_passes(spec), repeats)
        own = best.get("own", math.nan)
        for library, seconds in best.items():
            version, fwd, bwd = info[library]
            rows.append(
                {
                    "attack": key,
                    "library": library,
                    "version": version,
                    "n": n,
                    "seconds": seconds,
                    "images_per_s": n / seconds,
                    "own_speedup": seconds / own,
                    "forward_per_image": fwd,
                    "backward_per_image": bwd,
                    "floor_seconds": floor,
                    "vs_floor": seconds / floor,
                }
            )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--attacks", default="fgsm,pgd")
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="results/benchmark")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    attacks = [a for a in args.attacks.split(",") if a]
    table = benchmark(attacks, args.n, args.repeats, args.libraries.split(","))
    machine = (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(f"benchmark on mnist-5k, advbridge_mnist_cnn, {args.n} images, CPU ({machine}); best of {args.repeats}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    atomic_write_text(f"{args.out}.csv", table.to_csv(index=False))
    atomic_write_text(f"{args.out}.md", f"{machine}\n\n" + table.to_markdown(index=False, floatfmt=".3g") + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

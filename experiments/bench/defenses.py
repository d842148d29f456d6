"""Benchmark: own feature squeezers (:mod:`defenses.preprocessor.squeezing`) vs ART's, on CPU.

    python -m advbridge.experiments.bench.defenses [--n 1000] [--squeezers bit-depth,median] [--repeats 5]
        [--images auto|cifar10|random] [--data-root DIR] [--threads T] [--out results/benchmark-defenses]

What it measures: the wall time of one call of each squeezer on the whole batch of ``--n`` CIFAR-sized
float32 images (N, 3, 32, 32) in [0, 1], on the CPU:

- bit depth, bits 1, 5, 8: own ``BitDepth(bits)`` vs ART ``FeatureSqueezing(clip_values=(0, 1), bit_depth=bits)``;
- median, k = 2, 3, 4, 5: own ``MedianFilter(k)`` vs ART ``SpatialSmoothing(window_size=k, channels_first=True)``
  (scipy's ``median_filter``).

Only the call is timed: own ``squeezer(x)`` on the tensor (no graph: the input does not require grad),
ART ``defence(x.numpy())`` on the same memory (a view, no copy); ART's float64 result (numpy 2 promotes
bit depth) is cast back to float32 after the clock stops, for the bitwise check. Both get one untimed
warm-up call. Times are the best of ``--repeats`` rounds, the two in a new seeded random order each
round, so that a change in machine load hits both alike. torch runs with the threads it has
(``--threads`` to set them), named in the header with the machine and the image source; ART/scipy is
single-threaded.

Columns: ``seconds`` (best), ``images_per_s`` = n ÷ seconds, ``own_speedup`` = ART seconds ÷ own seconds
of the same squeezer and parameter (> 1: own is faster; 1.0 on own rows), ``bitwise_equal_to_own``
(ART rows: ``torch.equal`` of the two outputs; empty on own rows). Results go to ``<out>.csv`` / ``<out>.md``.

Targets: own median ≥ 3× ART (own_speedup ≥ 3) for k = 2 and 3, and own bit depth ≥ 3× ART; the run
prints after the table which of them it met.

Images: the exact CIFAR-10 test images (uint8 pixels of the official pickle) from
``<data root>/cifar10_exact_partial/cifar10_exact_partial.npz`` (846 of them, cycled when ``--n`` is
larger), the data root being ``--data-root``, else ``$ADVBRIDGE_SHARED_DATA``, else ``../shared/data``
beside the repo; with ``--images auto`` (the default) seeded random 8-bit-valued images of the same shape
when that file is absent, with ``--images random`` always.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from advbridge.bridge.errors import DataNotFoundError, InvalidParameterError, check_name
from advbridge.defenses.preprocessor.squeezing import BitDepth, MedianFilter, Squeezer
from advbridge.experiments.bench.report import output_prefix, print_and_save, user_errors_exit_2

#: The parameters timed for each squeezer: bits for bit depth, the window size k for the median.
SQUEEZER_PARAMS: dict[str, tuple[int, ...]] = {"bit-depth": (1, 5, 8), "median": (2, 3, 4, 5)}
#: own_speedup the own squeezers aim at: (squeezer, params it applies to, target).
TARGETS = (("bit-depth", (1, 5, 8), 3.0), ("median", (2, 3), 3.0))
DEFENSE_LIBRARIES = ("own", "art")
CIFAR_FILE = Path("cifar10_exact_partial") / "cifar10_exact_partial.npz"
IMAGE_SOURCES = ("auto", "cifar10", "random")


def default_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """``data_root``, else ``$ADVBRIDGE_SHARED_DATA``, else ``../shared/data`` beside the repo."""
    if data_root is not None:
        return Path(data_root).expanduser()
    env = os.environ.get("ADVBRIDGE_SHARED_DATA")
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def load_images(
    n: int, images: str = "auto", data_root: str | os.PathLike | None = None, seed: int = 0
) -> tuple[Tensor, str]:
    """``n`` float32 images (N, 3, 32, 32) in [0, 1] on the CPU and a phrase naming their source."""
    path = default_data_root(data_root) / CIFAR_FILE
    if images == "cifar10" and not path.is_file():
        raise DataNotFoundError(f"exact CIFAR-10 images not found at {path}; pass --data-root DIR or --images random")
    if images != "random" and path.is_file():
        pixels = np.load(path)["test_images"]  # uint8 (N, 32, 32, 3)
        distinct = len(pixels)
        if n > distinct:
            pixels = np.resize(pixels, (n, *pixels.shape[1:]))  # cycles through the images
        x = torch.from_numpy(np.ascontiguousarray(pixels[:n])).permute(0, 3, 1, 2).float().div(255).contiguous()
        cycled = f", {distinct} distinct, cycled" if n > distinct else ""
        return x, f"exact CIFAR-10 test images ({path}{cycled})"
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=generator, dtype=torch.uint8).float().div(255)
    why = "" if images == "random" else f"; no exact CIFAR-10 at {path}"
    return x, f"seeded random 8-bit images (seed {seed}{why})"


def implementations(squeezer: str, param: int) -> dict[str, Callable[[Tensor, np.ndarray], object]]:
    """The timed call of each library: ``f(x, x_numpy)``, both views of one batch."""
    from art.defences.preprocessor import FeatureSqueezing, SpatialSmoothing

    own: Squeezer
    if squeezer == "bit-depth":
        own, art = BitDepth(param), FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=param)
    else:
        own, art = MedianFilter(param), SpatialSmoothing(window_size=param, channels_first=True)
    return {"own": lambda x, xn: own(x), "art": lambda x, xn: art(xn)[0]}


def _as_tensor(out: object) -> Tensor:
    """An output as a float32 tensor: ART's numpy (float64 under numpy 2 for bit depth) cast back."""
    if isinstance(out, Tensor):
        return out
    return torch.from_numpy(np.asarray(out).astype(np.float32, copy=False))


def benchmark(x: Tensor, squeezers: list[str], repeats: int, seed: int = 0) -> pd.DataFrame:
    """Time own and ART on ``x`` for every parameter of every squeezer: one warm-up call each, then
    ``repeats`` rounds in a new seeded random order; keep the best time of each."""
    x = x.detach().contiguous()
    xn = x.numpy()
    n = len(x)
    rows = []
    for squeezer in squeezers:
        for param in SQUEEZER_PARAMS[squeezer]:
            calls = implementations(squeezer, param)
            with torch.no_grad():
                outputs = {library: _as_tensor(call(x, xn)) for library, call in calls.items()}  # warm-up
                best = dict.fromkeys(calls, math.inf)
                for round_ in range(repeats):
                    for library in random.Random(seed + round_).sample(list(calls), len(calls)):
                        start = time.perf_counter()
                        calls[library](x, xn)
                        best[library] = min(best[library], time.perf_counter() - start)
            for library in DEFENSE_LIBRARIES:
                equal = None if library == "own" else torch.equal(outputs[library], outputs["own"])
                rows.append(
                    {
                        "squeezer": squeezer,
                        "param": param,
                        "library": library,
                        "n": n,
                        "seconds": best[library],
                        "images_per_s": n / best[library],
                        "own_speedup": best[library] / best["own"],
                        "bitwise_equal_to_own": equal,
                    }
                )
    table = pd.DataFrame(rows)
    if not table.empty:
        table["bitwise_equal_to_own"] = table["bitwise_equal_to_own"].astype("boolean")
    return table


def target_lines(table: pd.DataFrame) -> list[str]:
    """One line per target: the measured own_speedup and whether it is met."""
    lines = []
    art = table[table["library"] == "art"].set_index(["squeezer", "param"])["own_speedup"] if len(table) else None
    for squeezer, params, target in TARGETS:
        for param in params:
            if art is None or (squeezer, param) not in art.index:
                continue
            speedup = float(art.loc[(squeezer, param)])
            verdict = "met" if speedup >= target else "NOT met"
            lines.append(f"target own ≥ {target:g}× ART, {squeezer} {param}: {speedup:.2f}× ({verdict})")
    return lines


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise InvalidParameterError(f"expected --{name} ≥ 1, got {value}")
    return value


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="images in the batch (default 1000)")
    parser.add_argument("--squeezers", default=",".join(SQUEEZER_PARAMS), help=f"any of {', '.join(SQUEEZER_PARAMS)}")
    parser.add_argument("--repeats", type=int, default=5, help="rounds; the best time of each is kept (default 5)")
    parser.add_argument("--images", default="auto", choices=IMAGE_SOURCES, help="image source (default auto)")
    parser.add_argument(
        "--data-root", default=None, help="shared data folder (default $ADVBRIDGE_SHARED_DATA, else ../shared/data)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: as they are)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random images and of the order (default 0)")
    parser.add_argument("--out", default="results/benchmark-defenses")
    args = parser.parse_args(argv)
    _positive("n", args.n)
    _positive("repeats", args.repeats)
    squeezers = [check_name("squeezer", s, SQUEEZER_PARAMS) for s in args.squeezers.split(",") if s]
    if not squeezers:
        raise InvalidParameterError(f"expected --squeezers from {', '.join(SQUEEZER_PARAMS)}, got none")
    if args.threads is not None:
        torch.set_num_threads(_positive("threads", args.threads))
    out = output_prefix(args.out, "benchmark-defenses")
    x, source = load_images(args.n, args.images, args.data_root, seed=args.seed)
    table = benchmark(x, squeezers, args.repeats, seed=args.seed)

    import art
    import scipy

    machine = (
        f"{platform.system()} {platform.machine()} ({platform.processor() or 'cpu'}), {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, ART {art.__version__}, "
        f"numpy {np.__version__}, scipy {scipy.__version__}"
    )
    header = f"squeezer benchmark on CPU, {args.n} images (3×32×32) of {source}; {machine}; best of {args.repeats}"
    print_and_save(table, header, out)
    for line in target_lines(table):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

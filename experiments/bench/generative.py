"""Benchmark: labelling by the closest class-conditional reconstruction vs the floor of its decoder passes.

    python -m advbridge.experiments.bench.generative [--dataset mnist] [--data-root ../shared/data] [--n 1000]
        [--refine-steps 0,5] [--latent-dim 16] [--epochs 5] [--repeats 3] [--threads T]
        [--out results/benchmark-generative]

:class:`~defenses.generative.ReconstructionLabeller` on ``--n`` test images with K classes, without and
with latent refinement (``R`` = ``--refine-steps``), against the floor: the decoder passes it needs, as one
batch of N·K codes each, in bare torch on the same generator:

- ``floor_forward``: R + 1 forward passes of the decoder on N·K codes: the issue's floor ("the same number
  of decoder passes done as one batch"); ``vs_floor`` = labelling ÷ it (target ≤ 1.5);
- ``floor_backward``: with refinement, each of the R steps also needs the decoder's backward pass to the
  codes: R forward + backward passes and one forward; ``vs_floor_backward`` = labelling ÷ it (1.0 = no
  overhead beyond the passes it cannot avoid).

The labelling time includes encoding (the encoder's convolutions once per sample, not per class), the
errors and the arg-min. Generator: a CVAE of ``--latent-dim`` trained (or taken from the model cache) on
the dataset for ``--epochs``; its labelling accuracy on the images is reported too. Best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import pandas as pd
import torch

from advbridge.bridge.errors import InvalidParameterError
from advbridge.defenses.generative import GeneratorConfig, ReconstructionLabeller, get_or_train_generator
from advbridge.experiments.bench.report import output_prefix, print_and_save, user_errors_exit_2

TARGET = 1.5


def _best(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def _row(generator, x: torch.Tensor, y: torch.Tensor, steps: int, repeats: int) -> dict:
    n, k = len(x), generator.num_classes
    classes = torch.arange(k).repeat(n)
    with torch.no_grad():
        z, _ = generator.encode_every_class(x)
    labeller = ReconstructionLabeller(generator, refine_steps=steps)

    def label():
        with torch.no_grad():
            return labeller(x).argmax(1)

    def forward_floor():
        with torch.no_grad():
            for _ in range(steps + 1):
                generator.decode(z, classes)

    def backward_floor():
        for _ in range(steps):
            zr = z.detach().requires_grad_(True)
            torch.autograd.grad(generator.decode(zr, classes).sum(), zr)
        with torch.no_grad():
            generator.decode(z, classes)

    label()  # warm-up: kernels for these shapes
    seconds = _best(label, repeats)
    forward = _best(forward_floor, repeats)
    backward = _best(backward_floor, repeats) if steps else forward
    return {
        "refine_steps": steps,
        "images": n,
        "codes_per_pass": n * k,
        "seconds": seconds,
        "images_per_s": n / seconds,
        "floor_forward": forward,
        "vs_floor": seconds / forward,
        "floor_backward": backward,
        "vs_floor_backward": seconds / backward,
        "accuracy": float((label() == y).double().mean()),
    }


def benchmark(generator, x: torch.Tensor, y: torch.Tensor, refine_steps: list[int], repeats: int) -> pd.DataFrame:
    """One row per number of refinement steps: labelling time, the two floors, their ratios, accuracy."""
    return pd.DataFrame([_row(generator, x, y, steps, repeats) for steps in refine_steps])


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--n", type=int, default=1000, help="test images to label")
    parser.add_argument("--refine-steps", default="0,5", help="comma-separated refinement steps to time")
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=5, help="the CVAE's training epochs (cached)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="results/benchmark-generative")
    args = parser.parse_args(argv)
    for name in ("n", "repeats"):
        if getattr(args, name) < 1:
            raise InvalidParameterError(f"expected --{name} >= 1, got {getattr(args, name)}")
    try:
        steps = [int(s) for s in args.refine_steps.split(",") if s.strip()]
    except ValueError:
        steps = [-1]
    if not steps or min(steps) < 0:
        raise InvalidParameterError(f"expected --refine-steps as integers >= 0, e.g. 0,5, got {args.refine_steps!r}")
    out = output_prefix(args.out, "benchmark-generative")
    if args.threads:
        torch.set_num_threads(args.threads)
    from advbridge.zoo.datasets import load_tensors

    cfg = GeneratorConfig(
        dataset=args.dataset, generator="cvae", latent_dim=args.latent_dim, epochs=args.epochs, data_root=args.data_root
    )
    generator, card = get_or_train_generator(cfg, progress=False)
    x, y = load_tensors(args.dataset, "test", n=args.n, seed=0, data_root=args.data_root)
    table = benchmark(generator, x, y, steps, args.repeats)
    header = (
        f"labelling {args.n} {args.dataset} test images by the closest of K={generator.num_classes} class-conditional "
        f"reconstructions (CVAE latent {args.latent_dim}, {card['epochs_run']} epochs, {card['train_samples']} "
        f"training images); best of {args.repeats}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads"
    )
    print_and_save(table, header, out)
    for row in table.itertuples():
        ratio, floor = (
            (row.vs_floor, "forward") if row.refine_steps == 0 else (row.vs_floor_backward, "forward+backward")
        )
        met = "met" if ratio <= TARGET else "NOT met"
        print(
            f"{row.refine_steps} refine steps: {ratio:.2f}× the {floor} decoder floor (target ≤ {TARGET:g}: {met}); "
            f"{row.vs_floor:.2f}× the forward-only floor"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Measured agreement of own PGD-L2, DeepFool and DDN with the reference libraries, on real MNIST digits.

    python -m advbridge.experiments.bench.agreement [--n 64] [--checkpoint tests/fixtures/mnist_cnn] [--out results/agreement]

Prints and writes (``<out>.csv`` / ``<out>.md``) the numbers that the README's agreement table quotes
for ``advbridge_mnist_cnn`` (with ``--checkpoint tests/fixtures/mnist_cnn``: the weights the test suite
attacks, the same on every machine); ``tests/agreement/`` asserts bounds on the same comparisons. The
header names the CPU capability and thread count: run it under ``ATEN_CPU_CAPABILITY=default|avx2|avx512``
and ``OMP_NUM_THREADS=1`` to see what other machines see. Each row compares own with one library on the
samples both attacked successfully (clean-correct for untargeted attacks; every sample for PGD) and reports:

- ``max_abs_diff``: the largest pixel difference between the two adversarial images;
- ``frac_le_1e-5``: the fraction of those samples whose images agree within 1e-5 in every pixel;
- ``max_l2_rel`` / ``max_linf_rel``: the largest relative difference of the per-sample norms;
- ``median_l2_ratio``: median own L2 ÷ median reference L2;
- ``success``: own DeepFool's success rate on the clean-correct digits (rows of library "own");
- ``success_flags_equal``: the share of samples both call fooled or both not (PGD rows).

The own options that reproduce a library's convention (``overshoot_mode``, ``source``, ``min_step``)
are not part of :class:`~bridge.spec.AttackSpec`, so those rows call :mod:`own_attacks` directly, once
in own's default channels-last layout and once in the default layout the references run in
(``own_layout``): the second shows what is left when both do the same arithmetic.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from typing import NamedTuple

import pandas as pd
import torch
from torch import Tensor, nn

from advbridge.bridge.adapters import Adapter
from advbridge.bridge.adapters.own import OwnAdapter
from advbridge.bridge.provenance import git_revision
from advbridge.bridge.runner import Ran, predict, run_attack
from advbridge.bridge.spec import AttackSpec, Norm
from advbridge.experiments.bench.report import output_prefix, print_and_save, user_errors_exit_2
from advbridge.experiments.workload import load_workload
from advbridge.own_attacks import ddn, deepfool, pgd

DDN = AttackSpec(attack="ddn", norm=Norm.L2, steps=100)
#: own's working layout (``channels_last`` argument): the default, and the references' arithmetic
LAYOUTS = {"channels-last": True, "default": False}


def smooth_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with ReLU → Softplus(β=5) and max → average pooling: differentiable
    everywhere, so that ulp-level differences cannot switch a ReLU or a pooling winner."""
    smooth = copy.deepcopy(model).eval()
    for module in list(smooth.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(module, name, nn.Softplus(beta=5.0))
            elif isinstance(child, nn.MaxPool2d):
                setattr(module, name, nn.AvgPool2d(child.kernel_size, child.stride))
    return smooth


def _norms(x_adv: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    delta = (x_adv - x).flatten(1).double()
    return delta.norm(dim=1), delta.abs().amax(dim=1)


def compare_images(x: Tensor, own: Tensor, ref: Tensor, mask: Tensor) -> dict[str, float]:
    """The agreement columns for the samples in ``mask`` (see the module docstring)."""
    own_l2, own_linf = _norms(own[mask], x[mask])
    ref_l2, ref_linf = _norms(ref[mask], x[mask])
    diff = (own[mask] - ref[mask]).flatten(1).abs().amax(dim=1)
    return {
        "compared": int(mask.sum()),
        "max_abs_diff": float(diff.max()),
        "frac_le_1e-5": float((diff <= 1e-5).double().mean()),
        "max_l2_rel": float((own_l2 / ref_l2 - 1).abs().max()),
        "max_linf_rel": float((own_linf / ref_linf - 1).abs().max()),
        "median_l2_ratio": float(own_l2.median() / ref_l2.median()),
    }


class Reference(NamedTuple):
    """What the comparisons use of a library's ok run."""

    x_adv: Tensor
    success: Tensor


def _reference(library: str | Adapter, model: nn.Module, x: Tensor, labels: Tensor, spec: AttackSpec) -> Reference:
    result = run_attack(library, model, x, labels, spec, num_classes=10)
    if not isinstance(result, Ran) or result.problems:
        raise RuntimeError(f"{library} {spec.attack}: {result.status} {result.reason}")
    return Reference(result.x_adv, result.success)


def agreement_table(n: int = 64, checkpoint: str | None = None) -> pd.DataFrame:
    """Every PGD-L2/DeepFool/DDN comparison of the README on the first ``n`` mnist-5k test digits, with
    the default ``advbridge_mnist_cnn`` (trained and cached if needed) or the one in ``checkpoint``."""
    work = load_workload("mnist-5k", n=n, seed=0, device="cpu", progress=False, checkpoint=checkpoint)
    model, x, y = work.model, work.x, work.y
    correct = predict(model, x) == y
    smooth = smooth_copy(model)
    rows: list[dict] = []

    pgd_l2 = AttackSpec(attack="pgd", norm=Norm.L2, eps=1.5, steps=10, step_size=0.4)
    for name, net in (("ReLU CNN", model), ("smooth copy", smooth)):
        own_pgd = _reference(OwnAdapter(channels_last=False), net, x, y, pgd_l2)  # the references' layout
        ref = _reference("foolbox", net, x, y, pgd_l2)
        rows.append(
            {
                "comparison": f"PGD L2 eps 1.5, 10 steps, {name}",
                "library": "foolbox",
                **compare_images(x, own_pgd.x_adv, ref.x_adv, torch.ones(len(x), dtype=torch.bool)),
                "success_flags_equal": float((own_pgd.success == ref.success).double().mean()),
            }
        )
    import torchattacks

    own = pgd(model, x, y, eps=1.5, norm="L2", steps=10, step_size=0.4, channels_last=False)
    unguarded = torchattacks.PGDL2(model, eps=1.5, alpha=0.4, steps=10, random_start=False, eps_for_division=1e-30)
    diff = (own - unguarded(x, y)).flatten(1).abs().amax(dim=1)
    rows.append(
        {
            "comparison": "PGD L2 eps 1.5, 10 steps, torchattacks with eps_for_division=1e-30",
            "library": "torchattacks",
            "compared": len(x),
            "max_abs_diff": float(diff.max()),
            "frac_le_1e-5": float((diff <= 1e-5).double().mean()),
        }
    )

    def add(
        comparison: str, library: str, own: Tensor, ref: Reference, base: Tensor, layout: str = "channels-last"
    ) -> None:
        mask = base & (predict(model, own) != y) & ref.success
        rows.append(
            {
                "comparison": comparison,
                "library": library,
                "own_layout": layout,
                **compare_images(x, own, ref.x_adv, mask),
            }
        )

    for norm in ("L2", "Linf"):
        spec = AttackSpec(attack="deepfool", norm=Norm.parse(norm))
        # own's default convention (overshoot on the accumulated total, = foolbox's), in both layouts
        own_total = {layout: deepfool(model, x, y, norm=norm, channels_last=cl) for layout, cl in LAYOUTS.items()}
        success = float((predict(model, own_total["channels-last"]) != y)[correct].double().mean())
        rows.append(
            {"comparison": f"own DeepFool {norm} success (overshoot 0.02)", "library": "own", "success": success}
        )
        references = {library: _reference(library, model, x, y, spec) for library in ("foolbox", "advlib")}
        add(f"DeepFool {norm}, own default", "advlib", own_total["channels-last"], references["advlib"], correct)
        for layout, channels_last in LAYOUTS.items():  # own in the convention of each library
            same = {
                "foolbox": own_total[layout],
                "advlib": deepfool(model, x, y, norm=norm, overshoot_mode="step", channels_last=channels_last),
            }
            for library, own in same.items():
                add(
                    f"DeepFool {norm}, own in the library's convention",
                    library,
                    own,
                    references[library],
                    correct,
                    layout,
                )

    x16, y16, correct16 = x[:16], y[:16], correct[:16]
    spec0 = AttackSpec(attack="deepfool", norm=Norm.L2, overshoot=0.0)
    conventions: dict[str, Callable[[], Tensor]] = {
        "torchattacks": lambda: deepfool(model, x16, y16, overshoot=0.0, min_step=0.0, overshoot_mode="step"),
        "art": lambda: deepfool(
            model, x16, y16, overshoot=0.0, min_step=0.0, overshoot_mode="end", source="prediction"
        ),
    }
    for library, own_run in conventions.items():
        ref = _reference(library, model, x16, y16, spec0)
        own = own_run()
        diff = (own - ref.x_adv).flatten(1).abs().amax(dim=1)[correct16]  # on the boundary: no success mask
        rows.append(
            {
                "comparison": "DeepFool L2 overshoot 0, own in the library's convention (16 digits)",
                "library": library,
                "compared": int(correct16.sum()),
                "max_abs_diff": float(diff.max()),
                "frac_le_1e-5": float((diff <= 1e-5).double().mean()),
            }
        )

    own_ddn = {layout: ddn(model, x, y, channels_last=channels_last) for layout, channels_last in LAYOUTS.items()}
    smooth_y = predict(smooth, x16)
    own_smooth = _reference("own", smooth, x16, smooth_y, DDN)
    for library in ("foolbox", "advlib"):
        ref = _reference(library, model, x, y, DDN)
        for layout, own in own_ddn.items():
            add("DDN 100 steps", library, own, ref, correct, layout)
        ref = _reference(library, smooth, x16, smooth_y, DDN)
        rows.append(
            {
                "comparison": "DDN 100 steps, smooth copy of the CNN (16 digits)",
                "library": library,
                "own_layout": "channels-last",
                **compare_images(x16, own_smooth.x_adv, ref.x_adv, own_smooth.success & ref.success),
            }
        )
    ref = _reference("advlib", model, x, y, DDN.with_(levels=256))
    for layout, channels_last in LAYOUTS.items():
        own = ddn(model, x, y, levels=256, channels_last=channels_last)
        add("DDN levels=256", "advlib", own, ref, correct, layout)

    table = pd.DataFrame(rows)
    table.insert(0, "n", n)
    return table


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--out", default="results/agreement")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint folder of an mnist-5k classifier (e.g. tests/fixtures/mnist_cnn, the suite's); "
        "default: the default advbridge_mnist_cnn, trained here if not cached",
    )
    args = parser.parse_args(argv)
    out = output_prefix(args.out, "agreement")
    torch.use_deterministic_algorithms(True)
    table = agreement_table(args.n, args.checkpoint)
    machine = f"CPU ({torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads)"
    model = args.checkpoint or "advbridge_mnist_cnn (default config)"
    header = f"mnist-5k, {model}, {args.n} test digits, {machine}, torch {torch.__version__}, git {git_revision()}"
    print_and_save(table, header, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

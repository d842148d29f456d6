"""Minimal-norm results: robust accuracy at any eps from one run, and the per-sample worst case.

A minimal-norm attack (DeepFool, DDN) returns, for each sample, the smallest perturbation it found.
Robust accuracy at budget ε is then the fraction of samples that are correctly classified and whose
successful perturbation (if any) is larger than ε (foolbox's ``MinimizationAttack`` idea). Across
libraries, the per-sample worst case is the smallest successful perturbation any library found.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from advbridge.bridge.io import OutputPrefix, atomic_write
from advbridge.bridge.runner import AttackResult, Ran
from advbridge.experiments.core.reductions import best_counts, robust_accuracy_at

#: Multiples of the dataset's standard budget used when no ``--eps-grid`` is given.
DEFAULT_GRID_FACTORS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)

WORST_CASE = "worst-case"

#: The figures of :func:`save_minimal_figures`, as tails of the run's output prefix.
MINIMAL_FIGURE_TAILS = ("-robust.png", "-norms.png")


def norms_of(result: Ran) -> Tensor:
    """Per-sample norm in the spec's threat model: ∞ where the attack failed or the sample was wrong."""
    dist = result.linf if result.spec.norm.value == "Linf" else result.l2
    return torch.where(result.clean_correct & result.success, dist, torch.full_like(dist, math.inf))


def library_envelope(results: Sequence[AttackResult]) -> tuple[Tensor, dict[str, int]]:
    """Per-sample smallest successful norm over libraries (the worst case,
    :func:`~advbridge.experiments.core.reductions.best_counts`), and on how many samples each library reached it
    (within :data:`~advbridge.experiments.core.reductions.BEST_RTOL`; ties count for every library)."""
    ok = [r for r in results if isinstance(r, Ran)]
    best, reached = best_counts(torch.stack([norms_of(r) for r in ok]))
    return best, {r.library: int(reached[i].sum()) for i, r in enumerate(ok)}


def eps_grid_table(results: Sequence[AttackResult], eps_grid: Sequence[float]) -> pd.DataFrame:
    """Robust accuracy at each eps of ``eps_grid``, one row per library plus the worst case."""
    ok = [r for r in results if isinstance(r, Ran)]
    if not ok:
        return pd.DataFrame()
    clean_correct = ok[0].clean_correct
    rows = [(r.library, norms_of(r)) for r in ok] + [(WORST_CASE, library_envelope(ok)[0])]
    data = {lib: [robust_accuracy_at(n, clean_correct, e) for e in eps_grid] for lib, n in rows}
    table = pd.DataFrame(data, index=pd.Index(eps_grid, name="eps")).T
    table.index.name = "library"
    return table


def save_minimal_figures(
    results: Sequence[AttackResult], eps_grid: Sequence[float], out: str | Path | OutputPrefix
) -> list[Path]:
    """``<out>-robust.png`` (robust accuracy vs eps, every library) and ``<out>-norms.png`` (histogram)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if isinstance(r, Ran)]
    norm = ok[0].spec.norm.value
    prefix = OutputPrefix.of(out)
    robust_path, hist_path = prefix.files(MINIMAL_FIGURE_TAILS)
    finite_max = max(
        (float(n[torch.isfinite(n)].max()) for n in map(norms_of, ok) if torch.isfinite(n).any()), default=1.0
    )
    xs = torch.linspace(0, max(finite_max, max(eps_grid)) * 1.05, 200)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    curves = [(r.library, norms_of(r)) for r in ok] + [(WORST_CASE, library_envelope(ok)[0])]
    clean_correct = ok[0].clean_correct
    for library, n in curves:
        ys = [robust_accuracy_at(n, clean_correct, float(e)) for e in xs]
        ax.plot(xs, ys, label=library, linestyle="--" if library == WORST_CASE else "-")
    ax.set_xlabel(f"eps ({norm})")
    ax.set_ylabel("robust accuracy")
    ax.set_title(f"{ok[0].spec.attack}: robust accuracy vs eps ({ok[0].n} images)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(robust_path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for r in ok:
        n = norms_of(r)
        ax.hist(n[torch.isfinite(n)].numpy(), bins=30, histtype="step", label=r.library)
    ax.set_xlabel(f"per-sample {norm} norm of successful perturbations")
    ax.set_ylabel("samples")
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(hist_path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return [robust_path, hist_path]

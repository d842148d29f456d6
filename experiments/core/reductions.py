"""Per-sample reductions over the rows of an evaluation: the one worst case of ``compare``, ``defend`` and the
audit.

A row leaves, per sample, whether the sample is still robust (correct and not fooled) and the size of the
successful perturbation it found (∞ where none). Over rows:

- the worst case is robust on a sample only if every row left it robust (Carlini et al. 2019, "On Evaluating
  Adversarial Robustness", Sec. 4: report the minimum over attacks, per sample — AutoAttack's ensemble rule);
- its perturbation is the smallest successful one any row found (the lower envelope; foolbox's minimization
  attacks give robust accuracy at every eps from it);
- robust accuracy at ε counts the samples correct and not broken within ε.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

#: Relative tolerance within which a row's per-sample norm counts as reaching the smallest one.
BEST_RTOL = 1e-3


def worst_case_robust(clean: Tensor, robust: Sequence[Tensor]) -> Tensor:
    """Per sample: correct (``clean``) and robust in every row of ``robust`` (bool tensors ``(N,)``)."""
    out = clean.clone()
    for flags in robust:
        out &= flags
    return out


def smallest_success(norms: Sequence[Tensor], successes: Sequence[Tensor | None] | None = None) -> Tensor:
    """Per sample, the smallest norm over rows where that row succeeded (``successes``; ``None``: ``norms`` are
    already ∞ where a row failed); ∞ where no row did."""
    if successes is not None:
        inf = torch.tensor(math.inf)
        norms = [torch.where(ok, n, inf) for n, ok in zip(norms, successes) if ok is not None]
    return torch.stack(list(norms)).amin(0)


def best_counts(norms: Tensor) -> tuple[Tensor, Tensor]:
    """``(smallest, reached)`` of stacked per-row norms ``(R, N)``: the per-sample minimum and, per row, which
    samples it reached within :data:`BEST_RTOL` (ties count for every row that reaches it)."""
    best = norms.min(dim=0).values
    return best, (norms <= best * (1 + BEST_RTOL)) & torch.isfinite(norms)


def robust_accuracy_at(norms: Tensor, clean: Tensor, eps: float) -> float:
    """Share of samples correct and not broken within ``eps`` (``norms``: ∞ where not broken)."""
    return float((clean & (norms > eps)).float().mean())

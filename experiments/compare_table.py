"""``compare``'s summary table: one row per library, agreement with the ``own`` row, the per-sample worst case.

Success is recomputed by the runner on the same model; norms are over the samples that were correctly
classified and that the attack fooled; agreement is measured against the ``own`` row
(``max_abs_diff_vs_own`` over all pixels, ``success_agreement_vs_own`` over samples).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from advbridge.bridge.runner import AttackResult, Ran
from advbridge.experiments.audit.optimality import optimality_table
from advbridge.experiments.minimal import WORST_CASE, library_envelope, norms_of

COLUMNS = [
    "library",
    "version",
    "status",
    "n",
    "clean_acc",
    "success_rate",
    "robust_acc",
    "median_l2",
    "mean_l2",
    "median_linf",
    "mean_linf",
    "seconds",
    "images_per_s",
    "forward_per_image",
    "backward_per_image",
    "max_abs_diff_vs_own",
    "success_agreement_vs_own",
    "best_count",
    "optimality",
    "reason",
]


def _median(values: Tensor) -> float:
    return float(values.median()) if len(values) else math.nan


def _mean(values: Tensor) -> float:
    return float(values.mean()) if len(values) else math.nan


def result_row(result: AttackResult, reference: AttackResult | None) -> dict[str, Any]:
    """One table row for ``result``; agreement columns compare with ``reference`` (the own row)."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS, math.nan)
    row.update(library=result.library, version=result.version, status=result.status, reason=result.reason, n=result.n)
    if not isinstance(result, Ran):
        return row
    correct, success = result.clean_correct, result.success
    fooled = correct & success
    row.update(
        clean_acc=float(correct.float().mean()),
        success_rate=float(fooled.sum() / correct.sum()) if correct.any() else math.nan,
        robust_acc=math.nan if result.spec.targeted else float((correct & ~success).float().mean()),
        median_l2=_median(result.l2[fooled]),
        mean_l2=_mean(result.l2[fooled]),
        median_linf=_median(result.linf[fooled]),
        mean_linf=_mean(result.linf[fooled]),
        seconds=result.seconds,
        images_per_s=result.n / result.seconds if result.seconds > 0 else math.nan,
        forward_per_image=result.forward_images / result.n,
        backward_per_image=result.backward_images / result.n,
    )
    if isinstance(reference, Ran):
        own = reference
        row["max_abs_diff_vs_own"] = float((result.x_adv - own.x_adv).abs().max())
        row["success_agreement_vs_own"] = float((success == own.success).float().mean())
    return row


def worst_case_row(ok: Sequence[Ran], best: Tensor) -> dict[str, Any]:
    """The per-sample best ``best`` over the libraries that ran (``ok``), as a table row."""
    correct = ok[0].clean_correct
    broken = torch.isfinite(best)
    row: dict[str, Any] = dict.fromkeys(COLUMNS, math.nan)
    column = "linf" if ok[0].spec.norm.value == "Linf" else "l2"
    row.update(
        library=WORST_CASE,
        version="",
        status="ok",
        n=len(best),
        clean_acc=float(correct.float().mean()),
        success_rate=float(broken.sum() / correct.sum()) if correct.any() else math.nan,
        robust_acc=float((correct & ~broken).float().mean()),
        reason="per sample, the smallest over libraries",
        **{f"median_{column}": _median(best[broken]), f"mean_{column}": _mean(best[broken])},
    )
    return row


def sample_distances(results: Sequence[Ran]) -> pd.DataFrame:
    """Per sample (rows) and library (columns): the norm of its adversarial example in the threat model, 0 for a
    sample misclassified before the attack, ``inf`` where it failed (AttackBench's convention)."""
    return pd.DataFrame(
        {r.library: torch.where(r.clean_correct, norms_of(r), torch.zeros(r.n)).double().numpy() for r in results}
    )


def summary_table(results: Sequence[AttackResult], context: dict[str, Any] | None = None) -> pd.DataFrame:
    """The comparison table: one row per library, tidy columns for the spec and ``context``.

    For minimal-norm attacks a ``worst-case`` row is added and ``best_count`` says on how many samples
    each library found the smallest perturbation (within 0.1 %).
    """
    reference = next((r for r in results if r.library == "own" and isinstance(r, Ran)), None)
    rows = [result_row(r, reference) for r in results]
    ok = [r for r in results if isinstance(r, Ran)]
    if ok and not ok[0].spec.targeted:
        scores = optimality_table(sample_distances(ok), float(ok[0].clean_correct.double().mean()))
        for row in rows:
            row["optimality"] = scores.get(row["library"], math.nan)
    if ok and ok[0].spec.minimal:
        best, counts = library_envelope(ok)
        for row in rows:
            row["best_count"] = counts.get(row["library"], math.nan)
        rows.append(worst_case_row(ok, best))
    table = pd.DataFrame(rows, columns=COLUMNS)
    if results:
        spec = results[0].spec.to_dict()
        tidy = {**(context or {}), **{k: spec[k] for k in ("attack", "norm", "eps", "steps", "targeted", "seed")}}
        for i, (key, value) in enumerate(tidy.items()):
            table.insert(i, key, value)
    return table

"""The audit's tables and its one-line summaries: the rows (one per attack × library × stage, then the worst cases),
the per-sample distances, the indicators, the verdict and the cost line, as ``cli.py audit`` prints them and
its files hold them (:mod:`~advbridge.experiments.audit.report`)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from advbridge.experiments.audit.optimality import optimality_table
from advbridge.experiments.audit.results import NAIVE, Audit
from advbridge.experiments.core.reductions import worst_case_robust

#: The columns of the printed and Markdown tables.
SHOWN = ["attack", "library", "stage", "status", "attacked", "robust_acc", "robust_after", "propagations",
         "max_propagations", "optimality", "seconds", "remedy_for"]  # fmt: skip
INDICATOR_COLUMNS = ["indicator", "value", "threshold", "raised", "remedy", "value_after_remedy", "stayed_raised",
                     "robust_accuracy_before", "robust_accuracy_after", "source"]  # fmt: skip


def distance_table(audit: Audit) -> pd.DataFrame:
    """Per-sample distances (index: sample; one column per ok row, named by its key)."""
    return pd.DataFrame({r.key: r.distance.numpy() for r in audit.rows if r.ok and r.distance is not None})


def results_table(audit: Audit) -> pd.DataFrame:
    """One row per attack × library × stage, then the worst case before and after the remedies.

    ``attacked``: the samples the row attacked (the cascade: those still robust before it); ``robust_acc``: the
    share of all samples the row left correct (one it did not attack counts as not broken by it);
    ``robust_after``: the worst case over this row and every row before it (AutoAttack's "robust accuracy after
    each attack"); ``success_rate`` and ``median_distance`` over the clean-correct samples the row attacked;
    ``optimality`` (AttackBench: against the envelope of every row, each on every sample) only with
    ``every_point``."""
    distances = distance_table(audit)
    every_point = audit.config.every_point
    optimality = (
        optimality_table(distances, audit.clean_accuracy) if every_point and len(distances.columns) else pd.Series()
    )
    records = []
    so_far: list = []
    for row in audit.rows:
        record = {"attack": row.attack, "library": row.library, "stage": row.stage, "status": row.status,
                  "n": len(audit.clean), "clean_acc": audit.clean_accuracy}  # fmt: skip
        if row.ok:
            # an ok row went through Cascade.finish (or copied a finished row's counts): every tensor is set
            assert row.robust is not None and row.distance is not None
            assert row.forward is not None and row.backward is not None
            propagations = (row.forward + row.backward).double()
            asked = audit.clean if row.asked is None else audit.clean & row.asked
            so_far.append(row.robust)
            record.update(
                attacked=int(asked.sum()),
                robust_acc=float(row.robust.double().mean()),
                robust_after=float(worst_case_robust(audit.clean, so_far).double().mean()),
                success_rate=float((~row.robust & asked).double().sum() / max(1, int(asked.sum()))),
                median_distance=float(np.median(row.distance[asked].numpy())) if asked.any() else math.nan,
                forward_per_sample=float(row.forward.double().mean()),
                backward_per_sample=float(row.backward.double().mean()),
                propagations=float(propagations.mean()),
                max_propagations=int(propagations.max()),
                hook_forward_per_sample=row.hook_forward / len(audit.clean),
                hook_backward_per_sample=row.hook_backward / len(audit.clean),
                optimality=float(optimality.get(row.key, math.nan)),
            )  # fmt: skip
        record.update(seconds=row.seconds, remedy_for=",".join(row.indicators), reason=row.reason)
        records.append(record)
    for stage, robust in (("worst-case naive", audit.robust_under([NAIVE])), ("worst-case", audit.robust_under())):
        records.append({"attack": stage, "library": "", "stage": "", "status": "ok", "n": len(audit.clean), "remedy_for": "",
                        "clean_acc": audit.clean_accuracy, "robust_acc": float(robust.double().mean()),
                        "reason": "per sample, the worst over the rows" + (" of the naive cascade" if
                                                                               "naive" in stage else "")})  # fmt: skip
    return pd.DataFrame.from_records(records)


def indicator_table(audit: Audit) -> pd.DataFrame:
    records = [{"indicator": name, **result.to_dict()} for name, result in audit.indicators.items()]
    if not records:  # (every audit measures some; a hand-built one may not)
        return pd.DataFrame(columns=INDICATOR_COLUMNS).astype({"raised": bool})
    return pd.DataFrame.from_records(records)[INDICATOR_COLUMNS]


def verdict(audit: Audit) -> str:
    """The card's first line: the worst-case number, and whether the audit can be trusted."""
    stayed = audit.stayed_raised
    raised = [name for name, r in audit.indicators.items() if r.raised]
    trust = (
        "the model did not learn (clean accuracy at chance): no robustness number of it means anything"
        if "failed_training" in stayed
        else f"indicators still raised after their remedy: {', '.join(stayed)} — do not trust this number"
        if stayed
        else f"indicators raised and remedied: {', '.join(raised)}"
        if raised
        else "no indicator of attack failure raised"
    )
    return (
        f"worst-case robust accuracy {audit.robust_after:.4f} ({audit.config.norm}, eps={audit.config.eps:g}; "
        f"naive cascade {audit.robust_before:.4f}, clean {audit.clean_accuracy:.4f}); {trust}"
    )


def cost_line(audit: Audit) -> str:
    """The audit's cost (the rows' attacks, and every pass through the model) next to AutoAttack standard's alone
    on the same images (``versus_autoattack``; else AutoAttack's row in the audit), propagations per sample."""
    cost = audit.cost()
    line = (
        f"cost: {cost['propagations_per_sample']:.1f} propagations per sample in the attacks, "
        f"{cost['model_propagations_per_sample']:.1f} through the model in all, {cost['seconds']:.1f} s"
    )
    alone = audit.autoattack_alone
    if alone is not None and alone.get("failed"):
        line += (f" (AutoAttack standard alone failed after {alone['propagations_per_sample']:.1f} propagations per "
                 f"sample: {alone['failed']})")  # fmt: skip
    elif alone is not None:
        ratio = cost["model_propagations_per_sample"] / max(alone["propagations_per_sample"], 1e-12)
        line += (
            f" (AutoAttack standard alone: {alone['propagations_per_sample']:.1f} propagations per sample, "
            f"{alone['seconds']:.1f} s, robust accuracy {alone['robust_accuracy']:.4f}; the audit {ratio:.2f}x its "
            f"propagations, worst case {audit.robust_after:.4f})"
        )
    elif cost["autoattack_propagations_per_sample"] is not None:
        line += (f" (AutoAttack standard's row: {cost['autoattack_propagations_per_sample']:.1f} propagations per "
                 f"sample, {cost['autoattack_seconds']:.1f} s)")  # fmt: skip
    return line

"""Gradient-masking flags, each a measured value next to the number it qualifies (not only a boolean).

After AutoAttack's ``checks.py`` (Croce & Hein 2020) and Carlini et al. 2019, "On Evaluating Adversarial
Robustness", Sec. 5 (the checklist): a robustness number is suspect when the model's outputs are random,
are probabilities (softmax saturation hides the logits' gradient), when input gradients vanish, when a
single-step attack beats an iterative one, when a transfer or black-box attack beats the white-box one,
when an unbounded attack does not reach 100 %, or when success does not grow with eps.

Each function returns the value of its flag; each flag column is an indicator of
:mod:`advbridge.experiments.core.indicators` (the audit's, measured by the same functions), whose threshold and
direction :data:`THRESHOLDS` and :func:`raised` give.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from advbridge.experiments.core.indicators import (
    COLUMNS,
    objective_zero_gradient_share,
    probability_outputs,
    randomized,
    saturated_softmax,
    unavailable_gradients,
)
from advbridge.zoo.training_check import TrainingCheck, check_card

__all__ = ["objective_zero_gradient_share", "probability_outputs", "randomized", "saturated_softmax"]

#: Value from which each flag column is raised: the threshold of its indicator
#: (:data:`advbridge.experiments.core.indicators.INDICATORS`, the audit's too).
THRESHOLDS = {column: indicator.threshold for column, indicator in COLUMNS.items()}
#: Flags raised when their value is below the threshold (the others: above).
RAISED_BELOW = tuple(column for column, indicator in COLUMNS.items() if indicator.below)
#: Cross-entropy input-gradient share that is exactly zero (Pintor et al.'s unavailable gradients).
zero_gradient_share = unavailable_gradients


#: Images the model-level flags look at (enough for a share, cheap for an expensive defended system).
MODEL_CHECK_N = 64


def model_flags(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
    """The flags of a defended system that need only its outputs, on the first :data:`MODEL_CHECK_N` images:
    random outputs (AutoAttack's check_randomized), probability outputs, a saturated softmax. The global RNG is
    left as it was."""
    x, y = x[:MODEL_CHECK_N], y[:MODEL_CHECK_N]
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        return {
            "random_outputs": randomized(model, x, y),
            "probability_outputs": probability_outputs(model, x),
            "saturated_softmax": saturated_softmax(model, x),
        }


def single_step_beats_iterative(single_step_robust: float, iterative_robust: float) -> float:
    """How much more accuracy the iterative attack leaves than the single step (> 0: masking)."""
    return iterative_robust - single_step_robust


def weaker_attack_beats_white_box(weaker_robust: float, white_box_robust: float) -> float:
    """How much more accuracy the white-box attack leaves than a transfer or black-box one (> 0: masking)."""
    return white_box_robust - weaker_robust


def unbounded_incomplete(success_rate: float) -> float:
    """1 − the success rate of an unbounded attack over the correctly classified samples (> 0: masking)."""
    return 1.0 - success_rate


def non_monotone_eps(robust_by_eps: Sequence[tuple[float, float]]) -> float:
    """The largest rise of robust accuracy from one eps to a larger one (> 0: success not growing with eps)."""
    ordered = [acc for _, acc in sorted(robust_by_eps)]
    return max([0.0] + [later - earlier for i, earlier in enumerate(ordered) for later in ordered[i + 1 :]])


def raised(name: str, value: float) -> bool:
    """Whether the flag column ``name`` (a key of :data:`THRESHOLDS`) is raised by ``value`` (its indicator's rule)."""
    return COLUMNS[name].raised(value)


#: The key of :func:`add_table_flags`' ``training`` mapping for the model behind every row.
EVERY_ROW = "*"
#: ``defense_library`` of the rows of the undefended model in a table that also has defended ones.
UNDEFENDED = "undefended"


def training_checks(
    classifier: dict[str, Any], generator: dict[str, Any] | None = None, **models: dict[str, Any]
) -> dict[str, TrainingCheck]:
    """The :func:`zoo.training_check.check_card` of the models behind a table's rows, keyed by
    ``defense_library`` (``EVERY_ROW``: all others): the classifier's card for every row; ``models`` (a
    trained defense's cards by library) for their rows; a generator's card joins the classifier's for the
    defended rows (the failing one speaks), the undefended rows keep the classifier's alone."""
    plain = check_card(classifier)
    checks = {EVERY_ROW: plain, **{library: check_card(card) for library, card in models.items()}}
    if generator is not None:
        made = check_card(generator)
        checks = {EVERY_ROW: made if made.failed and not plain.failed else plain, UNDEFENDED: plain}
    return checks


#: The flag columns of every ``defend`` and study row, in order (``flags``: the names of those raised).
FLAG_COLUMNS = [
    "random_outputs",
    "probability_outputs",
    "saturated_softmax",
    "zero_grad_share",
    "single_step_gap",
    "catastrophic_overfitting",
    "weaker_beats_white_box",
    "unbounded_incomplete",
    "non_monotone_eps",
    "failed_training",
    "flags",
]
#: Attack names (the ``attack`` column) of single-step and of unbounded (minimal-norm) attacks.
SINGLE_STEP = ("fgsm",)
UNBOUNDED = ("deepfool", "ddn")
#: Rows of the attacks run on the defended system itself, whose gradients the flags are about.
ATTACKED_MODES = ("white-box", "adaptive")
_SYSTEM = ["dataset", "model", "defense", "defense_library", "norm", "eps"]


def add_table_flags(table: pd.DataFrame, training: Mapping[str, TrainingCheck] | None = None) -> pd.DataFrame:
    """``table`` (tidy ``defend`` rows) with the flags that compare rows of one defended system at one budget:

    - ``single_step_gap`` (rows of iterative attacks on the system): their robust accuracy minus the lowest
      single-step (FGSM) one's (> 0: the single step beats the iterative attack, masking);
    - ``catastrophic_overfitting`` (the same rows, the other direction): the lowest FGSM robust accuracy minus
      theirs where theirs is below half of it, else 0 (Wong et al. 2020, Sec. 5: FGSM training that learned
      to mask FGSM keeps high FGSM accuracy while PGD accuracy collapses);
    - ``weaker_beats_white_box`` (rows on the system): their robust accuracy minus the lowest ``transfer`` one's;
    - ``unbounded_incomplete`` (DeepFool / DDN on the system, unbounded, no detector): 1 − their success rate;
    - ``non_monotone_eps``: over the rows of one (system, mode, attack, library) at several eps, the largest rise
      of robust accuracy from one eps to a larger one;
    - ``failed_training``: the check value of the model behind the row (``training``: see
      :func:`training_checks`), raised when that model did not learn;
    - ``flags``: the names of the raised flags (``zero_grad_share`` only on rows on the system).
    """
    table = table.copy()
    for name in FLAG_COLUMNS[4:-1]:
        table[name] = math.nan
    training = dict(training or {})
    every = training.pop(EVERY_ROW, None)
    check_of = [training.get(library, every) for library in table["defense_library"]]
    table["failed_training"] = [math.nan if c is None else c.value for c in check_of]
    ok = (table["status"] == "ok") & table["robust_acc"].notna()
    attacked = ok & table["mode"].isin(ATTACKED_MODES)
    single = table["attack"].isin(SINGLE_STEP)
    for _, group in table[ok].groupby(_SYSTEM, dropna=False, sort=False):
        rows = group.index
        fgsm = group["robust_acc"][attacked[rows] & single[rows]]
        transfer = group["robust_acc"][group["mode"] == "transfer"]
        on_system = rows[attacked[rows]]
        if len(fgsm):
            iterative = on_system[~single[on_system]]
            robust = table.loc[iterative, "robust_acc"]
            table.loc[iterative, "single_step_gap"] = robust - fgsm.min()
            collapsed = robust < fgsm.min() / 2
            table.loc[iterative, "catastrophic_overfitting"] = (fgsm.min() - robust).where(collapsed, 0.0)
        if len(transfer):
            table.loc[on_system, "weaker_beats_white_box"] = table.loc[on_system, "robust_acc"] - transfer.min()
    family = table["attack"].astype(str).str.split(" ").str[0]  # "deepfool (L2, logits)" is DeepFool
    # unbounded runs only (no eps: a DeepFool counted within a budget attack's eps may rightly fail)
    unbounded = attacked & family.isin(UNBOUNDED) & table["eps"].isna() & table["detection_rate"].isna()
    table.loc[unbounded, "unbounded_incomplete"] = 1 - table.loc[unbounded, "success_rate"]
    curve = ["dataset", "model", "defense", "defense_library", "mode", "attack", "attack_library", "norm"]
    for _, group in table[ok].groupby(curve, dropna=False, sort=False):
        if group["eps"].nunique() > 1:
            points = list(zip(group["eps"], group["robust_acc"]))
            table.loc[group.index, "non_monotone_eps"] = non_monotone_eps(points)

    def raised_names(row, check: TrainingCheck | None) -> str:
        names = [n for n in FLAG_COLUMNS[:-2] if n in row and not pd.isna(row[n]) and raised(n, row[n])]
        if row["mode"] not in ATTACKED_MODES:
            names = [n for n in names if n != "zero_grad_share"]
        return ",".join(names + (["failed_training"] if check is not None and check.failed else []))

    table["flags"] = [raised_names(row, check) for (_, row), check in zip(table.iterrows(), check_of)]
    return table


#: The flag columns of a ``compare`` row (one undefended model, one attack, each library).
COMPARE_FLAG_COLUMNS = [*FLAG_COLUMNS[:4], "unbounded_incomplete", "failed_training", "flags"]


def add_compare_flags(
    table: pd.DataFrame, model: nn.Module, x: Tensor, y: Tensor, *, minimal: bool, card: dict[str, Any] | None = None
) -> pd.DataFrame:
    """``table`` (``compare`` rows) with :data:`COMPARE_FLAG_COLUMNS` before ``reason``: the model's output
    flags and zero-gradient share (one value, every row), for a minimal-norm attack each library's
    ``unbounded_incomplete`` (1 − success rate; the worst-case row's too), and the training check of the
    model's ``card`` (``failed_training``; nan without a card)."""
    check = None if card is None else check_card(card)
    values = {
        **model_flags(model, x, y),
        "zero_grad_share": zero_gradient_share(model, x, y),
        "failed_training": math.nan if check is None else check.value,
    }
    table = table.copy()
    at = list(table.columns).index("reason") if "reason" in table else len(table.columns)
    for i, name in enumerate(COMPARE_FLAG_COLUMNS[:-1]):
        column = 1 - table["success_rate"] if name == "unbounded_incomplete" and minimal else values.get(name, math.nan)
        table.insert(at + i, name, column)
    ok = table["status"] == "ok"
    failed = ["failed_training"] if check is not None and check.failed else []
    table.insert(
        at + len(COMPARE_FLAG_COLUMNS) - 1,
        "flags",
        [
            ",".join(
                [n for n in COMPARE_FLAG_COLUMNS[:-2] if good and not pd.isna(row[n]) and raised(n, row[n])] + failed
            )
            for good, (_, row) in zip(ok, table.iterrows())
        ],
    )
    return table

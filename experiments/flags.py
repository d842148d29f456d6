"""Gradient-masking flags, each a measured value next to the number it qualifies (not only a boolean).

After AutoAttack's ``checks.py`` (Croce & Hein 2020) and Carlini et al. 2019, "On Evaluating Adversarial
Robustness", Sec. 5 (the checklist): a robustness number is suspect when the model's outputs are random,
are probabilities (softmax saturation hides the logits' gradient), when input gradients vanish, when a
single-step attack beats an iterative one, when a transfer or black-box attack beats the white-box one,
when an unbounded attack does not reach 100 %, or when success does not grow with eps.

Each function returns the value of its flag; :data:`THRESHOLDS` says from which value it is raised.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from advbridge.bridge.runner import eval_mode
from advbridge.zoo.training_check import CHANCE_MARGIN, TrainingCheck, check_card

#: Value from which each flag is raised (``value > threshold``).
THRESHOLDS = {
    "random_outputs": 0.0,  # share of samples whose logits differ between two forward passes
    "probability_outputs": 0.5,  # share of samples whose outputs look like a probability vector
    "saturated_softmax": 0.5,  # share of samples whose float32 softmax is exactly one-hot (distillation's cause)
    "zero_grad_share": 0.0,  # share of samples whose loss gradient is exactly zero
    "single_step_gap": 0.0,  # robust accuracy under the iterative attack minus the single step's
    "catastrophic_overfitting": 0.1,  # FGSM accuracy minus the iterative one's, where the latter is < half of it
    "weaker_beats_white_box": 0.0,  # white-box robust accuracy minus the transfer / black-box one's
    "unbounded_incomplete": 0.0,  # 1 - success rate of an unbounded attack (DeepFool, DDN)
    "non_monotone_eps": 0.0,  # the largest rise of robust accuracy from one eps to a larger one
    # clean accuracy − 1/K of the model behind the row (a generator's: 1 − MSE / MSE of the mean image);
    # raised *below* it, or when the model's training loss never fell (zoo.training_check)
    "failed_training": CHANCE_MARGIN,
}
#: Flags raised when their value is below the threshold (the others: above).
RAISED_BELOW = ("failed_training",)


@torch.no_grad()
def random_outputs(model: nn.Module, x: Tensor) -> float:
    """Share of samples whose outputs differ between two forward passes in eval mode (a random defense)."""
    with eval_mode(model):
        first, second = model(x), model(x)
    return float((first != second).flatten(1).any(1).double().mean())


@torch.no_grad()
def probability_outputs(model: nn.Module, x: Tensor, atol: float = 1e-4) -> float:
    """Share of samples whose outputs are non-negative and sum to 1 within ``atol``: a model that returns
    softmax probabilities instead of logits (cross-entropy on them saturates; attack the logits)."""
    with eval_mode(model):
        out = model(x).double()
    return float(((out >= 0).all(1) & ((out.sum(1) - 1).abs() <= atol)).double().mean())


@torch.no_grad()
def saturated_softmax(model: nn.Module, x: Tensor) -> float:
    """Share of samples whose float32 softmax is exactly one-hot (its largest probability rounds to 1): the
    cross-entropy's gradient is then zero or denormal, as for a distilled network at T = 1 (Carlini & Wagner
    2016, "Defensive distillation is not robust to adversarial examples")."""
    with eval_mode(model):
        out = model(x).float()
    return float((out.softmax(1).amax(1) == 1.0).double().mean())


def objective_zero_gradient_share(objective, x: Tensor, y: Tensor) -> float:
    """Share of samples whose gradient of ``objective(x, y)`` (per sample, summed) is exactly zero at x; an
    objective whose graph does not reach x at all (a non-differentiable step inside) has zero gradient."""
    xg = x.detach().requires_grad_(True)
    value = objective(xg, y).sum()
    if not value.requires_grad:
        return 1.0
    (grad,) = torch.autograd.grad(value, xg, allow_unused=True)
    if grad is None:
        return 1.0
    return float((grad.flatten(1).abs().amax(1) == 0).double().mean())


def zero_gradient_share(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Share of samples whose cross-entropy input gradient is exactly zero (a shattered or saturated
    gradient), in eval mode (the model's mode restored)."""
    with eval_mode(model):
        return objective_zero_gradient_share(
            lambda inputs, labels: torch.nn.functional.cross_entropy(model(inputs), labels, reduction="none"), x, y
        )


#: Images the model-level flags look at (enough for a share, cheap for an expensive defended system).
MODEL_CHECK_N = 64


def model_flags(model: nn.Module, x: Tensor) -> dict[str, float]:
    """The flags of a defended system that need only its outputs, on the first :data:`MODEL_CHECK_N` images:
    random outputs, probability outputs, a saturated softmax. The global RNG is left as it was."""
    x = x[:MODEL_CHECK_N]
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        return {
            "random_outputs": random_outputs(model, x),
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
    """Whether the flag ``name`` (a key of :data:`THRESHOLDS`) is raised by ``value``."""
    return value < THRESHOLDS[name] if name in RAISED_BELOW else value > THRESHOLDS[name]


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
        **model_flags(model, x),
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

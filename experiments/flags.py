"""Gradient-masking flags, each a measured value next to the number it qualifies (not only a boolean).

After AutoAttack's ``checks.py`` (Croce & Hein 2020) and Carlini et al. 2019, "On Evaluating Adversarial
Robustness", Sec. 5 (the checklist): a robustness number is suspect when the model's outputs are random,
are probabilities (softmax saturation hides the logits' gradient), when input gradients vanish, when a
single-step attack beats an iterative one, when a transfer or black-box attack beats the white-box one,
when an unbounded attack does not reach 100 %, or when success does not grow with eps.

Each function returns the value of its flag; :data:`THRESHOLDS` says from which value it is raised.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bridge.runner import eval_mode
from experiments import evaluation

#: Value from which each flag is raised (``value > threshold``).
THRESHOLDS = {
    "random_outputs": 0.0,  # share of samples whose logits differ between two forward passes
    "probability_outputs": 0.5,  # share of samples whose outputs look like a probability vector
    "zero_grad_share": 0.0,  # share of samples whose loss gradient is exactly zero
    "single_step_beats_iterative": 0.0,  # robust accuracy under the iterative attack minus the single step's
    "weaker_attack_beats_white_box": 0.0,  # white-box robust accuracy minus the transfer / black-box one's
    "unbounded_incomplete": 0.0,  # 1 - success rate of an unbounded attack (DeepFool, DDN)
    "non_monotone_eps": 0.0,  # the largest rise of robust accuracy from one eps to a larger one
}


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


def zero_gradient_share(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Share of samples whose cross-entropy input gradient is exactly zero (a shattered or saturated
    gradient), in eval mode (the model's mode restored)."""
    with eval_mode(model):
        return evaluation.zero_gradient_share(evaluation.cross_entropy_objective(model), x, y)


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
    return value > THRESHOLDS[name]

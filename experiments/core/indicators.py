"""Indicators of a failed robustness evaluation: one protocol for ``defend``'s flags and the audit.

Each indicator is one :class:`Indicator`: a threshold and a direction, its source, the remedy it calls for, and
:meth:`Indicator.measure` (value vs threshold → an :class:`IndicatorResult`). ``defend`` and ``compare`` report
the measured values as flag columns (:mod:`advbridge.experiments.flags`); the audit also runs each raised
indicator's remedy rows (:mod:`advbridge.experiments.audit.remedies`, keyed by the indicator's name). The
model-level measures are the functions of this module, the same for every command, so the same model gets the
same judgement everywhere.

Sources (REFERENCES.md §8):

- AutoAttack's ``checks.py`` (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an
  ensemble of diverse parameter-free attacks", ICML, App. and the repository's checks): a randomized model,
  probability outputs, zero gradients of the DLR loss, Square beating the white-box attacks, gradients
  computed inside ``forward`` (a dynamic defense), too few classes for DLR. AutoAttack only warns.
- Pintor et al. 2022, "Indicators of Attack Failure" (NeurIPS), Sec. 3: (1) unavailable gradients,
  (2) unstable predictions, (3) silent success, (4) incomplete optimization, (5) transfer failure,
  (6) unconstrained attack failure, each paired with the fix the audit then applies.
- Carlini et al. 2019, "On Evaluating Adversarial Robustness", Sec. 5 (the checklist): a single step beating
  an iterative attack, a transfer or black-box attack beating the white-box one, an unbounded attack short of
  100 %, success not growing with eps; Wong et al. 2020, Sec. 5 (catastrophic overfitting).
- Zimmermann et al. 2022, "Increasing Confidence in Adversarial Robustness Evaluations" (NeurIPS), Sec. 3: the
  binarization test, an active test whose problems have an adversarial example by construction
  (:mod:`advbridge.experiments.audit.binarization`).

Attack-level indicators are measured on the traces of
:class:`~advbridge.experiments.audit.tracker.PathTracker` or on table rows (the functions at the end).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advbridge.bridge.runner import eval_mode
from advbridge.experiments.core.losses import margin_loss
from advbridge.zoo.training_check import CHANCE_MARGIN


@dataclass(frozen=True)
class Indicator:
    """One indicator: raised when its value is above ``threshold`` (below it when ``below``); ``source``: where
    it comes from; ``remedy``: what the audit does when it is raised; ``column``: its column in ``defend`` and
    ``compare`` tables when it is reported there (``None``: audit only)."""

    name: str
    threshold: float
    source: str
    remedy: str
    below: bool = False
    column: str | None = None

    def raised(self, value: float | None) -> bool:
        """Whether ``value`` raises the indicator (nan and ``None``, measured on nothing, do not)."""
        if value is None or math.isnan(value):
            return False
        return value < self.threshold if self.below else value > self.threshold

    def measure(self, value: float, reason: str = "") -> IndicatorResult:
        """``value`` judged against the threshold."""
        return IndicatorResult(self.name, value, self.threshold, self.raised(value), self.remedy, self.source, reason)


@dataclass
class IndicatorResult:
    """One indicator, measured: value, threshold, raised, the remedy taken, the value after it (``None``: the
    remedy does not re-measure it), and the worst-case robust accuracy before and after its remedy."""

    name: str
    value: float
    threshold: float
    raised: bool
    remedy: str
    source: str
    reason: str = ""
    after: float | None = None
    robust_before: float | None = None
    robust_after: float | None = None
    details: dict | None = None  # what the measure found beyond its value (the binarization test's problems)

    @property
    def stayed_raised(self) -> bool:
        return self.raised and self.after is not None and INDICATORS[self.name].raised(self.after)

    def to_dict(self) -> dict:
        record = {
            "value": self.value, "threshold": self.threshold, "raised": self.raised,
            "remedy": self.remedy if self.raised else "", "source": self.source, "reason": self.reason,
            "value_after_remedy": self.after, "stayed_raised": self.stayed_raised,
            "robust_accuracy_before": self.robust_before, "robust_accuracy_after": self.robust_after,
        }  # fmt: skip
        return record if self.details is None else {**record, "details": self.details}


#: The binarization test is passed at this success rate on its problems (the choice:
#: :mod:`advbridge.experiments.audit.binarization`).
BINARIZATION_PASS = 0.8


def _registry(*indicators: Indicator) -> dict[str, Indicator]:
    return {i.name: i for i in indicators}


#: Every indicator, in report order (the audit's card lists them so).
INDICATORS: dict[str, Indicator] = _registry(
    # AutoAttack's checks.py
    Indicator("randomized", 1e-4, "AutoAttack check_randomized", "EOT over the randomness", column="random_outputs"),
    Indicator("probability_outputs", 0.5, "AutoAttack check_range_output", "margin loss on log-probabilities",
              column="probability_outputs"),
    Indicator("zero_gradients", 0.0, "AutoAttack check_zero_gradients (DLR)",
              "BPDA / surrogate gradients / black-box attack"),
    Indicator("square_beats_white_box", 0.002, "AutoAttack check_square_sr",
              "BPDA through the surrogate (gradient masking)"),
    Indicator("dynamic", 0.0, "AutoAttack check_dynamic", "BPDA through the surrogate, black-box attack"),
    Indicator("too_few_classes", 3.0, "AutoAttack check_n_classes", "margin loss instead of DLR", below=True),
    # Pintor et al. 2022
    Indicator("unavailable_gradients", 0.0, "Pintor et al. 1",
              "margin loss, else BPDA / surrogate gradients / black-box attack", column="zero_grad_share"),
    Indicator("unstable_predictions", 0.1, "Pintor et al. 2", "EOT over input noise"),
    Indicator("silent_success", 0.0, "Pintor et al. 3", "return the best point of the path"),
    Indicator("incomplete_optimization", 0.0, "Pintor et al. 4", "4x steps, margin loss, random restarts"),
    Indicator("transfer_failure", 0.0, "Pintor et al. 5", "attack the target itself (white-box rows)"),
    Indicator("unconstrained_failure", 0.0, "Pintor et al. 6", "eps = inf with the margin loss; the margin loss at eps"),
    # Carlini & Wagner, Carlini et al. 2019, Wong et al. 2020, Athalye et al. 2018; ours
    Indicator("saturated_softmax", 0.5, "Carlini & Wagner 2016", "margin loss on the logits",
              column="saturated_softmax"),
    Indicator("single_step_gap", 0.0, "Carlini et al. 2019", "4x steps, margin loss, random restarts",
              column="single_step_gap"),
    Indicator("catastrophic_overfitting", 0.1, "Wong et al. 2020, Sec. 5",
              "PGD (not FGSM) training; the adaptive rows", column="catastrophic_overfitting"),
    Indicator("weaker_beats_white_box", 0.0, "Carlini et al. 2019",
              "BPDA through the surrogate; the adaptive rows", column="weaker_beats_white_box"),
    Indicator("unbounded_incomplete", 0.0, "Carlini et al. 2019",
              "eps = inf with the margin loss; the margin loss at eps", column="unbounded_incomplete"),
    Indicator("non_monotone_eps", 0.0, "Carlini et al. 2019", "more steps and restarts at the larger eps",
              column="non_monotone_eps"),
    Indicator("bpda_disagreement", 0.0, "Athalye et al. 2018, Sec. 4.1",
              "margin PGD through the declared BPDA variant (preprocess, detector)"),
    Indicator("failed_training", CHANCE_MARGIN, "advbridge (clean accuracy - 1/K)",
              "none: a model at chance is no defense; retrain it", below=True, column="failed_training"),
    # Zimmermann et al. 2022
    Indicator("binarization", BINARIZATION_PASS, "Zimmermann et al. 2022, Sec. 3 (binarization test)",
              "the strongest remedy set on the binarized problems", below=True),
)  # fmt: skip

#: The indicators of the audit (those measured on one audited model; the others compare table rows).
AUDIT_INDICATORS = tuple(
    name
    for name in INDICATORS
    if name not in ("catastrophic_overfitting", "weaker_beats_white_box", "non_monotone_eps")
)
#: The table column of each indicator reported in ``defend`` / ``compare`` tables.
COLUMNS: dict[str, Indicator] = {i.column: i for i in INDICATORS.values() if i.column is not None}


#: Pintor et al.'s unstable-predictions radius r, number of samples γ (Sec. 3, indicator 2).
NOISE_RADIUS = 8 / 255
NOISE_SAMPLES = 100
#: Pintor et al.'s incomplete optimization: the rescaled running minimum still falls by more than this over
#: the last ``WINDOW`` queries.
LOSS_DROP = 0.05
WINDOW = 10
#: AutoAttack's check_randomized: forward passes compared.
RANDOM_PASSES = 5


@torch.no_grad()
def randomized(model: nn.Module, x: Tensor, y: Tensor, passes: int = RANDOM_PASSES) -> float:
    """AutoAttack's check_randomized: the largest L2 distance between the L2-normalized outputs of
    ``passes`` forward passes (eval mode) and the first's; 1 if the number of correct predictions changes."""
    with eval_mode(model):
        outputs = [model(x).double() for _ in range(passes)]
    normed = [F.normalize(o.flatten(1), dim=1) for o in outputs]
    correct = {int((o.argmax(1) == y).sum()) for o in outputs}
    if len(correct) > 1:
        return 1.0
    return max(float((n - normed[0]).norm(dim=1).max()) for n in normed[1:])


@torch.no_grad()
def probability_outputs(model: nn.Module, x: Tensor, atol: float = 1e-5) -> float:
    """AutoAttack's check_range_output: the share of rows in [−atol, 1 + atol] that sum to 1 within atol."""
    with eval_mode(model):
        out = model(x).double()
    in_range = ((out >= -atol) & (out <= 1 + atol)).all(1)
    return float((in_range & ((out.sum(1) - 1).abs() <= atol)).double().mean())


def dlr_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Croce & Hein 2020, eq. 6: DLR = −(z_y − max_{j≠y} z_j) / (z_π1 − z_π3), π the descending order."""
    top = logits.sort(1, descending=True).values
    return -margin_loss(logits, labels) / (top[:, 0] - top[:, 2] + 1e-12)


def objective_zero_gradient_share(objective: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor) -> float:
    """Share of samples whose input gradient of ``objective(x, y)`` (per sample, summed) is all zero or not
    finite (a shattered or saturated gradient); 1 when it cannot be computed (the graph does not reach x, or the
    call raises)."""
    xg = x.detach().clone().requires_grad_(True)
    try:
        value = objective(xg, y).sum()
        if not value.requires_grad:
            return 1.0
        (grad,) = torch.autograd.grad(value, xg, allow_unused=True)
    except RuntimeError:
        return 1.0
    if grad is None:
        return 1.0
    flat = grad.flatten(1)
    return float(((flat == 0).all(1) | ~torch.isfinite(flat).all(1)).double().mean())


def _zero_gradient_share(model: nn.Module, x: Tensor, y: Tensor, loss: Callable[[Tensor, Tensor], Tensor]) -> float:
    """:func:`objective_zero_gradient_share` of ``loss(model(x), y)``, ``model`` in eval mode."""
    with eval_mode(model):
        return objective_zero_gradient_share(lambda inputs, labels: loss(model(inputs), labels), x, y)


def zero_gradients(model: nn.Module, x: Tensor, y: Tensor, num_classes: int) -> float:
    """AutoAttack's check_zero_gradients: the share of samples whose DLR gradient is all zero (NaN with fewer
    than 3 classes, where DLR is undefined)."""
    if num_classes < 3:
        return math.nan
    return _zero_gradient_share(model, x, y, dlr_loss)


def unavailable_gradients(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Pintor et al.'s indicator 1 for the cross-entropy every library ascends: the share of samples whose
    gradient is all zero (or non-finite); 1 when the gradient call raises or the graph does not reach x."""
    return _zero_gradient_share(model, x, y, lambda out, t: F.cross_entropy(out, t, reduction="none"))


def margin_gradients_unavailable(model: nn.Module, x: Tensor, y: Tensor, reject: int | None = None) -> float:
    """:func:`unavailable_gradients` for the margin loss: deciding between the margin remedy (saturated
    softmax: the margin's gradient is there) and BPDA / surrogate gradients (it is not)."""
    return _zero_gradient_share(model, x, y, lambda out, t: margin_loss(out, t, reject))


def dynamic(model: nn.Module, x: Tensor) -> float:
    """AutoAttack's check_dynamic: how many times one ``forward`` calls ``torch.autograd.grad`` or
    ``torch.autograd.backward`` (``Tensor.backward`` goes through it): a defense that optimizes at inference.
    Counted with a profiler hook, as AutoAttack counts with ``sys.settrace``, whatever name the call is made by."""
    calls = 0
    autograd_file = torch.autograd.grad.__code__.co_filename

    def profile(frame, event, arg) -> None:
        nonlocal calls
        code = frame.f_code
        if event == "call" and code.co_name in ("grad", "backward") and code.co_filename == autograd_file:
            calls += 1

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        with eval_mode(model):
            model(x[:1])
    finally:
        sys.setprofile(previous)
    return float(calls)


@torch.no_grad()
def unstable_predictions(
    model: nn.Module, x: Tensor, y: Tensor, radius: float = NOISE_RADIUS, samples: int = NOISE_SAMPLES, seed: int = 0,
    reject: int | None = None,
) -> float:  # fmt: skip
    """Pintor et al.'s indicator 2 on the margin loss L: the mean over samples and over ``samples`` draws
    u ~ U[−r/2, r/2]^d of min(|L(x) − L(x + u)| / |L(x)|, 1)."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    with eval_mode(model):
        reference = margin_loss(model(x).float(), y, reject)
        changes = []
        for _ in range(samples):
            u = (torch.rand(x.shape, generator=generator, device=x.device) - 0.5) * radius
            value = margin_loss(model((x + u).clamp(0, 1)).float(), y, reject)
            changes.append(((reference - value).abs() / reference.abs().clamp_min(1e-12)).clamp_max(1))
    return float(torch.stack(changes).double().mean())


def bpda_disagreement(
    model: nn.Module, bpda: nn.Module, x: Tensor, y: Tensor, reject: int | None = None, min_cosine: float = 0.9
) -> float:
    """Share of samples whose margin-loss gradient through the system as it is and through its declared BPDA
    variant (the non-differentiable parts' backward replaced: a squeezer's identity, a detector's squeezers) have
    cosine similarity below ``min_cosine`` (a zero gradient counts as 0): the exact gradient is not the one an
    adaptive attacker would follow (Athalye et al. 2018, Sec. 4.1)."""

    def gradient(module: nn.Module) -> Tensor:
        xg = x.detach().clone().requires_grad_(True)
        try:
            with eval_mode(module):
                value = margin_loss(module(xg), y, reject).sum()
            (g,) = torch.autograd.grad(value, xg, allow_unused=True)
        except RuntimeError:
            g = None
        return torch.zeros_like(x) if g is None else torch.nan_to_num(g)

    exact, declared = gradient(model).flatten(1), gradient(bpda).flatten(1)
    cosine = F.cosine_similarity(exact.double(), declared.double(), dim=1, eps=1e-30)
    return float((cosine < min_cosine).double().mean())


@torch.no_grad()
def saturated_softmax(model: nn.Module, x: Tensor) -> float:
    """Share of samples whose float32 softmax is exactly one-hot (Carlini & Wagner 2016)."""
    with eval_mode(model):
        return float((model(x).float().softmax(1).amax(1) == 1.0).double().mean())


def silent_success(returned_success: Tensor, path_success: Tensor, attacked: Tensor) -> float:
    """Pintor et al.'s indicator 3: the share of attacked samples for which some point on the path was
    adversarial (inside the ball) but the returned point is not."""
    if not bool(attacked.any()):
        return 0.0
    return float((path_success & ~returned_success)[attacked].double().mean())


def incomplete(trace: Tensor, drop: float = LOSS_DROP, window: int = WINDOW) -> bool:
    """Pintor et al.'s indicator 4 on one sample's loss trace (to be minimized): the running minimum,
    rescaled to [0, 1] by its first and last values, fell by more than ``drop`` over the last ``window``
    queries."""
    if len(trace) <= window:
        return False
    running = torch.cummin(trace.double(), 0).values
    span = float(running[0] - running[-1])
    if span <= 0:
        return False
    return float(running[-1 - window] - running[-1]) / span > drop


def incomplete_optimization(traces: Sequence[Tensor], failed: Tensor) -> float:
    """The share of attacked samples the attack failed on whose loss trace was still falling (:func:`incomplete`)."""
    if len(traces) == 0:
        return 0.0
    flags = torch.tensor([bool(f) and incomplete(t) for t, f in zip(traces, failed.tolist(), strict=True)])
    return float(flags.double().mean())


def transfer_failure(surrogate_success: Tensor, target_success: Tensor, attacked: Tensor) -> float:
    """Pintor et al.'s indicator 5: the share of attacked samples whose transferred point fools the surrogate
    but not the target."""
    if not bool(attacked.any()):
        return 0.0
    return float((surrogate_success & ~target_success)[attacked].double().mean())


def unconstrained_failure(success: Tensor, attacked: Tensor) -> float:
    """Pintor et al.'s indicator 6: the share of attacked samples an eps = ∞ attack (best point of its path)
    still fails on."""
    if not bool(attacked.any()):
        return 0.0
    return float((~success)[attacked].double().mean())

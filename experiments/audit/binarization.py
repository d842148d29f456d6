"""The binarization test (Zimmermann et al. 2022): is the attack strong enough to find an adversarial example that
is known to exist?

For each audited sample x, the test builds a two-class problem whose answer is known, then runs the attack under
test on it (the paper's Sec. 3; the reference implementation's ``interior_boundary_discrimination_attack``):

1. **Points.** x itself and ``inner`` (49, their thermometer case study's; 999 in their others) inner points x + δ, δ uniform in the ball of radius η·ε with
   η = 1 − gap = 0.95 (L∞: δ ~ U[−ηε, ηε]^d; L2: uniform in the L2 ball), clipped to [0, 1] (which only moves a
   point towards x); and one boundary point x_b at distance exactly ε: L∞, a random corner x + ε·s,
   s ∈ {±1}^d (the case studies' ``sample_from_corners``), clipped; L2, a random direction u scaled so that
   ‖clip(x + t·u) − x‖₂ = ε (clipping-aware, by bisection). Label 0: x and the inner points; label 1: x_b.
2. **Readout.** φ: the frozen features of the defended model f at its last linear layer h (f = … ∘ h ∘ φ, h
   found by :func:`find_head`: timm's ``get_classifier()``, inside any wrapper; the model's outputs when there is
   none). An unpenalized logistic regression on φ of the points (their ``optimizer="sklearn"``) gives the
   two-class linear readout g(φ) = (−w·φ − c, w·φ + c); a problem is kept only if g separates every training
   point (their ``solution_goodness="perfect"``). A randomized model gives the clean and the boundary point
   :data:`REPEATS` draws each (their ``n_inference_repetitions``), and a defense that runs h on several passes of
   its input (mixup draws, an ensemble) one training row per pass.
3. **Decision boundary moved to x_b** (their ``decision_boundary_closeness`` κ = 0.999): with d = g₀ − g₁ and
   d_b < 0 the boundary point's (its least confident draw's), g₀ −= κ·d_b / 2 and g₁ += κ·d_b / 2: x_b keeps a
   margin (1 − κ)·|d_b|, every other training point a margin above κ·|d_b|.
4. **Rescaled logits** (their ``rescale_logits="adaptive"``): g ← g / s + o with s = range(g) / range(h(φ)) over
   the training points and o matching the minima: the binary logits span the range of the model's own, so a
   model whose softmax saturates passes the saturation on to its test.
5. **Attack.** The binarized model is f with h's output replaced by g (every other part of the defense's forward
   pass, its randomness included, as it is: :class:`Binarized`); the attack under test runs on it from x with
   label 0, untargeted, within ε. x_b is inside the ball and class 1 (checked on :data:`CHECKS` fresh forward
   passes; a problem failing the check is dropped, so is one whose readout does not separate): an adversarial
   example exists by construction, and an attack that misses it is too weak on this model. Success: the
   returned point, within ε and [0, 1], is class 1 on a fresh forward pass. The test's value is the attack's
   success rate over the problems.

The audit runs the test for its naive PGD (cross-entropy, the cascade's steps, no random start) and, when that
fails it, for its strongest remedy set: the naive PGD, margin-loss PGD with 4× steps and random restarts, EOT over the randomness
when the model is randomized, BPDA through the declared preprocessing, BPDA through the surrogate (its own last
layer replaced by the same readouts, when it takes features of the same size); per problem, success when any of
them succeeds, as the audit's worst case counts a sample.

Threshold (:data:`~advbridge.experiments.core.indicators.BINARIZATION_PASS`, 0.8; ours). The paper's logic: a
correct attack succeeds on every problem (an adversarial example is there, Sec. 3), the original evaluations of
11 of 13 defenses fail the test while the attacks that break them pass it (Sec. 5): a weak attack is one whose
test success rate falls well short of 1. A strong attack is not perfect on this hard test either (measured,
docs/audit.md: PGD on the undefended CNN 29 of 30 problems, BPDA through an approximate surrogate 9 of 10 on a
smoothing preprocessing), while the naive PGD on a masked defense scores 0 to 0.5. At the audit's default of
:data:`SAMPLES` problems, 0.8 tolerates one miss: an attack that misses one problem in ten passes with
probability 0.92, one that misses half of them fails with probability 0.81.

Differences from the reference implementation: one readout per sample fitted in-process (no data loaders), one
boundary point (their case studies' ``n_boundary_points=1``), no far-off points and no detector hooks (a model
with a reject class is read at its outputs); the decision boundary is moved to the least confident of a
randomized model's boundary draws.

References:
    Zimmermann, Brendel, Tramèr, Carlini. Increasing Confidence in Adversarial Robustness Evaluations. NeurIPS
    2022, Sec. 3 (the binarization test), Sec. 5 (case studies). https://arxiv.org/abs/2206.13991;
    google-research/active-adversarial-tests, ``active_tests/decision_boundary_binarization.py``
    (``_create_raw_data``: η = 0.95, corners; ``_train_logistic_regression_classifier``: the readout, closeness,
    adaptive rescaling; ``interior_boundary_discrimination_attack``), ``case_studies/evaluate_classifier.py``
    (``run_decision_boundary_binarization``: adaptive rescaling) and the case studies' scripts (999 inner points,
    49 for thermometer encoding, 1 boundary point, corners, closeness 0.999).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from advbridge.bridge.runner import eval_mode, seed_everything
from advbridge.experiments.audit.binarized import (
    CLOSENESS,
    Binarized,
    Head,
    Readouts,
    boundary_point,
    find_head,
    fit_readout,
    head_features,
    inner_points,
)
from advbridge.experiments.audit.results import AuditConfig
from advbridge.experiments.audit.systems import StraightThrough, declared_bpda
from advbridge.experiments.audit.tracker import PathTracker, distances, within
from advbridge.experiments.core.indicators import BINARIZATION_PASS
from advbridge.experiments.core.losses import margin_objective
from advbridge.experiments.core.restarts import pgd_restarts
from advbridge.experiments.defend.generative import eot_objective
from advbridge.own_attacks import pgd

log = logging.getLogger(__name__)

#: Problems the audit builds by default (its first clean-correct samples); inner points per problem (their
#: thermometer case study's 49, for the audit's cost; their other case studies use 999).
SAMPLES = AuditConfig.binarization_samples
INNER = AuditConfig.binarization_inner
#: Inner points lie within (1 − GAP)·ε (their ``relative_inner_boundary_gap``, η = 0.95).
GAP = 0.05
#: The test is passed at this success rate (module docstring).
THRESHOLD = BINARIZATION_PASS
#: Draws of the clean and the boundary point's features for a randomized model; fresh forward passes checked.
REPEATS = 20
CHECKS = 3
#: Step multiplier of the remedy's margin PGD (the audit's more-steps remedy).
MORE_STEPS = 4


# -- the test ----------------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """One attack on the problems: per problem success, each row's success rate and propagations per problem."""

    success: Tensor
    rows: dict[str, float] = field(default_factory=dict)
    propagations: float = 0.0
    seconds: float = 0.0
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return float(self.success.double().mean()) if len(self.success) else math.nan

    def to_dict(self) -> dict:
        return {"success_rate": self.rate, "rows": self.rows, "propagations_per_problem": self.propagations,
                "seconds": self.seconds, "errors": self.reasons}  # fmt: skip


Row = tuple[nn.Module, Callable[[nn.Module], Tensor]]


@dataclass
class BinarizationTest:
    """The problems of one audit (module docstring) and the attacks run on them.

    Args:
        model: the audited system; x, y: the samples to build problems on (its first clean-correct ones).
        config: the audit's threat model, steps, restarts, EOT draws, budget and seed.
        surrogate: the undefended twin (BPDA through its features, when its last layer takes the same
            features); inner: inner points per problem; closeness: step 3's κ.
    """

    model: nn.Module
    x: Tensor
    y: Tensor
    config: AuditConfig
    surrogate: nn.Module | None = None
    inner: int = INNER
    closeness: float = CLOSENESS

    def __post_init__(self) -> None:
        start = time.perf_counter()
        self.model.eval()
        with torch.no_grad():
            outputs = int(self.model(self.x[:1]).shape[1])
        self.head = find_head(self.model, outputs)
        self.randomized = self._randomized()
        self.reasons: list[str] = []
        self.construction_forwards = 0
        self._naive: Outcome | None = None
        self._remedied: Outcome | None = None
        weights, biases, kept, boundary = [], [], [], []
        generator = torch.Generator().manual_seed(self.config.seed)
        seed_everything(self.config.seed)
        with eval_mode(self.model):
            for i in range(len(self.x)):
                made = self._problem(self.x[i], generator)
                self.reasons.append(made if isinstance(made, str) else "")
                if isinstance(made, str):
                    continue
                weights.append(made[0])
                biases.append(made[1])
                boundary.append(made[2])
                kept.append(i)
        self.kept = torch.tensor(kept, dtype=torch.long)
        self.boundary = torch.stack(boundary) if boundary else self.x[:0]
        self.readouts = Readouts(torch.stack(weights), torch.stack(biases)) if kept else None
        if self.readouts is not None:
            self._check()
        self.construction_seconds = time.perf_counter() - start

    # -- construction --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _randomized(self) -> bool:
        probe = self.x[:4]
        with eval_mode(self.model):
            return not torch.equal(self.model(probe), self.model(probe))

    def _problem(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor] | str:
        config = self.config
        point = boundary_point(x.cpu(), config.eps, config.norm, generator)
        if point is None:
            return "no boundary point at eps inside [0, 1]"
        inner = inner_points(x.cpu(), self.inner, config.eps, config.norm, generator, 1 - GAP)
        repeats = REPEATS if self.randomized else 1
        points = torch.cat([x.cpu()[None].expand(repeats, *x.shape), inner, point[None].expand(repeats, *x.shape)])
        phi, logits, owner = head_features(self.model, self.head, points.to(x.device))
        self.construction_forwards += len(points)
        labels = (owner >= repeats + self.inner).long().numpy()
        fitted = fit_readout(phi.double().cpu().numpy(), labels, logits.double().cpu().numpy(), self.closeness)
        if fitted is None:
            return "the readout does not separate the boundary point from the inner points"
        weight, bias = fitted
        return torch.from_numpy(weight), torch.from_numpy(bias), point.to(x.device)

    @torch.no_grad()
    def _check(self) -> None:
        """Keep the problems whose clean point is class 0 and boundary point class 1 on fresh forward passes."""
        system = self.binarized()
        ok = torch.ones(len(self.kept), dtype=torch.bool)
        with eval_mode(system):
            for _ in range(CHECKS):
                ok &= (system(self.x[self.kept]).argmax(1) == 0).cpu() & (system(self.boundary).argmax(1) == 1).cpu()
        self.construction_forwards += 2 * CHECKS * len(self.kept)
        for position in torch.nonzero(~ok).flatten().tolist():
            self.reasons[int(self.kept[position])] = (
                "a fresh forward pass does not classify the clean point 0 and the boundary point 1"
            )
        if not bool(ok.all()):
            assert self.readouts is not None
            self.kept, self.boundary = self.kept[ok], self.boundary[ok]
            self.readouts = Readouts(self.readouts.weight[ok], self.readouts.bias[ok]) if bool(ok.any()) else None

    def binarized(self, model: nn.Module | None = None, head: Head | None = None) -> Binarized:
        """The kept problems' binarized model (``model`` with its ``head``: another system of the same
        features, e.g. the surrogate or a BPDA variant)."""
        assert self.readouts is not None, "no problem was built"
        return Binarized(model or self.model, head or self.head, self.readouts).eval()

    # -- attacks -------------------------------------------------------------------------------------------------
    @property
    def problems(self) -> int:
        return len(self.kept)

    def _run(
        self, module: nn.Module, judge: nn.Module, run: Callable[[nn.Module], Tensor]
    ) -> tuple[Tensor, float, str]:
        """Per problem success of ``run(tracked module)`` (its returned point, within ε, on a fresh forward pass
        of ``judge``), and propagations per problem reaching ``module``."""
        x = self.x[self.kept]
        zeros = torch.zeros(len(x), dtype=torch.long, device=x.device)
        tracker = PathTracker(module, x, zeros, norm=self.config.norm, eps=self.config.eps, budget=self.config.budget)
        seed_everything(self.config.seed)
        try:
            with eval_mode(module), tracker.record():
                x_adv = run(tracker)
        except Exception as exc:  # an attack that cannot run on this model fails every problem
            log.warning("binarization: the attack failed: %s", exc)
            return torch.zeros(len(x), dtype=torch.bool), float(tracker.propagations().double().mean()), (
                f"{type(exc).__name__}: {exc}")  # fmt: skip
        with torch.no_grad(), eval_mode(judge):
            hit = (judge(x_adv).argmax(1) == 1).cpu()
        inside = within(distances(x_adv - x, self.config.norm).double().cpu(), self.config.eps)
        in_range = ((x_adv.flatten(1).amin(1) >= 0) & (x_adv.flatten(1).amax(1) <= 1)).cpu()
        return hit & inside & in_range, float(tracker.propagations().double().mean()), ""

    def _outcome(self, rows: dict[str, Row]) -> Outcome:
        start = time.perf_counter()
        system = self.binarized()
        success = torch.zeros(self.problems, dtype=torch.bool)
        outcome = Outcome(success)
        for name, (module, run) in rows.items():
            hit, propagations, reason = self._run(module, system, run)
            outcome.rows[name] = float(hit.double().mean())
            outcome.propagations += propagations
            if reason:
                outcome.reasons[name] = reason
            success |= hit
        outcome.seconds = time.perf_counter() - start
        return outcome

    def naive(self) -> Outcome:
        """The audit's naive PGD (cross-entropy, the cascade's steps, no random start) on the problems."""
        if self._naive is None:
            if self.readouts is None:
                return Outcome(torch.zeros(0, dtype=torch.bool))
            config, x = self.config, self.x[self.kept]
            zeros = torch.zeros(len(x), dtype=torch.long, device=x.device)
            steps = config.fitted_steps()

            def run(tracked: nn.Module) -> Tensor:
                return pgd(tracked, x, zeros, eps=config.eps, norm=config.norm, steps=steps)

            self._naive = self._outcome({"pgd": (self.binarized(), run)})
        return self._naive

    def remedy_rows(self) -> dict[str, Row]:
        """The audit's strongest remedy set, on the problems (module docstring)."""
        config, x = self.config, self.x[self.kept]
        zeros = torch.zeros(len(x), dtype=torch.long, device=x.device)

        def margin_pgd(steps: int, eot: int = 1) -> Callable[[nn.Module], Tensor]:
            def run(tracked: nn.Module) -> Tensor:
                return pgd_restarts(
                    tracked, x, zeros, eps=config.eps, norm=config.norm, steps=steps, step_size=2.5 * config.eps / steps,
                    restarts=config.restarts, loss=eot_objective(margin_objective(tracked), eot), seed=config.seed,
                    clean_first=True,
                )  # fmt: skip

            return run

        if config.budget is None:
            long, eot_steps = MORE_STEPS * config.steps, config.steps
        else:
            long = config.fitted_steps(restarts=config.restarts)
            eot_steps = max(1, config.budget // (2 * config.eot * config.restarts) - 1)
        system = self.binarized()
        rows: dict[str, Row] = {"pgd-margin-4x": (system, margin_pgd(long))}
        if self.randomized:
            rows["pgd-margin-eot"] = (system, margin_pgd(eot_steps, config.eot))
        declared = declared_bpda(self.model)
        if declared is not None:
            head = self._same_head(declared)
            if head is not None:
                rows["pgd-margin-bpda"] = (self.binarized(declared, head), margin_pgd(long))
        if self.surrogate is not None:
            head = self._same_head(self.surrogate)
            if head is not None:
                hybrid = StraightThrough(system, self.binarized(self.surrogate.eval(), head)).eval()
                rows["pgd-margin-bpda-surrogate"] = (hybrid, margin_pgd(long))
        return rows

    def _same_head(self, other: nn.Module) -> Head | None:
        """``other``'s last layer, if it takes features of the model's size (the logits: if it has as many)."""
        with torch.no_grad():
            outputs = int(other.eval()(self.x[:1]).shape[1])
        head = find_head(other, outputs)
        if (head.module is None) != (self.head.module is None):
            return None
        if head.module is None:
            return head if outputs == int(self.model(self.x[:1]).shape[1]) else None
        mine, theirs = self.head.module, head.module
        same = getattr(mine, "in_features", None) == getattr(theirs, "in_features", None)
        return head if same else None

    def remedied(self) -> Outcome:
        """The naive PGD and the strongest remedy set (:meth:`remedy_rows`): per problem, success when any row
        succeeds (the audit's worst case is over its naive rows and its remedies' alike)."""
        if self._remedied is None:
            if self.readouts is None:
                return Outcome(torch.zeros(0, dtype=torch.bool))
            naive = self.naive()
            outcome = self._outcome(self.remedy_rows())
            outcome.success |= naive.success
            outcome.rows = {"pgd": naive.rows["pgd"], **outcome.rows}
            self._remedied = outcome
        return self._remedied

    # -- report --------------------------------------------------------------------------------------------------
    def reason(self) -> str:
        failed = len(self.x) - self.problems
        text = f"naive PGD success rate on {self.problems} binarized problems (features: input of {self.head.where})"
        if self.head.module is None:
            text = f"naive PGD success rate on {self.problems} binarized problems (features: {self.head.where})"
        if failed:
            text += f"; setup failed on {failed} of {len(self.x)}"
        return text

    def to_dict(self) -> dict:
        """Plain values for the audit's JSON."""
        naive, remedied = self._naive, self._remedied
        return {
            "samples": len(self.x), "problems": self.problems, "features": self.head.where,
            "randomized": self.randomized, "inner_points": self.inner, "gap": GAP, "closeness": self.closeness,
            "threshold": THRESHOLD, "setup_failures": [r for r in self.reasons if r],
            "naive": None if naive is None else naive.to_dict(),
            "remedied": None if remedied is None else remedied.to_dict(),
            "construction_forwards": self.construction_forwards,
            "construction_seconds": self.construction_seconds,
            "propagations": self.propagations(),
        }  # fmt: skip

    def propagations(self) -> float:
        """Every forward and backward pass the test spent (construction, naive and remedied attacks), in images."""
        attacks = sum(o.propagations * self.problems for o in (self._naive, self._remedied) if o is not None)
        return self.construction_forwards + attacks

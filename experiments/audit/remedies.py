"""The remedy of each raised indicator: the rows it adds to the audit, and the indicator measured again.

Each indicator of :data:`~advbridge.experiments.core.indicators.INDICATORS` that the audit can raise has one
remedy here, registered under its name with :func:`remedy_of`; :func:`apply_remedies` runs them in registration
order (cheap changes of the loss first, then BPDA, EOT, more steps, the best point of the path, the unbounded
run), each remedy row once however many indicators ask for it (:class:`Remedies`). A remedy is Pintor et al.'s
fix for their indicator (2022, Sec. 3: margin loss, BPDA, EOT, more steps and restarts, best point of the path,
eps = ∞ with the changed loss), AutoAttack's advice for its checks (Croce & Hein 2020), or Athalye et al.'s BPDA
(2018, Sec. 4.1) through a declared preprocessing or the surrogate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from advbridge.experiments.audit.cascade import Cascade
from advbridge.experiments.audit.results import NAIVE, AuditRow
from advbridge.experiments.audit.systems import LogOutputs, StraightThrough, declared_bpda, unbounded_eps
from advbridge.experiments.audit.tracker import within
from advbridge.experiments.core import indicators as ind
from advbridge.experiments.core.indicators import IndicatorResult
from advbridge.experiments.core.losses import margin_objective
from advbridge.experiments.defend.generative import eot_objective

if TYPE_CHECKING:
    from advbridge.experiments.audit.binarization import BinarizationTest

#: Step multiplier of the more-steps remedy.
MORE_STEPS = 4


@dataclass
class Evidence:
    """What the remedies read of the naive cascade: its ok rows, the samples attacked (clean-correct), and the
    Square gap of a set of rows (best white-box robust accuracy minus Square's)."""

    naive: list[AuditRow]
    attacked: Tensor
    square_gap: Callable[[Sequence[AuditRow]], float]
    binarization: BinarizationTest | None = None


class Remedies:
    """The remedy rows of the raised indicators, run once each (several indicators can share one)."""

    def __init__(self, cascade: Cascade, results: dict[str, IndicatorResult], evidence: Evidence) -> None:
        self.cascade, self.results, self.evidence = cascade, results, evidence
        self.done: dict[str, AuditRow] = {}
        self.declared = declared_bpda(cascade.model)

    def run(self, name: str, make: Callable[[], AuditRow], indicator: str) -> AuditRow:
        """The row ``name`` (made and added to the audit on first use), now also a remedy of ``indicator``."""
        if name not in self.done:
            row = make()
            self.done[name] = row
            self.cascade.rows.append(row)
        row = self.done[name]
        if indicator not in row.indicators:
            row.indicators = (*row.indicators, indicator)
        return row

    def margin_row(self, indicator: str) -> AuditRow:
        """Margin PGD on the model itself."""
        c = self.cascade
        return self.run("margin", lambda: c.own_row("pgd-margin", "own", "margin", c.margin_pgd(c.model)), indicator)

    def bpda_row(self, indicator: str) -> AuditRow:
        """Margin PGD through the BPDA variant the system declares."""
        c, declared = self.cascade, self.declared
        assert declared is not None
        return self.run("bpda", lambda: c.own_row(
            "pgd-margin-bpda", "own", "bpda", c.margin_pgd(declared), module=declared), indicator)  # fmt: skip

    def gradient_rows(self, indicator: str) -> list[AuditRow]:
        """Unavailable gradients: BPDA through a declared preprocessing, through the surrogate, a longer Square."""
        c, config = self.cascade, self.cascade.config
        rows = []
        if self.declared is not None:
            rows.append(self.bpda_row(indicator))
        if c.surrogate is not None:
            hybrid = StraightThrough(c.model, c.surrogate).eval()
            rows.append(self.run("bpda-surrogate", lambda: c.own_row(
                "pgd-margin-bpda-surrogate", "own", "bpda-surrogate", c.margin_pgd(hybrid), module=hybrid,
            ), indicator))  # fmt: skip
        if not rows:
            queries = 4 * config.square_queries if config.budget is None else config.budget
            rows.append(self.run("square-long", lambda: c.own_row(
                "square", "torchattacks", "square-long", c.square(queries)), indicator))  # fmt: skip
        return rows


Remedy = Callable[[Remedies, IndicatorResult], None]
#: The remedy of each indicator, in the order they run; :data:`AFTER_ALL`: re-measured once every remedy ran.
REMEDIES: dict[str, Remedy] = {}
AFTER_ALL: dict[str, Remedy] = {}


def remedy_of(*names: str, after_all: bool = False) -> Callable[[Remedy], Remedy]:
    """Register the decorated function as the remedy of the indicators ``names`` (keys of
    :data:`~advbridge.experiments.core.indicators.INDICATORS`); ``after_all``: it runs after every other remedy."""

    def register(function: Remedy) -> Remedy:
        for name in names:
            if name not in ind.INDICATORS:
                raise KeyError(f"no indicator {name!r}")
            (AFTER_ALL if after_all else REMEDIES)[name] = function
        return function

    return register


@remedy_of("unavailable_gradients", "zero_gradients")
def _gradients(r: Remedies, result: IndicatorResult) -> None:
    """The margin loss when its gradient is there (a saturated softmax), else BPDA / the surrogate / Square."""
    c = r.cascade
    if ind.margin_gradients_unavailable(c.model, c.x, c.y, c.reject) == 0:
        result.remedy = "margin loss (its gradient is there)"
        r.margin_row(result.name)
        result.after = 0.0
        return
    rows = r.gradient_rows(result.name)
    result.remedy = ", ".join(row.stage for row in rows)
    modules = [row.tracker.model for row in rows if row.tracker is not None and row.stage != "square-long"]
    if modules:
        result.after = min(ind.margin_gradients_unavailable(m, c.x, c.y, c.reject) for m in modules)


@remedy_of("bpda_disagreement")
def _bpda(r: Remedies, result: IndicatorResult) -> None:
    if r.declared is not None:
        r.bpda_row(result.name)
        result.remedy = "bpda"


@remedy_of("dynamic", "square_beats_white_box")
def _masking(r: Remedies, result: IndicatorResult) -> None:
    rows = r.gradient_rows(result.name)
    result.remedy = ", ".join(row.stage for row in rows)


@remedy_of("probability_outputs")
def _log_probabilities(r: Remedies, result: IndicatorResult) -> None:
    c = r.cascade
    logs = LogOutputs(c.model).eval()
    r.run("log-probabilities", lambda: c.own_row(
        "pgd-margin-logprob", "own", "log-probabilities", c.margin_pgd(logs), module=logs,
    ), result.name)  # fmt: skip


@remedy_of("saturated_softmax", "too_few_classes")
def _margin(r: Remedies, result: IndicatorResult) -> None:
    r.margin_row(result.name)


@remedy_of("randomized", "unstable_predictions")
def _eot(r: Remedies, result: IndicatorResult) -> None:
    """Margin PGD whose gradient is the mean over ``eot`` draws (Athalye et al. 2018, Sec. 4.3)."""
    c, config = r.cascade, r.cascade.config
    draws = config.eot

    def eot(tracked: nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
        return eot_objective(margin_objective(tracked, c.reject), draws)

    steps = None if config.budget is None else max(1, config.budget // (2 * draws * config.restarts) - 1)
    r.run("eot", lambda: c.own_row(
        "pgd-margin-eot", "own", "eot", c.margin_pgd(c.model, objective=eot, steps=steps),
    ), result.name)  # fmt: skip
    result.remedy = f"EOT over {draws} draws (margin loss)"


@remedy_of("incomplete_optimization", "single_step_gap")
def _more_steps(r: Remedies, result: IndicatorResult) -> None:
    c, config = r.cascade, r.cascade.config
    steps = MORE_STEPS * config.steps if config.budget is None else None
    row = r.run("more-steps", lambda: c.own_row(
        "pgd-margin-4x", "own", "more-steps", c.margin_pgd(c.model, steps=steps),
    ), result.name)  # fmt: skip
    if row.ok and result.name == "incomplete_optimization":
        assert row.tracker is not None and row.robust is not None
        result.after = ind.incomplete_optimization(row.tracker.loss_traces(), row.robust & r.evidence.attacked)


@remedy_of("silent_success")
def _best_of_path(r: Remedies, result: IndicatorResult) -> None:
    """Each budget row's best point of the path as a row of its own (no new queries)."""
    eps, attacked = r.cascade.config.eps, r.evidence.attacked
    naive = r.evidence.naive
    for row in [n for n in naive if n.tracker is not None and n.x_adv is not None and not n.minimal]:
        assert row.tracker is not None and row.robust is not None
        path = within(row.tracker.best_distance, eps)
        if bool((path & row.robust & attacked).any()):
            best = AuditRow(row.attack, row.library, "best-of-path", indicators=("silent_success",))
            best.forward, best.backward, best.seconds = row.forward, row.backward, row.seconds
            best.distance, best.robust = row.distance, row.robust & ~path
            r.cascade.rows.append(best)
    result.after = 0.0


@remedy_of("unconstrained_failure", "unbounded_incomplete")
def _unbounded(r: Remedies, result: IndicatorResult) -> None:
    """eps = ∞ margin PGD (through the surrogate when there is one), and the margin loss at the budget."""
    c = r.cascade
    unbounded = unbounded_eps(c.config.norm, c.x)
    module = StraightThrough(c.model, c.surrogate).eval() if c.surrogate is not None else c.model
    row = r.run("unbounded-margin", lambda: c.own_row(
        "pgd-margin-unbounded", "own", "unbounded-margin",
        c.margin_pgd(module, eps=unbounded), module=module, eps=unbounded,
    ), result.name)  # fmt: skip
    bounded = r.margin_row(result.name)  # the changed loss, at the budget too (Pintor et al.: the loss failed)
    success = [x.distance < math.inf for x in (row, bounded) if x.ok and x.distance is not None]
    if success:
        found = torch.stack(success).any(0)
        if not c.config.every_point:  # the cascade asked them only what no row broke: the rest have their example
            found = found | (c.clean & ~c.pending())
        result.after = ind.unconstrained_failure(found, r.evidence.attacked)


@remedy_of("failed_training")
def _failed_training(r: Remedies, result: IndicatorResult) -> None:
    """Nothing to remedy: the verdict says the model did not learn."""
    result.after = result.value


@remedy_of("transfer_failure")
def _transfer(r: Remedies, result: IndicatorResult) -> None:
    result.remedy = "attack the model itself: the white-box rows"


@remedy_of("binarization", after_all=True)
def _strongest(r: Remedies, result: IndicatorResult) -> None:
    """The binarization test again, for the naive PGD and the strongest remedy set on its problems (margin loss, 4x
    steps and restarts, EOT, BPDA through the declared preprocessing and through the surrogate): no rows of the
    audit, its problems are not the audited samples."""
    test = r.evidence.binarization
    if test is None:
        return
    outcome = test.remedied()
    result.after = outcome.rate
    result.remedy = ", ".join(outcome.rows) + " on the binarized problems"


@remedy_of("square_beats_white_box", after_all=True)
def _square_after(r: Remedies, result: IndicatorResult) -> None:
    """Square's gap measured again against every gradient row, the remedies' included."""
    rows = [row for row in r.cascade.rows if row.ok and row.stage != NAIVE and not row.minimal]
    remedy_rows = [row for row in rows if row.attack != "square"]
    result.after = r.evidence.square_gap([row for row in r.evidence.naive if not row.minimal] + remedy_rows)


def apply_remedies(cascade: Cascade, results: dict[str, IndicatorResult], evidence: Evidence) -> None:
    """Run the remedy of every raised indicator (module docstring) and measure it again where it allows."""
    remedies = Remedies(cascade, results, evidence)
    raised = [name for name, result in results.items() if result.raised]
    for registry in (REMEDIES, AFTER_ALL):
        for name, remedy in registry.items():
            if name in raised:
                remedy(remedies, results[name])

"""The audit: a cascade of attacks on one model, the indicators of their failure, and the remedies they call for.

Given a model (any ``nn.Module`` mapping [0, 1] images to scores: a plain classifier, a registered defense,
a user's defended system) and optionally its undefended twin (the surrogate), :func:`run_audit`

1. measures the model-level indicators (:mod:`~advbridge.experiments.audit.indicators`: AutoAttack's checks,
   Pintor et al.'s unavailable gradients and unstable predictions);
2. runs the *naive* cascade, every query through a
   :class:`~advbridge.experiments.audit.tracker.PathTracker`: FGSM and PGD from every library that has them,
   AutoAttack (standard), Square (black-box), transfer from the surrogate, the minimal-norm attacks (DeepFool,
   DDN) from every library, and an eps = ∞ PGD (Pintor et al.'s unconstrained check);
3. measures the attack-level indicators on those rows (silent success, incomplete optimization, transfer
   failure, unconstrained failure, Square beating the white-box attacks, a single step beating PGD);
4. runs the remedy of every raised indicator (:data:`~advbridge.experiments.audit.indicators.INDICATORS`):
   margin loss, log-probabilities, EOT, BPDA through a declared ``preprocess``, BPDA through the surrogate
   (forward: the model, backward: the twin), more steps and restarts, the best point of the path, an
   unbounded margin run — each a *remedy* row — and measures the indicator again where the remedy allows;
5. reports, per sample, the worst case over the naive rows (before) and over every row (after), and every
   row's optimality against the lower envelope of all rows (AttackBench, Cinà et al. 2025).

With a ``budget``, every row's result is its best point found within ``budget`` propagations per sample
(AttackBench's protocol; the tracker refuses the queries past it).

References:
    Croce & Hein. Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
    attacks. ICML 2020. https://arxiv.org/abs/2003.01690
    Pintor et al. Indicators of Attack Failure. NeurIPS 2022. https://arxiv.org/abs/2106.09947
    Athalye, Carlini, Wagner. Obfuscated Gradients Give a False Sense of Security. ICML 2018.
    Cinà et al. AttackBench. AAAI 2025. https://arxiv.org/abs/2404.19460
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from advbridge.bridge.adapters import get_adapter
from advbridge.bridge.errors import InvalidParameterError
from advbridge.bridge.runner import PassCounter, eval_mode, predict, run_attack, seed_everything, warm_up
from advbridge.bridge.spec import AttackSpec
from advbridge.defenses.preprocessor.bpda import BPDA
from advbridge.experiments.audit import indicators as ind
from advbridge.experiments.audit.tracker import PathTracker, distances, fooled, margin_loss, within
from advbridge.experiments.defend.generative import eot_objective
from advbridge.own_attacks import pgd

log = logging.getLogger(__name__)

#: Stage of the rows of the naive cascade (remedy rows carry their remedy's name).
NAIVE = "naive"
#: Step multiplier of the more-steps remedy.
MORE_STEPS = 4


@dataclass(frozen=True)
class AuditConfig:
    """The threat model and the cascade's budget.

    Args:
        norm: "Linf" or "L2"; eps: the ball's radius.
        steps: PGD iterations of the cascade (the libraries' and ours).
        budget: propagations (forward + backward) per sample and row; ``None``: unlimited.
        libraries: the attack libraries of the naive rows.
        restarts: random starts of the remedies' margin PGD; eot: draws per gradient of the EOT remedy.
        autoattack: run AutoAttack (standard, torchattacks) as a naive row.
        square_queries: queries per image of the Square row (capped by the budget).
        minimal: run the minimal-norm attacks (DeepFool, DDN).
        seed: seed of every random draw.
    """

    norm: str
    eps: float
    steps: int = 40
    budget: int | None = None
    libraries: Sequence[str] = ("own", "art", "foolbox", "torchattacks", "advlib")
    restarts: int = 5
    eot: int = 10
    autoattack: bool = True
    square_queries: int = 1000
    minimal: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "libraries", tuple(self.libraries))
        if self.norm not in ("Linf", "L2"):
            raise InvalidParameterError(f"expected norm Linf or L2, got {self.norm!r}")
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise InvalidParameterError(f"expected eps as a finite number > 0, got {self.eps!r}")
        for name in ("steps", "restarts", "eot", "square_queries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidParameterError(f"expected {name} >= 1 (an integer), got {value!r}")
        if self.budget is not None and (isinstance(self.budget, bool) or self.budget < 2):
            raise InvalidParameterError(f"expected budget >= 2 propagations per sample or None, got {self.budget!r}")

    def fitted_steps(self, per_step: int = 2, restarts: int = 1) -> int:
        """PGD steps that fit the budget (``per_step`` propagations a step, ``restarts`` runs), else ``steps``."""
        if self.budget is None:
            return self.steps
        return max(1, min(self.steps, self.budget // (per_step * restarts) - 1))


@dataclass
class AuditRow:
    """One attack's result on the audited model, per sample (CPU tensors).

    ``distance``: the smallest perturbation (``norm``) of an adversarial point the row found (the best point of
    its path; 0 for a sample misclassified before the attack; ``inf`` where it never succeeded); ``robust``:
    the sample is still correctly classified after the row (its returned point, or with a budget, its best
    point within the budget); ``indicators``: the indicators whose remedy the row is.
    """

    attack: str
    library: str
    stage: str
    status: str = "ok"
    reason: str = ""
    distance: Tensor | None = None
    robust: Tensor | None = None
    forward: Tensor | None = None
    backward: Tensor | None = None
    seconds: float = math.nan
    minimal: bool = False
    indicators: tuple[str, ...] = ()
    hook_forward: int = 0  # images through the attacked module's forward / backward, counted by the runner's
    hook_backward: int = 0  # PassCounter (module hooks), independently of the tracker
    tracker: PathTracker | None = field(default=None, repr=False)
    x_adv: Tensor | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        return f"{self.attack} | {self.library} | {self.stage}"

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.robust is not None


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

    @property
    def stayed_raised(self) -> bool:
        return self.raised and self.after is not None and ind.INDICATORS[self.name].raised(self.after)

    def to_dict(self) -> dict:
        return {
            "value": self.value, "threshold": self.threshold, "raised": self.raised,
            "remedy": self.remedy if self.raised else "", "source": self.source, "reason": self.reason,
            "value_after_remedy": self.after, "stayed_raised": self.stayed_raised,
            "robust_accuracy_before": self.robust_before, "robust_accuracy_after": self.robust_after,
        }  # fmt: skip


@dataclass
class Audit:
    """Everything :func:`run_audit` found."""

    config: AuditConfig
    clean: Tensor
    rows: list[AuditRow]
    indicators: dict[str, IndicatorResult]
    num_classes: int
    seconds: float = math.nan  # wall time of the whole audit (indicators, cascade, remedies)

    def cost(self) -> dict:
        """What the audit cost: propagations per sample (forward + backward reaching the model, summed over the
        rows) and wall time, and AutoAttack's alone (its row) on the same model and images."""
        rows = [r for r in self.rows if r.ok and r.stage != "best-of-path"]  # best-of-path reuses its row's run
        autoattack = next((r for r in rows if r.attack == "autoattack"), None)
        return {
            "propagations_per_sample": sum(float((r.forward + r.backward).double().mean()) for r in rows),
            "seconds": self.seconds,
            "autoattack_propagations_per_sample": None if autoattack is None
            else float((autoattack.forward + autoattack.backward).double().mean()),
            "autoattack_seconds": None if autoattack is None else autoattack.seconds,
        }  # fmt: skip

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean.double().mean())

    def worst_case(self, stages: Sequence[str] | None = None, keep: Callable[[AuditRow], bool] | None = None) -> Tensor:
        """Per sample: still correct under every ok row (of ``stages``, ``None``: all; and ``keep(row)``)."""
        robust = self.clean.clone()
        for row in self.rows:
            if row.ok and (stages is None or row.stage in stages) and (keep is None or keep(row)):
                robust &= row.robust
        return robust

    @property
    def robust_before(self) -> float:
        return float(self.worst_case([NAIVE]).double().mean())

    @property
    def robust_after(self) -> float:
        return float(self.worst_case().double().mean())

    @property
    def robust_white_box(self) -> float:
        """Worst case over the naive rows that attack the model with its own gradients only (:func:`is_white_box`):
        what an evaluation without transfer, black-box attacks or remedies would report."""
        return float(self.worst_case([NAIVE], keep=is_white_box).double().mean())

    @property
    def best_single(self) -> AuditRow | None:
        ok = [r for r in self.rows if r.ok]
        return min(ok, key=lambda r: float(r.robust.double().mean())) if ok else None

    @property
    def stayed_raised(self) -> list[str]:
        return [name for name, result in self.indicators.items() if result.stayed_raised]


class StraightThrough(nn.Module):
    """BPDA with the surrogate as the differentiable approximation of the whole system (Athalye et al. 2018,
    Sec. 4.1, generalized): forward, the system's outputs; backward, the surrogate's gradient."""

    def __init__(self, system: nn.Module, surrogate: nn.Module) -> None:
        super().__init__()
        self.system, self.surrogate = system, surrogate

    def forward(self, x: Tensor) -> Tensor:
        approx = self.surrogate(x)
        with torch.no_grad():
            exact = self.system(x.detach()).to(approx.dtype)
        if exact.shape[1] > approx.shape[1]:  # a detector's reject logit: no gradient from the surrogate
            approx = torch.nn.functional.pad(approx, (0, exact.shape[1] - approx.shape[1]))
        return approx + (exact - approx).detach()


class LogOutputs(nn.Module):
    """log of a model's probability outputs (clamped at 1e-30): logits up to a constant per row."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).clamp_min(1e-30).log()


def _unbounded_eps(norm: str, x: Tensor) -> float:
    """An eps no perturbation inside [0, 1] exceeds: 1 (L∞) or √d (L2)."""
    return 1.0 if norm == "Linf" else math.sqrt(x[0].numel())


class Cascade:
    """Runs the rows of one audit (module docstring); :func:`run_audit` is the entry point."""

    def __init__(
        self, model: nn.Module, x: Tensor, y: Tensor, num_classes: int, config: AuditConfig,
        surrogate: nn.Module | None, show_progress: bool,
    ) -> None:  # fmt: skip
        self.model, self.x, self.y, self.num_classes, self.config = model, x, y, num_classes, config
        self.surrogate, self.show_progress = surrogate, show_progress
        self.reject: int | None = getattr(model, "reject_class", None)  # a detector's: fooled = wrong and not it
        self.outputs = num_classes + (self.reject is not None)  # the logits the libraries see
        self.clean = (predict(model, x) == y).cpu()
        self.rows: list[AuditRow] = []

    # -- rows -------------------------------------------------------------------------------------------------
    def tracker(self, module: nn.Module, eps: float) -> PathTracker:
        return PathTracker(
            module, self.x, self.y, norm=self.config.norm, eps=eps, budget=self.config.budget, reject=self.reject
        )

    def finish(self, row: AuditRow, tracker: PathTracker, x_adv: Tensor | None, eps: float) -> AuditRow:
        """The row's per-sample results from its returned points and its tracker (module docstring)."""
        row.forward, row.backward = tracker.forwards.clone(), tracker.backwards.clone()
        row.tracker = tracker
        path = tracker.best_distance.clone()
        if x_adv is not None and self.config.budget is None:  # with a budget: its best point within it (AttackBench)
            now = fooled(predict(self.model, x_adv), self.y, self.reject).cpu()
            returned = distances(x_adv - self.x, self.config.norm).double().cpu()
            fooled_within = now & within(returned, eps)
            path = torch.where(fooled_within, torch.minimum(path, returned), path)
            row.x_adv = x_adv.detach().cpu()
        row.distance = torch.where(self.clean, path, torch.zeros_like(path))
        if x_adv is None or self.config.budget is not None or eps > self.config.eps:
            # the best point within the budget, or a larger ball's points judged at eps
            row.robust = self.clean & ~within(row.distance, self.config.eps)
        else:
            row.robust = self.clean & ~fooled_within
        return row

    def library_row(self, library: str, spec: AttackSpec, stage: str = NAIVE) -> AuditRow:
        eps = math.inf if spec.minimal else spec.eps
        tracker = self.tracker(self.model, eps)
        row = AuditRow(spec.attack, library, stage, minimal=spec.minimal)
        result = run_attack(library, tracker, self.x, self.y, spec, num_classes=self.outputs, during=tracker.record)
        row.seconds = result.seconds
        row.hook_forward, row.hook_backward = result.forward_images, result.backward_images
        if result.status != "ok":
            row.status, row.reason = result.status, result.reason
            return row
        return self.finish(row, tracker, result.x_adv.to(self.x.device), eps)

    def own_row(
        self, attack: str, library: str, stage: str, run: Callable[[nn.Module], Tensor], *,
        module: nn.Module | None = None, eps: float | None = None, indicators: tuple[str, ...] = (),
    ) -> AuditRow:  # fmt: skip
        """A row whose attack is ``run(tracked module) -> x_adv``, on ``module`` (default: the model)."""
        eps = self.config.eps if eps is None else eps
        tracker = self.tracker(self.model if module is None else module, eps)
        row = AuditRow(attack, library, stage, minimal=math.isinf(eps), indicators=indicators)
        seed_everything(self.config.seed)
        counter = PassCounter().attach(tracker)
        start = time.perf_counter()
        try:
            with eval_mode(tracker), tracker.record():
                x_adv = run(tracker).detach()
        except Exception as exc:  # an attack that cannot run on this model is a row, not a crash
            log.warning("%s (%s) failed: %s", attack, stage, exc)
            row.status, row.reason = "error", f"{type(exc).__name__}: {exc}"
            return row
        finally:
            counter.detach()
        row.seconds = time.perf_counter() - start
        row.hook_forward, row.hook_backward = counter.forward_images, counter.backward_images
        return self.finish(row, tracker, x_adv, eps)

    def margin_pgd(
        self, module: nn.Module, *, steps: int | None = None, restarts: int | None = None, eps: float | None = None,
        objective: Callable[[nn.Module], Callable[[Tensor, Tensor], Tensor]] | None = None,
    ) -> Callable[[nn.Module], Tensor]:  # fmt: skip
        """PGD ascending the margin loss of the tracked ``module`` (or ``objective(tracked)``), from random
        restarts; each sample keeps its first successful restart (its best point is in the tracker anyway)."""
        config = self.config
        eps = config.eps if eps is None else eps
        restarts = config.restarts if restarts is None else restarts
        steps = steps or config.fitted_steps(restarts=restarts)
        step_size = 2.5 * eps / steps

        reject = self.reject

        def run(tracked: nn.Module) -> Tensor:
            loss = objective(tracked) if objective else (lambda x, y: -margin_loss(tracked(x), y, reject))
            best, found = self.x.clone(), torch.zeros(len(self.x), dtype=torch.bool, device=self.x.device)
            for restart in range(restarts):
                generator = torch.Generator(device=self.x.device).manual_seed(config.seed + restart)
                x_r = pgd(
                    tracked, self.x, self.y, eps=eps, norm=config.norm, steps=steps, step_size=step_size,
                    random_start=restart > 0, generator=generator, loss=loss,
                    success=lambda x, y: fooled(tracked(x).argmax(1), y, reject),
                )  # fmt: skip
                with torch.no_grad():
                    now = fooled(tracked(x_r).argmax(1), self.y, reject) & ~found
                best = torch.where(now.view(-1, *[1] * (x_r.dim() - 1)), x_r, best)
                found |= now
                if bool(found.all()):
                    break
            return best

        return run

    # -- the naive cascade ------------------------------------------------------------------------------------
    def naive(self) -> None:
        config, progress = self.config, []
        for library in config.libraries:
            progress += [(library, "fgsm"), (library, "pgd")]
        rows = tqdm(progress, desc="audit: budget attacks", disable=not self.show_progress, leave=False)
        for library, attack in rows:
            steps = 1 if attack == "fgsm" else config.fitted_steps()
            spec = AttackSpec(attack=attack, norm=config.norm, eps=config.eps, steps=steps, seed=config.seed)
            if attack == "fgsm" and config.norm != "Linf":
                spec = AttackSpec(attack="pgd", norm=config.norm, eps=config.eps, steps=1, step_size=config.eps)
            row = self.library_row(library, spec)
            row.attack = "fgsm" if attack == "fgsm" else "pgd"
            self.rows.append(row)
        if config.autoattack and self.num_classes >= 3:
            self.rows.append(self.own_row("autoattack", "torchattacks", NAIVE, self.autoattack))
        queries = config.square_queries if config.budget is None else min(config.square_queries, config.budget)
        self.rows.append(self.own_row("square", "torchattacks", NAIVE, self.square(queries)))
        if self.surrogate is not None:
            self.rows.append(self.transfer_row())
        if config.minimal:
            minimal = [("deepfool", config.norm)] + ([("ddn", "L2")] if config.norm == "L2" else [])
            for library in config.libraries:
                for attack, norm in minimal:
                    spec = AttackSpec(attack=attack, norm=norm, seed=config.seed)
                    row = self.library_row(library, spec)
                    if row.status != "unsupported":
                        self.rows.append(row)
        unbounded = _unbounded_eps(config.norm, self.x)
        self.unbounded = self.own_row(
            "pgd-unbounded", "own", NAIVE, lambda m: pgd(
                m, self.x, self.y, eps=unbounded, norm=config.norm, steps=config.fitted_steps(),
            ), eps=unbounded,
        )  # fmt: skip

    def autoattack(self, tracked: nn.Module) -> Tensor:
        adapter = get_adapter("torchattacks")
        return adapter.autoattack(
            tracked, self.x, self.y, norm=self.config.norm, eps=self.config.eps, num_classes=self.outputs,
            seed=self.config.seed,
        )  # fmt: skip

    def square(self, queries: int) -> Callable[[nn.Module], Tensor]:
        def run(tracked: nn.Module) -> Tensor:
            adapter = get_adapter("torchattacks")
            return adapter.square(
                tracked, self.x, self.y, norm=self.config.norm, eps=self.config.eps, queries=queries,
                seed=self.config.seed,
            )  # fmt: skip

        return run

    def transfer_row(self) -> AuditRow:
        """PGD (cross-entropy, the cascade's steps) on the surrogate, the points fed to the model."""
        config = self.config
        row = AuditRow("pgd-transfer", "own", NAIVE)
        surrogate = self.surrogate
        start = time.perf_counter()
        seed_everything(config.seed)
        with eval_mode(surrogate):
            x_adv = pgd(surrogate, self.x, self.y, eps=config.eps, norm=config.norm, steps=config.steps)
        row.seconds = time.perf_counter() - start
        self.surrogate_success = (predict(surrogate, x_adv) != self.y).cpu()
        tracker = self.tracker(self.model, config.eps)  # no query reaches the model during the attack
        return self.finish(row, tracker, x_adv, config.eps)


class Remedies:
    """The remedy rows of the raised indicators, run once each (several indicators can share one)."""

    def __init__(self, cascade: Cascade) -> None:
        self.cascade = cascade
        self.done: dict[str, AuditRow] = {}

    def run(self, name: str, make: Callable[[], AuditRow], indicator: str) -> AuditRow:
        if name not in self.done:
            row = make()
            self.done[name] = row
            self.cascade.rows.append(row)
        row = self.done[name]
        if indicator not in row.indicators:
            row.indicators = (*row.indicators, indicator)
        return row


def run_audit(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    config: AuditConfig,
    *,
    num_classes: int | None = None,
    surrogate: nn.Module | None = None,
    show_progress: bool = False,
) -> Audit:
    """Audit ``model`` on ``(x, y)`` under ``config`` (module docstring): the naive cascade, the indicators,
    the remedies of the raised ones, per-sample results of every row."""
    start = time.perf_counter()
    model.eval()
    if surrogate is not None:
        surrogate.eval()
    if num_classes is None:
        with torch.no_grad():
            num_classes = int(model(x[:1]).shape[1])
    try:
        warm_up(model, x, y)
    except RuntimeError:  # a model whose graph does not reach the input: the indicators say so
        pass
    cascade = Cascade(model, x, y, num_classes, config, surrogate, show_progress)
    attacked = cascade.clean.clone()
    measured: dict[str, tuple[float, str]] = {}

    def measure(name: str, value: float, reason: str = "") -> None:
        measured[name] = (value, reason)

    measure("randomized", ind.randomized(model, x, y), "L2 distance of normalized outputs over 5 passes")
    measure("probability_outputs", ind.probability_outputs(model, x), "share of rows that are probability vectors")
    measure("zero_gradients", ind.zero_gradients(model, x, y, num_classes), "share of samples with zero DLR gradient")
    measure("dynamic", ind.dynamic(model, x), "autograd calls inside one forward pass")
    measure("too_few_classes", float(num_classes), "number of classes (DLR needs >= 3)")
    measure("unavailable_gradients", ind.unavailable_gradients(model, x, y), "share of samples with no CE gradient")
    measure("unstable_predictions", ind.unstable_predictions(model, x, y, seed=config.seed, reject=cascade.reject),
            "mean relative change of the margin loss under U[-4/255, 4/255] noise")  # fmt: skip
    measure("saturated_softmax", ind.saturated_softmax(model, x), "share of samples whose softmax is one-hot")
    declared = declared_bpda(model)
    if declared is not None:
        measure("bpda_disagreement", ind.bpda_disagreement(model, declared, x, y, cascade.reject),
                "share of samples whose gradient differs from the declared BPDA variant's (cosine < 0.9)")  # fmt: skip
    clean_accuracy = float(cascade.clean.double().mean())
    measure(
        "failed_training", clean_accuracy - 1 / num_classes, f"clean accuracy {clean_accuracy:.4f} - 1/{num_classes}"
    )

    cascade.naive()
    naive = [r for r in cascade.rows if r.ok]
    budget_rows = [r for r in naive if not r.minimal and r.attack not in ("pgd-transfer",)]
    # silent success: the best point of the path was adversarial, the returned one not
    silent = {
        r.key: ind.silent_success(~r.robust, within(r.tracker.best_distance, config.eps), attacked)
        for r in budget_rows
        if r.tracker is not None and r.x_adv is not None
    }
    worst_silent = max(silent, key=silent.get) if silent else ""
    measure("silent_success", silent.get(worst_silent, 0.0), f"worst row: {worst_silent}" if silent else "")
    pgd_rows = [r for r in budget_rows if r.attack == "pgd" and r.tracker is not None]
    incomplete = {r.key: ind.incomplete_optimization(r.tracker.loss_traces(), r.robust & attacked) for r in pgd_rows}
    worst_incomplete = max(incomplete, key=incomplete.get) if incomplete else ""
    measure("incomplete_optimization", incomplete.get(worst_incomplete, 0.0),
            f"worst row: {worst_incomplete}" if incomplete else "")  # fmt: skip
    transfer = next((r for r in naive if r.attack == "pgd-transfer"), None)
    if transfer is not None:
        measure("transfer_failure", ind.transfer_failure(cascade.surrogate_success, ~transfer.robust, attacked),
                "share fooling the surrogate but not the model")  # fmt: skip
    unbounded = cascade.unbounded
    if unbounded.ok:
        measure("unconstrained_failure", ind.unconstrained_failure(unbounded.distance < math.inf, attacked),
                "share an eps = inf PGD (cross-entropy) never fooled")  # fmt: skip
    else:
        measure("unconstrained_failure", 1.0, f"the eps = inf PGD failed: {unbounded.reason}")
    white = [r for r in budget_rows if r.attack not in ("square", "autoattack")]  # AutoAttack runs Square too
    square = next((r for r in naive if r.attack == "square"), None)

    def square_gap(rows: Sequence[AuditRow]) -> float:
        if square is None or not rows:
            return math.nan
        best = min(float(r.robust.double().mean()) for r in rows)
        return best - float(square.robust.double().mean())

    measure("square_beats_white_box", square_gap(white), "best white-box robust accuracy minus Square's")
    gaps = {}
    for library in config.libraries:
        one = next((r for r in naive if r.library == library and r.attack == "fgsm"), None)
        many = next((r for r in naive if r.library == library and r.attack == "pgd"), None)
        if one is not None and many is not None:
            gaps[library] = float(many.robust.double().mean()) - float(one.robust.double().mean())
    measure(
        "single_step_gap", max(gaps.values()) if gaps else math.nan, "PGD robust accuracy minus FGSM's, worst library"
    )
    minimal_rows = [r for r in naive if r.minimal and r.attack in ("deepfool", "ddn")]
    measure("unbounded_incomplete",
            max((ind.unconstrained_failure(r.distance < math.inf, attacked) for r in minimal_rows), default=math.nan),
            "1 - success of the minimal-norm attacks, worst row")  # fmt: skip

    results = {
        name: IndicatorResult(
            name,
            value,
            ind.INDICATORS[name].threshold,
            ind.INDICATORS[name].raised(value),
            ind.INDICATORS[name].remedy,
            ind.INDICATORS[name].source,
            reason,
        )  # fmt: skip
        for name, (value, reason) in measured.items()
    }
    _remedy(cascade, results, naive, attacked, square_gap)
    audit = Audit(config, cascade.clean, cascade.rows, results, num_classes)
    audit.seconds = time.perf_counter() - start
    # before -> after of each remedy: the naive white-box rows (the gradient attacks on the model itself), then
    # with the remedy's rows: the gap each indicator explains
    before = audit.robust_white_box
    for result in results.values():
        if result.raised:

            def mine(row: AuditRow, name: str = result.name) -> bool:
                return is_white_box(row) or name in row.indicators

            result.robust_before = before
            result.robust_after = float(audit.worst_case(keep=mine).double().mean())
    return audit


def declared_bpda(model: nn.Module) -> nn.Module | None:
    """The BPDA variant a system declares: its own ``bpda`` module (a detector's), or ``classifier(BPDA(preprocess))``
    for a system that declares ``preprocess`` and ``classifier``; ``None`` when it declares neither."""
    own = getattr(model, "bpda", None)
    if isinstance(own, nn.Module):
        return own.eval()
    parts = [getattr(model, name, None) for name in ("preprocess", "classifier")]
    if all(isinstance(p, nn.Module) for p in parts):
        return nn.Sequential(BPDA(parts[0]), parts[1]).eval()
    return None


def is_white_box(row: AuditRow) -> bool:
    """A naive row that attacks the model itself with its gradients only: not transfer, not the black-box Square,
    not AutoAttack (whose ensemble ends with Square)."""
    return row.stage == NAIVE and row.attack not in ("pgd-transfer", "square", "autoattack")


def _remedy(cascade: Cascade, results: dict[str, IndicatorResult], naive, attacked: Tensor, square_gap) -> None:
    """Run the remedies of the raised indicators (module docstring, step 4) and measure again."""
    config, model, surrogate = cascade.config, cascade.model, cascade.surrogate
    remedies = Remedies(cascade)
    raised = {name for name, r in results.items() if r.raised}
    declared = declared_bpda(model)

    def margin_row(indicator: str) -> AuditRow:
        return remedies.run("margin", lambda: cascade.own_row(
            "pgd-margin", "own", "margin", cascade.margin_pgd(model)), indicator)  # fmt: skip

    def bpda_row(indicator: str) -> AuditRow:
        """Margin PGD through the BPDA variant the system declares."""
        return remedies.run("bpda", lambda: cascade.own_row(
            "pgd-margin-bpda", "own", "bpda", cascade.margin_pgd(declared), module=declared), indicator)  # fmt: skip

    def gradient_rows(indicator: str) -> list[AuditRow]:
        """Unavailable gradients: BPDA through a declared preprocessing, through the surrogate, a longer Square."""
        rows = []
        if declared is not None:
            rows.append(bpda_row(indicator))
        if surrogate is not None:
            hybrid = StraightThrough(model, surrogate).eval()
            rows.append(remedies.run("bpda-surrogate", lambda: cascade.own_row(
                "pgd-margin-bpda-surrogate", "own", "bpda-surrogate", cascade.margin_pgd(hybrid), module=hybrid,
            ), indicator))  # fmt: skip
        if not rows:
            queries = 4 * config.square_queries if config.budget is None else config.budget
            rows.append(remedies.run("square-long", lambda: cascade.own_row(
                "square", "torchattacks", "square-long", cascade.square(queries)), indicator))  # fmt: skip
        return rows

    for name in ("unavailable_gradients", "zero_gradients"):
        if name in raised:
            if ind.margin_gradients_unavailable(model, cascade.x, cascade.y, cascade.reject) == 0:
                results[name].remedy = "margin loss (its gradient is there)"
                margin_row(name)
                results[name].after = 0.0
            else:
                rows = gradient_rows(name)
                results[name].remedy = ", ".join(r.stage for r in rows)
                modules = [r.tracker.model for r in rows if r.tracker is not None and r.stage != "square-long"]
                if modules:
                    results[name].after = min(
                        ind.margin_gradients_unavailable(m, cascade.x, cascade.y, cascade.reject) for m in modules
                    )
    if "bpda_disagreement" in raised and declared is not None:
        bpda_row("bpda_disagreement")
        results["bpda_disagreement"].remedy = "bpda"
    for name in ("dynamic", "square_beats_white_box"):
        if name in raised:
            rows = gradient_rows(name)
            results[name].remedy = ", ".join(r.stage for r in rows)
    if "probability_outputs" in raised:
        logs = LogOutputs(model).eval()
        remedies.run("log-probabilities", lambda: cascade.own_row(
            "pgd-margin-logprob", "own", "log-probabilities", cascade.margin_pgd(logs), module=logs,
        ), "probability_outputs")  # fmt: skip
    for name in ("saturated_softmax", "too_few_classes"):
        if name in raised:
            margin_row(name)
    if raised & {"randomized", "unstable_predictions"}:
        draws = config.eot

        def eot(tracked: nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
            return eot_objective(lambda x, y: -margin_loss(tracked(x), y, cascade.reject), draws)

        steps = None if config.budget is None else max(1, config.budget // (2 * draws * config.restarts) - 1)
        for name in ("randomized", "unstable_predictions"):
            if name in raised:
                remedies.run("eot", lambda: cascade.own_row(
                    "pgd-margin-eot", "own", "eot", cascade.margin_pgd(model, objective=eot, steps=steps),
                ), name)  # fmt: skip
                results[name].remedy = f"EOT over {draws} draws (margin loss)"
    if raised & {"incomplete_optimization", "single_step_gap"}:
        steps = MORE_STEPS * config.steps if config.budget is None else None
        for name in ("incomplete_optimization", "single_step_gap"):
            if name in raised:
                row = remedies.run("more-steps", lambda: cascade.own_row(
                    "pgd-margin-4x", "own", "more-steps", cascade.margin_pgd(model, steps=steps),
                ), name)  # fmt: skip
                if row.ok and name == "incomplete_optimization":
                    results[name].after = ind.incomplete_optimization(row.tracker.loss_traces(), row.robust & attacked)
    if "silent_success" in raised:
        for row in [r for r in naive if r.tracker is not None and r.x_adv is not None and not r.minimal]:
            path = within(row.tracker.best_distance, config.eps)
            if bool((path & row.robust & attacked).any()):
                best = AuditRow(row.attack, row.library, "best-of-path", indicators=("silent_success",))
                best.forward, best.backward, best.seconds = row.forward, row.backward, row.seconds
                best.distance, best.robust = row.distance, row.robust & ~path
                cascade.rows.append(best)
        results["silent_success"].after = 0.0
    if raised & {"unconstrained_failure", "unbounded_incomplete"}:
        unbounded = _unbounded_eps(config.norm, cascade.x)
        module = StraightThrough(model, surrogate).eval() if surrogate is not None else model
        for name in ("unconstrained_failure", "unbounded_incomplete"):
            if name in raised:
                row = remedies.run("unbounded-margin", lambda: cascade.own_row(
                    "pgd-margin-unbounded", "own", "unbounded-margin",
                    cascade.margin_pgd(module, eps=unbounded), module=module, eps=unbounded,
                ), name)  # fmt: skip
                bounded = margin_row(name)  # the changed loss, at the budget too (Pintor et al.: the loss failed)
                success = [r.distance < math.inf for r in (row, bounded) if r.ok]
                if success:
                    results[name].after = ind.unconstrained_failure(torch.stack(success).any(0), attacked)
    if "square_beats_white_box" in raised:
        remedy_rows = [r for r in cascade.rows if r.ok and r.stage != NAIVE and not r.minimal and r.attack != "square"]
        results["square_beats_white_box"].after = square_gap([r for r in naive if not r.minimal] + remedy_rows)
    if "failed_training" in raised:  # nothing to remedy: the verdict says the model did not learn
        results["failed_training"].after = results["failed_training"].value
    if "transfer_failure" in raised:
        results["transfer_failure"].remedy = "attack the model itself: the white-box rows"

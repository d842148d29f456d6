"""What an audit holds: its threshold model and budget (:class:`AuditConfig`), one attack's per-sample result
(:class:`AuditRow`), and everything :func:`~advbridge.experiments.audit.engine.run_audit` found (:class:`Audit`),
with its worst cases (:func:`~advbridge.experiments.core.reductions.worst_case_robust`) and its cost."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from torch import Tensor

from advbridge.bridge.errors import InvalidParameterError
from advbridge.experiments.audit.tracker import PathTracker
from advbridge.experiments.core.indicators import IndicatorResult
from advbridge.experiments.core.reductions import worst_case_robust

#: Stage of the rows of the naive cascade (remedy rows carry their remedy's name).
NAIVE = "naive"


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
        every_point: every row attacks every sample (agreement studies); default: the cascade, each row on the
            samples no earlier row broke (:class:`~advbridge.experiments.audit.cascade.Cascade`).
        versus_autoattack: also run AutoAttack standard alone on every sample, apart from the audit (its
            robust accuracy and cost beside the audit's on the card).
        binarization_samples: problems of the binarization test (Zimmermann et al. 2022), built on the first
            clean-correct samples; 0: no test. binarization_inner: inner points of each problem.
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
    every_point: bool = False
    versus_autoattack: bool = False
    binarization_samples: int = 5
    binarization_inner: int = 49

    def __post_init__(self) -> None:
        object.__setattr__(self, "libraries", tuple(self.libraries))
        if self.norm not in ("Linf", "L2"):
            raise InvalidParameterError(f"expected norm Linf or L2, got {self.norm!r}")
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise InvalidParameterError(f"expected eps as a finite number > 0, got {self.eps!r}")
        for name in ("steps", "restarts", "eot", "square_queries", "binarization_inner"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidParameterError(f"expected {name} >= 1 (an integer), got {value!r}")
        samples = self.binarization_samples
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
            raise InvalidParameterError(f"expected binarization_samples >= 0 (an integer), got {samples!r}")
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
    point within the budget); ``indicators``: the indicators whose remedy the row is; ``asked``: the samples it
    attacked (the cascade's still-robust ones; one it did not attack has ``robust`` true and ``distance`` nan).
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
    asked: Tensor | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        return f"{self.attack} | {self.library} | {self.stage}"

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.robust is not None

    @property
    def robust_accuracy(self) -> float:
        """An ok row's share of samples still correctly classified."""
        assert self.robust is not None, "only an ok row has a robust accuracy"
        return float(self.robust.double().mean())

    @property
    def propagations_per_sample(self) -> float:
        """An ok row's mean forward + backward propagations per sample (:meth:`~advbridge.experiments.audit.cascade.Cascade.finish`
        counts both)."""
        assert self.forward is not None and self.backward is not None, "only an ok row has propagations"
        return float((self.forward + self.backward).double().mean())


@dataclass
class Audit:
    """Everything :func:`run_audit` found."""

    config: AuditConfig
    clean: Tensor
    rows: list[AuditRow]
    indicators: dict[str, IndicatorResult]
    num_classes: int
    seconds: float = math.nan  # wall time of the whole audit (indicators, cascade, remedies)
    warnings: list[str] = field(default_factory=list)  # one line each, on the card (e.g. normalization_hint)
    model_propagations: int = 0  # every forward + backward image through the model during the audit (PassCounter)
    autoattack_alone: dict | None = None  # AutoAttack standard alone on the same model and images (versus_autoattack)

    def cost(self) -> dict:
        """What the audit cost: propagations per sample (forward + backward reaching the model, summed over the
        rows' attacks; ``model_propagations_per_sample``: every pass through the model, the indicators', the
        runner's checks' and the binarization test's too) and wall time, and AutoAttack's alone on the same model
        and images (``versus_autoattack``; else its row); the binarization test's propagations (construction and
        attacks) per audited sample apart, ``None`` without the test."""
        rows = [r for r in self.rows if r.ok and r.stage != "best-of-path"]  # best-of-path reuses its row's run
        autoattack = next((r for r in rows if r.attack == "autoattack"), None)
        binarization = self.indicators.get("binarization")
        spent = None if binarization is None or binarization.details is None else binarization.details["propagations"]
        alone = self.autoattack_alone
        if alone:  # AutoAttack run alone on every sample; else its row (in the cascade: on what was left)
            autoattack_cost = (alone["propagations_per_sample"], alone["seconds"])
        elif autoattack is not None:
            autoattack_cost = (autoattack.propagations_per_sample, autoattack.seconds)
        else:
            autoattack_cost = (None, None)
        return {
            "propagations_per_sample": sum(r.propagations_per_sample for r in rows),
            "model_propagations_per_sample": self.model_propagations / max(1, len(self.clean)),
            "seconds": self.seconds,
            "autoattack_propagations_per_sample": autoattack_cost[0],
            "autoattack_seconds": autoattack_cost[1],
            "autoattack_alone": bool(alone),
            "binarization_propagations_per_sample": None if spent is None else spent / max(1, len(self.clean)),
        }  # fmt: skip

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean.double().mean())

    def robust_under(
        self, stages: Sequence[str] | None = None, keep: Callable[[AuditRow], bool] | None = None
    ) -> Tensor:
        """Per sample: still correct under every ok row (of ``stages``, ``None``: all; and ``keep(row)``): the
        worst case, :func:`~advbridge.experiments.core.reductions.worst_case_robust`."""
        rows = [r for r in self.rows if r.ok and (stages is None or r.stage in stages) and (keep is None or keep(r))]
        return worst_case_robust(self.clean, [r.robust for r in rows if r.robust is not None])  # every ok row's

    @property
    def robust_before(self) -> float:
        return float(self.robust_under([NAIVE]).double().mean())

    @property
    def robust_after(self) -> float:
        return float(self.robust_under().double().mean())

    @property
    def robust_white_box(self) -> float:
        """Worst case over the naive rows that attack the model with its own gradients only (:func:`is_white_box`):
        what an evaluation without transfer, black-box attacks or remedies would report."""
        return float(self.robust_under([NAIVE], keep=is_white_box).double().mean())

    @property
    def best_single(self) -> AuditRow | None:
        ok = [r for r in self.rows if r.ok]
        return min(ok, key=lambda r: r.robust_accuracy) if ok else None

    @property
    def stayed_raised(self) -> list[str]:
        return [name for name, result in self.indicators.items() if result.stayed_raised]


def is_white_box(row: AuditRow) -> bool:
    """A naive row that attacks the model itself with its gradients only: not transfer, not the black-box Square,
    not AutoAttack (whose ensemble ends with Square)."""
    return row.stage == NAIVE and row.attack not in ("pgd-transfer", "square", "autoattack")

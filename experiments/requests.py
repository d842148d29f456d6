"""The typed requests of advbridge's commands: what ``cli.py`` builds from its parsed options (the argparse
``Namespace`` stops in :mod:`advbridge.cli`) and what the commands of :mod:`experiments.commands`,
:mod:`experiments.audit.command`, :mod:`experiments.bench.attacks` and :mod:`experiments.studies.command` take.

Every numeric field carries its :class:`Rule` (integer or real, its range); a request checks them all when it is
built, so a non-finite or out-of-range option is refused with one line (an
:class:`~bridge.errors.InvalidParameterError`, exit 2) before any model is loaded, trained or attacked and before
anything is written. The same rules check the API's counts (:func:`check_count`). Nothing here imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from advbridge.bridge.errors import InvalidParameterError
from advbridge.bridge.spec import Norm, parse_eps

#: Seeds are below 2**63: torch's generators take 64-bit seeds (bridge.spec.MAX_SEED).
SEED_LIMIT = 2**63


@dataclass(frozen=True)
class Rule:
    """A numeric option's range: ``low``/``high`` bounds (``None``: unbounded), open or closed; ``integer``; ``eps``
    (a number or an exact fraction such as ``8/255``, given as text); ``many`` (comma-separated values)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    eps: bool = False
    many: bool = False

    def describe(self) -> str:
        return self._range() + (" (a fraction such as 8/255 too)" if self.eps else "")

    def _range(self) -> str:
        kind = "an int" if self.integer else "a finite number"
        if self.many:
            kind = "comma-separated finite numbers"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{kind} in {left}{_text(self.low)}, {_text(self.high)}{right}"
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {_text(self.low)}"
        if self.high is not None:
            return f"{kind} {'<' if self.high_open else '<='} {_text(self.high)}"
        return kind

    def holds(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def check(self, flag: str, value: object) -> None:
        """Refuse ``value`` of option ``flag`` unless it is ``None`` or in the range."""
        if value is None:
            return
        if self.many or self.eps:
            parts = str(value).split(",") if self.many else [value]
            numbers = [_number(p) for p in parts if not (self.many and not str(p).strip())]
            if numbers and all(v is not None and self.holds(v) for v in numbers):
                return
        elif isinstance(value, bool):
            pass
        elif self.integer and isinstance(value, int):
            if self.holds(value):
                return
        elif not self.integer and isinstance(value, (int, float)) and self.holds(float(value)):
            return
        raise InvalidParameterError(f"expected {flag} as {self.describe()}, got {value!r}")


def _text(bound: float) -> str:
    if bound == SEED_LIMIT:
        return "2**63"
    return str(int(bound)) if float(bound).is_integer() and abs(bound) < 1e15 else f"{bound:g}"


def _number(text: object) -> float | None:
    """A number or an exact fraction (:func:`bridge.spec.parse_eps`), ``None`` when it is neither (or a bool)."""
    if isinstance(text, bool):
        return None
    try:
        return parse_eps(text if isinstance(text, (int, float)) else str(text))
    except InvalidParameterError:
        return None


def _option(default: Any, rule: Rule) -> Any:
    return field(default=default, metadata={"rule": rule})


def count(default: int | None = None, low: int = 1, high: int | None = None) -> Any:
    """An integer option in ``[low, high]``."""
    return _option(default, Rule(low=low, high=high, integer=True))


def real(
    default: float | None = None, low: float | None = None, high: float | None = None, *, low_open: bool = False,
    high_open: bool = False,
) -> Any:  # fmt: skip
    """A finite real option in the given range."""
    return _option(default, Rule(low=low, high=high, low_open=low_open, high_open=high_open))


def positive(default: float | None = None) -> Any:
    """A finite real option > 0."""
    return real(default, 0, low_open=True)


def budget(default: str | None = None) -> Any:
    """An eps or step size given as text (``0.3``, ``8/255``): a finite number > 0."""
    return _option(default, Rule(low=0, low_open=True, eps=True))


def seed(default: int | None = 0) -> Any:
    """A seed: an integer in ``[0, 2**63)``."""
    return _option(default, Rule(low=0, high=SEED_LIMIT, high_open=True, integer=True))


def check_linf_budget(flag: str, norm: str | None, eps: str | None) -> None:
    """An L∞ budget is at most 1: images are in [0, 1], so a larger one is no constraint at all (a typo)."""
    if eps is None or norm is None:
        return
    value = _number(eps)
    if Norm.parse(norm) is Norm.LINF and value is not None and value > 1:
        raise InvalidParameterError(f"expected {flag} <= 1 under L∞ (images are in [0, 1]), got {eps!r}")


def check_numbers(request: object) -> None:
    """Check every numeric field of ``request`` against its :class:`Rule` (the first bad one raises)."""
    for f in fields(request):  # type: ignore[arg-type]
        rule = f.metadata.get("rule")
        if rule is not None:
            rule.check("--" + f.name.replace("_", "-"), getattr(request, f.name))


def check_count(name: str, value: object, low: int = 1) -> int:
    """The API's spelling of a count rule: ``value`` an int >= ``low`` (named ``name``)."""
    Rule(low=low, integer=True).check(name, value)
    return value  # type: ignore[return-value]


@dataclass
class Outcome:
    """What a command prints: its lines, then the files it wrote."""

    lines: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)


class Request:
    """A command's options, checked when built (see the module docstring)."""

    def __post_init__(self) -> None:
        check_numbers(self)
        for flag, norm, eps in self.linf_budgets():
            check_linf_budget(flag, norm, eps)

    def linf_budgets(self) -> list[tuple[str, str | None, str | None]]:
        """The request's budgets as ``(flag, norm, eps)``, each at most 1 under L∞ (:func:`check_linf_budget`)."""
        return []

    @classmethod
    def of(cls, options: dict[str, Any]):
        """The request from a mapping of option names (``vars`` of parsed arguments); other keys are ignored."""
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in options.items() if k in names})


@dataclass(frozen=True, kw_only=True)
class ModelRequest(Request):
    """The classifier: the dataset, the model, and how advbridge trains it when the cache has none."""

    dataset: str = "mnist-5k"
    model: str | None = None
    data_root: str | None = None
    image_size: int | None = count()
    pretrained: bool | None = None
    weights: str | None = None
    finetune: str | None = None
    epochs: int | None = count()
    lr: float | None = positive()
    batch_size: int | None = count()
    optimizer: str | None = None
    schedule: str | None = None
    clip_grad_norm: float | None = positive()
    quiet: bool = False

    def train_options(self) -> dict[str, Any]:
        """The training options shared by every command that may train the classifier."""
        names = ("epochs", "lr", "batch_size", "pretrained", "weights", "finetune", "optimizer", "schedule",
                 "clip_grad_norm")  # fmt: skip
        return {name: getattr(self, name) for name in names}


@dataclass(frozen=True, kw_only=True)
class WorkloadRequest(ModelRequest):
    """The model evaluated (ours, trained or cached, or the user's with its checkpoint) and ``n`` seeded images."""

    checkpoint: str | None = None
    mean: str | None = _option(None, Rule(many=True))
    std: str | None = _option(None, Rule(low=0, low_open=True, many=True))
    num_classes: int | None = count(low=2)
    device: str | None = None
    n: int = count(100)
    seed: int = seed(0)
    libraries: str = "all"
    out: str | None = None


@dataclass(frozen=True, kw_only=True)
class AttackRequest(WorkloadRequest):
    """The attack of ``compare`` and ``defend``."""

    attack: str = ""
    norm: str | None = None
    eps: str | None = budget()
    steps: int | None = count()
    step_size: str | None = budget()
    random_start: bool = False
    attack_batch_size: int | None = count()

    def linf_budgets(self) -> list[tuple[str, str | None, str | None]]:
        default = "Linf" if self.attack in ("fgsm", "pgd") else None  # (bridge.spec.DEFAULT_NORMS)
        return [("--eps", self.norm or default, self.eps)]


@dataclass(frozen=True, kw_only=True)
class CompareRequest(AttackRequest):
    """``compare``: one attack, every library."""

    targeted: bool = False
    overshoot: float = real(0.02, 0)
    candidates: int | None = count(low=2)
    gamma: float = real(0.05, 0, 1, low_open=True, high_open=True)
    init_norm: float = positive(1.0)
    levels: int | None = count(low=2)
    eps_grid: str | None = _option(None, Rule(low=0, low_open=True, many=True))
    resume: bool = False


@dataclass(frozen=True, kw_only=True)
class SqueezerOptions:
    """The options of the feature squeezers and of the detectors."""

    bits: int | None = count(low=1, high=8)
    size: int | None = count(low=2, high=5)
    factor: float | None = real(None, 1, low_open=True)
    mode: str | None = None
    threshold: float | None = real(None, 0)
    calibration_n: int = count(500)
    defense: str | None = None
    defense_module: str | None = None
    surrogate: str | None = None
    restarts: int = count(10)
    eot: int = count(10)
    no_autoattack: bool = False


@dataclass(frozen=True, kw_only=True)
class DefendRequest(SqueezerOptions, AttackRequest):
    """``defend``: a registered defense or the user's defended module, against the attack."""

    fpr: float = real(0.05, 0, 1, low_open=True, high_open=True)
    defense_libraries: str | None = None
    train_eps: str | None = budget()
    train_norm: str = "Linf"
    train_steps: int | None = count()
    train_step_size: str | None = budget()
    ratio: float | None = real(None, 0, 1, low_open=True)
    temperature: float | None = positive()
    eps_ramp: float | None = real(None, 0, 1, high_open=True)
    train_epochs: int | None = count()
    train_max: int | None = count()
    train_lr: float | None = positive()
    train_optimizer: str | None = None
    train_schedule: str | None = None
    train_clip_grad_norm: float | None = positive()
    from_undefended: bool = False
    latent_dim: int | None = count()
    beta: float | None = real(None, 0)
    gen_epochs: int | None = count()
    gen_max_train: int | None = count()
    sample: bool = False
    refine_steps: int | None = count(low=0)
    refine_lr: float | None = positive()

    def linf_budgets(self) -> list[tuple[str, str | None, str | None]]:
        return [*super().linf_budgets(), ("--train-eps", self.train_norm, self.train_eps)]


@dataclass(frozen=True, kw_only=True)
class AuditRequest(SqueezerOptions, WorkloadRequest):
    """``audit``: the audited system (a model, a registered defense, the user's module) and the cascade's budget."""

    norm: str = "Linf"
    eps: str | None = budget()
    steps: int = count(40)
    budget: int | None = count(low=2)
    restarts: int = count(5)
    square_queries: int = count(1000)
    no_minimal: bool = False
    every_point: bool = False
    versus_autoattack: bool = False
    binarization_samples: int = count(5, low=0)
    binarization_inner: int = count(49)
    study: str | None = None  # audit a study's cell (experiments.audit.study)
    cell: str | None = None
    study_dir: str | None = None
    fpr: float | None = real(None, 0, 1, low_open=True, high_open=True)
    logits: str | None = None  # a key or index, checked on the model's output (bridge.logits.select_logits)

    def linf_budgets(self) -> list[tuple[str, str | None, str | None]]:
        return [("--eps", self.norm, self.eps)]


@dataclass(frozen=True, kw_only=True)
class BenchRequest(WorkloadRequest):
    """``bench``: own attacks vs every library, and vs the bare passes they need."""

    attacks: str = "fgsm,pgd,pgd-l2,deepfool,deepfool-linf,ddn"
    n: int = count(500)
    repeats: int = count(3)


@dataclass(frozen=True, kw_only=True)
class TrainRequest(ModelRequest):
    """``train``: a classifier (plain or with a training-time defense) or a generator."""

    seed: int | None = seed(None)
    defense: str | None = None
    eps: str | None = budget()
    norm: str = "Linf"
    steps: int | None = count()
    step_size: str | None = budget()
    ratio: float | None = real(None, 0, 1, low_open=True)
    temperature: float | None = positive()
    eps_ramp: float | None = real(None, 0, 1, high_open=True)
    library: str = "own"
    max_train: int | None = count()
    generator: str | None = None
    latent_dim: int | None = count()
    beta: float | None = real(None, 0)

    def linf_budgets(self) -> list[tuple[str, str | None, str | None]]:
        return [("--eps", self.norm, self.eps)]


@dataclass(frozen=True, kw_only=True)
class StudyRequest(Request):
    """``study NAME``: one of the three studies, its budget entries overridden by the flags given."""

    name: str = ""
    data_root: str | None = None
    out: str | None = None
    resume: bool = False
    only: str | None = None
    scale: float = positive(1.0)
    n: int | None = count()
    max_train: int | None = count()
    epochs: int | None = count()
    cifar_max_train: int | None = count()
    cifar_epochs: int | None = count()
    defense_epochs: int | None = count()
    gen_epochs: int | None = count()
    gen_max_train: int | None = count()
    restarts: int | None = count()
    steps: int | None = count()
    n_calibration: int | None = count()
    libraries: str | None = None
    attack_batch_size: int | None = count()
    model: str | None = None
    dataset: str | None = None
    pretrained: bool = False
    weights: str | None = None
    finetune: str = "all"
    quiet: bool = False

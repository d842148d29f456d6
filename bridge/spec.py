"""The attack specification: one vocabulary for every library.

``AttackSpec`` is what a user asks for, in advbridge's own words. Each adapter translates it into its
library's spelling (``alpha``, ``eps_step``, ``max_iter``, ``ε``, ART DeepFool's ``epsilon``...); the
translation tables live in the adapter modules only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from enum import Enum
from fractions import Fraction
from typing import Any

from advbridge.bridge.errors import InvalidParameterError, UnsupportedAttackError, check_name

#: Budget attacks take ``eps``; minimal-norm attacks search for the smallest perturbation.
FIXED_EPS_ATTACKS = ("fgsm", "pgd")
MINIMAL_NORM_ATTACKS = ("deepfool", "ddn")
ATTACKS = FIXED_EPS_ATTACKS + MINIMAL_NORM_ATTACKS
#: Iterations used when ``steps`` is not given (foolbox's PGD/DeepFool, DDN paper).
DEFAULT_STEPS = {"fgsm": 1, "pgd": 40, "deepfool": 50, "ddn": 100}


class Norm(str, Enum):
    """Threat-model norm. Accepts ``"Linf"``/``"inf"`` and ``"L2"``/``"2"`` (any case)."""

    LINF = "Linf"
    L2 = "L2"

    @classmethod
    def parse(cls, value: str | Norm | float) -> Norm:
        if isinstance(value, Norm):
            return value
        key = str(value).strip().lower()
        aliases = {"linf": cls.LINF, "inf": cls.LINF, "l_inf": cls.LINF, "l2": cls.L2, "2": cls.L2, "2.0": cls.L2}
        if key not in aliases:
            raise InvalidParameterError(f"unknown norm {value!r}; accepted: 'Linf' (or 'inf'), 'L2' (or '2')")
        return aliases[key]

    @property
    def p(self) -> float:
        """The exponent of the norm: ``inf`` or ``2``."""
        return math.inf if self is Norm.LINF else 2.0


#: Norm used when none is given.
DEFAULT_NORMS = {"fgsm": Norm.LINF, "pgd": Norm.LINF, "deepfool": Norm.L2, "ddn": Norm.L2}


def parse_eps(text: str | float) -> float:
    """Parse an epsilon given as a float or an exact fraction such as ``"8/255"``."""
    if isinstance(text, (int, float)):
        return float(text)
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError, OverflowError):
        raise InvalidParameterError(f"expected eps as a number or a fraction like '8/255', got {text!r}") from None
    if not math.isfinite(value):
        raise InvalidParameterError(f"expected eps as a finite number, got {text!r}")
    return value


#: Seeds are below 2**63: torch's generators take 64-bit seeds, and attack batches add their index to them.
MAX_SEED = 2**63

#: RobustBench-style standard budgets, used when ``--eps`` is not given.
STANDARD_EPS: dict[tuple[str, Norm], float] = {
    ("mnist", Norm.LINF): 0.3,
    ("mnist", Norm.L2): 2.0,
    ("cifar10", Norm.LINF): 8 / 255,
    ("cifar10", Norm.L2): 0.5,
    ("imagenet", Norm.LINF): 4 / 255,
    ("imagenet", Norm.L2): 3.0,
}


def standard_eps(dataset_family: str, norm: Norm) -> float:
    """The standard budget for a dataset family (``mnist``, ``cifar10`` or ``imagenet``-sized images)."""
    return STANDARD_EPS[(dataset_family, norm)]


@dataclass(frozen=True, kw_only=True)
class AttackSpec:
    """What to run, in advbridge's vocabulary.

    Args:
        attack: ``"fgsm"``, ``"pgd"``, ``"deepfool"`` or ``"ddn"``.
        norm: threat-model norm; ``None`` = :data:`DEFAULT_NORMS` (L∞ for fgsm/pgd, L2 for deepfool/ddn).
        eps: budget of ``fgsm``/``pgd`` (required there); ignored by minimal-norm attacks.
        steps: iterations; ``None`` = the attack's default (:data:`DEFAULT_STEPS`; ``fgsm``: always 1).
        step_size: absolute step of ``pgd``; ``None`` means ``2.5 * eps / steps`` (Madry et al. 2018).
        random_start: ``pgd`` only: start from a random point of the eps ball.
        overshoot: DeepFool's overshoot (Moosavi-Dezfooli et al. 2016, eq. after Alg. 2).
        candidates: DeepFool's number of candidate classes (top-k of the clean logits); ``None`` = all.
        gamma: DDN's norm-update factor (Rony et al. 2019, Alg. 1).
        init_norm: DDN's initial norm.
        levels: DDN quantization levels (256 for 8-bit images), ``None`` = no quantization.
        targeted: the labels given to the attack are targets, not true labels.
        seed: seed for every random draw (random start, DDN's zero-gradient noise).
    """

    attack: str
    norm: Norm = None  # type: ignore[assignment]  # None: DEFAULT_NORMS, set by __post_init__
    eps: float | None = None
    steps: int = None  # type: ignore[assignment]  # None: DEFAULT_STEPS, set by __post_init__
    step_size: float | None = None
    random_start: bool = False
    overshoot: float = 0.02
    candidates: int | None = None
    gamma: float = 0.05
    init_norm: float = 1.0
    levels: int | None = None
    targeted: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        check_name("attack", self.attack, ATTACKS)
        object.__setattr__(self, "norm", DEFAULT_NORMS[self.attack] if self.norm is None else Norm.parse(self.norm))
        if self.steps is None:
            object.__setattr__(self, "steps", DEFAULT_STEPS[self.attack])
        if self.attack in FIXED_EPS_ATTACKS:
            if self.eps is None or not math.isfinite(self.eps) or self.eps <= 0:
                raise InvalidParameterError(f"expected eps > 0 for {self.attack}, got {self.eps!r}")
        elif self.eps is not None and (not math.isfinite(self.eps) or self.eps <= 0):
            raise InvalidParameterError(f"expected eps > 0 or None for {self.attack}, got {self.eps!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise InvalidParameterError(f"expected steps >= 1 (an integer), got {self.steps!r}")
        if self.attack == "fgsm" and self.steps != 1:
            raise InvalidParameterError(f"fgsm takes exactly one step, got steps={self.steps}; use pgd for more")
        if self.attack == "fgsm" and self.norm is not Norm.LINF:
            raise InvalidParameterError(f"fgsm is an L∞ attack, got norm={self.norm.value}; use pgd with norm L2")
        if self.attack == "ddn" and self.norm is not Norm.L2:
            raise InvalidParameterError(f"ddn is an L2 attack, got norm={self.norm.value}")
        if self.step_size is not None and (not math.isfinite(self.step_size) or self.step_size <= 0):
            raise InvalidParameterError(f"expected step_size > 0, got {self.step_size!r}")
        if not math.isfinite(self.overshoot) or self.overshoot < 0:
            raise InvalidParameterError(f"expected overshoot >= 0, got {self.overshoot!r}")
        if self.candidates is not None and self.candidates < 2:
            raise InvalidParameterError(f"expected candidates >= 2 or None (all classes), got {self.candidates!r}")
        if not 0 < self.gamma < 1:
            raise InvalidParameterError(f"expected 0 < gamma < 1, got {self.gamma!r}")
        if not (math.isfinite(self.init_norm) and self.init_norm > 0):
            raise InvalidParameterError(f"expected init_norm as a finite number > 0, got {self.init_norm!r}")
        if self.levels is not None and self.levels < 2:
            raise InvalidParameterError(f"expected levels >= 2 or None, got {self.levels!r}")
        if self.random_start and self.attack != "pgd":
            raise InvalidParameterError(f"random_start applies to pgd only, got attack={self.attack!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < MAX_SEED:
            raise InvalidParameterError(f"expected seed as an int in [0, 2**63), got {self.seed!r}")
        if self.targeted and self.attack == "deepfool":
            raise UnsupportedAttackError(
                "targeted DeepFool is not supported: DeepFool moves to the closest boundary of any class, "
                "and no reference library (art, foolbox, torchattacks, advlib) implements a targeted variant; "
                "use targeted ddn or pgd"
            )

    @property
    def minimal(self) -> bool:
        """True for minimal-norm attacks (DeepFool, DDN), whose result gives robust accuracy at any eps."""
        return self.attack in MINIMAL_NORM_ATTACKS

    @property
    def effective_step_size(self) -> float:
        """``step_size``, or the default ``2.5 * eps / steps`` for PGD (Madry et al. 2018, Sec. 5)."""
        if self.step_size is not None:
            return self.step_size
        if self.eps is None:
            raise InvalidParameterError(f"{self.attack} has no eps, so it has no default step_size")
        return self.eps if self.attack == "fgsm" else 2.5 * self.eps / self.steps

    def with_(self, **changes: Any) -> AttackSpec:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["norm"] = self.norm.value
        return d

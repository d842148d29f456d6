"""The defense specification: one vocabulary for every library's defenses, next to :class:`~bridge.spec.AttackSpec`.

``DefenseSpec`` names a defense and its parameters in advbridge's words (``bits``, ``size``, ``factor``,
``mode``, ``threshold``, ``fpr``); each library's adapter says whether it has that defense and translates
the spec (ART's ``bit_depth``, ``window_size``, ``channels_first``...). The range checks live here, once:
the squeezers of :mod:`defenses.preprocessor` call the same functions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from advbridge.bridge.errors import InvalidParameterError, check_name

#: Input purifiers (feature squeezers), applied in front of the classifier.
SQUEEZERS = ("bit-depth", "median", "resample")
#: Detectors, next to the classifier.
DETECTORS = ("squeeze-detect",)
DEFENSES = SQUEEZERS + DETECTORS

#: ``torch.nn.functional.interpolate`` modes a resampler accepts.
RESAMPLE_MODES = ("nearest", "nearest-exact", "bilinear", "bicubic", "area")

#: Xu et al. 2018's squeezers per dataset family (Table IV: MNIST 1-bit + 2×2 median; CIFAR-10 and
#: ImageNet 5-bit + 2×2 median, without their non-local means), used for parameters not given.
XU_DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist": {"bits": 1, "size": 2, "factor": 2.0},
    "cifar10": {"bits": 5, "size": 2, "factor": 2.0},
    "imagenet": {"bits": 5, "size": 2, "factor": 2.0},
}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_bits(bits: object) -> int:
    """Bit depth: an integer from 1 to 8."""
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 8:
        raise InvalidParameterError(f"expected bits as an integer from 1 to 8, got {bits!r}")
    return bits


def check_size(size: object) -> int:
    """Median window: the k of a k×k window, an integer from 2 to 5 (even k: scipy's convention)."""
    if not isinstance(size, int) or isinstance(size, bool) or not 2 <= size <= 5:
        raise InvalidParameterError(f"expected size (the k of a k×k window) as an integer from 2 to 5, got {size!r}")
    return size


def check_factor(factor: object) -> float:
    """Resampling factor: a finite number > 1."""
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) or factor <= 1:
        raise InvalidParameterError(f"expected factor > 1 (down-sampling by that factor), got {factor!r}")
    return float(factor)


def check_fpr(fpr: object) -> float:
    """Target false-positive rate: strictly between 0 and 1."""
    if isinstance(fpr, bool) or not isinstance(fpr, (int, float)) or not 0 < fpr < 1:
        raise InvalidParameterError(f"expected fpr strictly between 0 and 1, got {fpr!r}")
    return float(fpr)


def check_threshold(threshold: object) -> float:
    """Detector threshold on an L1 distance of two probability vectors: in [0, 2]."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 2:
        raise InvalidParameterError(
            f"expected threshold in [0, 2] (an L1 distance between two softmax outputs), got {threshold!r}"
        )
    return float(threshold)


@dataclass(frozen=True, kw_only=True)
class DefenseSpec:
    """What defense to build, in advbridge's vocabulary.

    Args:
        defense: ``"bit-depth"``, ``"median"``, ``"resample"`` (purifiers) or ``"squeeze-detect"`` (the
            feature-squeezing detector of Xu et al. 2018, with bit depth ``bits`` and a ``size`` median,
            plus resampling when ``factor`` is given).
        bits: bit depth, 1–8.
        size: median window k (k×k), 2–5.
        factor: resampling factor, > 1.
        mode: interpolation of the resampler (:data:`RESAMPLE_MODES`).
        threshold: the detector's fixed threshold (the Animals-10 study: 1.0); ``None`` = calibrated at ``fpr``.
        fpr: target false-positive rate of the calibration, on held-out clean images.

    Parameters a defense needs and not given are filled by :meth:`resolved` from :data:`XU_DEFAULTS`.
    """

    defense: str
    bits: int | None = None
    size: int | None = None
    factor: float | None = None
    mode: str = "bilinear"
    threshold: float | None = None
    fpr: float = 0.05

    def __post_init__(self) -> None:
        check_name("defense", self.defense, DEFENSES)
        if self.bits is not None:
            check_bits(self.bits)
        if self.size is not None:
            check_size(self.size)
        if self.factor is not None:
            object.__setattr__(self, "factor", check_factor(self.factor))
        check_name("interpolation mode", self.mode, RESAMPLE_MODES)
        if self.threshold is not None:
            object.__setattr__(self, "threshold", check_threshold(self.threshold))
        object.__setattr__(self, "fpr", check_fpr(self.fpr))

    @property
    def detector(self) -> bool:
        return self.defense in DETECTORS

    def resolved(self, family: str) -> DefenseSpec:
        """A copy with the parameters this defense uses filled in for a dataset family (Xu et al.'s choice),
        and those it does not use cleared (so two specs of the same defense compare equal)."""
        defaults = XU_DEFAULTS.get(family, XU_DEFAULTS["imagenet"])
        uses = {
            "bit-depth": ("bits",),
            "median": ("size",),
            "resample": ("factor",),
            "squeeze-detect": ("bits", "size"),
        }[self.defense]
        changes: dict[str, Any] = {}
        for name in ("bits", "size", "factor"):
            value = getattr(self, name)
            if name in uses:
                changes[name] = defaults[name] if value is None else value
            elif not (self.detector and name == "factor"):  # the detector may add a resampler
                changes[name] = None
        return replace(self, **changes)

    def describe(self) -> str:
        """A short human name, e.g. ``'median 2×2'`` or ``'squeeze-detect (1-bit, 2×2 median)'``."""
        parts = {
            "bit-depth": lambda: f"{self.bits}-bit depth",
            "median": lambda: f"median {self.size}×{self.size}",
            "resample": lambda: f"resample ÷{self.factor:g} {self.mode}",
        }
        if self.detector:
            inner = [f"{self.bits}-bit", f"{self.size}×{self.size} median"]
            if self.factor is not None:
                inner.append(f"÷{self.factor:g} {self.mode} resample")
            return f"squeeze-detect ({', '.join(inner)})"
        return parts[self.defense]()

    def squeezer_specs(self) -> list[DefenseSpec]:
        """The purifiers a spec is made of: itself, or the detector's squeezers (resolved specs only)."""
        if not self.detector:
            return [self]
        specs = [DefenseSpec(defense="bit-depth", bits=self.bits), DefenseSpec(defense="median", size=self.size)]
        if self.factor is not None:
            specs.append(DefenseSpec(defense="resample", factor=self.factor, mode=self.mode))
        return specs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Defenses applied while training the classifier (``defenses.trainer``).
TRAINING_DEFENSES = ("adv-fgsm", "adv-fgsm-rs", "adv-pgd", "distill")
#: Standard training budgets per dataset family (L∞): Madry et al. 2018 (MNIST 0.3; CIFAR-10 8/255).
TRAINING_EPS = {"mnist": 0.3, "cifar10": 8 / 255, "imagenet": 4 / 255}
#: PGD training steps per family when not given (Madry et al.: MNIST 40 × 0.01, CIFAR-10 7 × 2/255).
TRAINING_STEPS = {"mnist": 40, "cifar10": 7, "imagenet": 5}
#: Share of the training steps over which adversarial training from scratch ramps eps up from 0 (Gowal et
#: al. 2018); a warm start (fine-tuning trained weights) starts at the full budget.
DEFAULT_EPS_RAMP = 0.25


@dataclass(frozen=True, kw_only=True)
class TrainingDefenseSpec:
    """A training-time defense, in advbridge's vocabulary.

    Args:
        defense: ``"adv-fgsm"`` (a share ``ratio`` of each batch replaced by FGSM examples: the CIFAR-10
            study's recipe, ART's ``AdversarialTrainer``), ``"adv-fgsm-rs"`` (FGSM from a random start in
            the ball with step 1.25·eps, every example: Wong et al. 2020), ``"adv-pgd"`` (every example
            replaced by a PGD example from a random start: Madry et al. 2018) or ``"distill"`` (defensive
            distillation at ``temperature``: Papernot et al. 2016).
        eps: the training budget (``None``: :data:`TRAINING_EPS` of the dataset family).
        norm: ``"Linf"`` or ``"L2"`` (``adv-pgd``; FGSM is L∞).
        steps: PGD steps (``None``: :data:`TRAINING_STEPS`).
        step_size: PGD step (``None``: 2.5·eps/steps; ``adv-fgsm-rs``: 1.25·eps).
        ratio: share of each batch made adversarial, in (0, 1] (``None``: 0.5 for ``adv-fgsm``, else 1).
        temperature: distillation temperature T > 0 (``None``: 100, Papernot et al.'s MNIST choice).
        eps_ramp: adversarial training: the share of the training steps, in [0, 1), over which eps (and the
            step) grow linearly from 0 to their values (0: the full budget from the first step; ``None``:
            :data:`DEFAULT_EPS_RAMP` from scratch, 0 from a warm start). See
            :mod:`defenses.trainer.adversarial`.
    """

    defense: str
    eps: float | None = None
    norm: str = "Linf"
    steps: int | None = None
    step_size: float | None = None
    ratio: float | None = None
    temperature: float | None = None
    eps_ramp: float | None = None

    def __post_init__(self) -> None:
        check_name("training defense", self.defense, TRAINING_DEFENSES)
        check_name("norm", self.norm, ("Linf", "L2"))
        if self.norm == "L2" and self.defense != "adv-pgd":
            raise InvalidParameterError(f"expected norm Linf for {self.defense} (FGSM is an L∞ attack), got L2")
        for name in ("eps", "step_size", "temperature"):
            value = getattr(self, name)
            bad = (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0
            )
            if value is not None and bad:
                raise InvalidParameterError(f"expected {name} > 0, got {value!r}")
        if self.steps is not None and (not _is_int(self.steps) or self.steps < 1):
            raise InvalidParameterError(f"expected steps >= 1 (an integer), got {self.steps!r}")
        if self.ratio is not None and (
            isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) or not 0 < self.ratio <= 1
        ):
            raise InvalidParameterError(
                f"expected ratio in (0, 1] (the share of each batch made adversarial), got {self.ratio!r}"
            )
        ramp = self.eps_ramp
        if ramp is not None and (isinstance(ramp, bool) or not isinstance(ramp, (int, float)) or not 0 <= ramp < 1):
            raise InvalidParameterError(
                f"expected eps_ramp in [0, 1) (the share of training over which eps ramps up), got {ramp!r}"
            )

    @property
    def adversarial(self) -> bool:
        return self.defense != "distill"

    @property
    def detector(self) -> bool:
        """A training-time defense is never a detector (the families' common question)."""
        return False

    def resolved(self, family: str, *, warm_start: bool = False) -> TrainingDefenseSpec:
        """The parameters this defense uses filled in for a dataset family, the others cleared (so that two
        specs of one defense, and so their cache keys, compare equal). ``warm_start``: the model starts from
        trained weights (no eps ramp by default)."""
        if not self.adversarial:
            return TrainingDefenseSpec(defense=self.defense, temperature=float(self.temperature or 100.0))
        eps = float(self.eps if self.eps is not None else TRAINING_EPS.get(family, TRAINING_EPS["imagenet"]))
        ramp = float(self.eps_ramp if self.eps_ramp is not None else 0.0 if warm_start else DEFAULT_EPS_RAMP)
        if self.defense == "adv-pgd":
            steps = self.steps or TRAINING_STEPS.get(family, TRAINING_STEPS["imagenet"])
            step_size = float(self.step_size or 2.5 * eps / steps)
            ratio = float(self.ratio or 1.0)
            return replace(
                self, eps=eps, steps=steps, step_size=step_size, ratio=ratio, temperature=None, eps_ramp=ramp
            )
        step_size = float(self.step_size or (1.25 * eps if self.defense == "adv-fgsm-rs" else eps))
        ratio = float(self.ratio or (0.5 if self.defense == "adv-fgsm" else 1.0))
        return replace(self, eps=eps, steps=1, step_size=step_size, ratio=ratio, temperature=None, eps_ramp=ramp)

    def describe(self) -> str:
        """A short human name, e.g. ``'adv-pgd (Linf eps 0.3, 10 × 0.075)'`` or ``'distill (T=100)'``."""
        if not self.adversarial:
            return f"distill (T={self.temperature:g})" if self.temperature is not None else "distill"
        if self.eps is None:
            return self.defense
        budget = f"{self.norm} eps {self.eps:.4g}"
        ramp = f", ramp {self.eps_ramp:g}" if self.eps_ramp else ""
        if self.defense == "adv-pgd":
            return f"adv-pgd ({budget}, {self.steps} × {self.step_size:.4g}{ramp})"
        return f"{self.defense} ({budget}, ratio {self.ratio:g}{ramp})" if self.ratio is not None else self.defense

    def to_dict(self) -> dict[str, Any]:
        """The fields, ``eps_ramp`` only where it is set and not 0 (added later: the models cached before it,
        trained at the full budget, keep their keys)."""
        fields = asdict(self)
        if not fields["eps_ramp"]:
            del fields["eps_ramp"]
        return fields


#: Defenses with a generative model (``defenses.generative``): purification by an autoencoder or a VAE,
#: labelling by the closest class-conditional reconstruction, detection by reconstruction error.
GENERATIVE_DEFENSES = ("ae-purify", "vae-purify", "cvae-label", "recon-detect")
#: The generator each generative defense uses (MagNet's detector: an autoencoder).
GENERATOR_OF = {"ae-purify": "ae", "vae-purify": "vae", "cvae-label": "cvae", "recon-detect": "ae"}


@dataclass(frozen=True, kw_only=True)
class GenerativeDefenseSpec:
    """A defense with a generative model, in advbridge's vocabulary (the generator itself is a
    :class:`defenses.generative.GeneratorConfig`).

    Args:
        defense: one of :data:`GENERATIVE_DEFENSES`.
        sample: ``vae-purify``: decode a draw z ~ q(z|x) instead of the posterior mean (a random defense:
            the adaptive attack averages its gradient over ``eot`` draws, EOT).
        eot: draws per gradient of the adaptive attack against a random defense (≥ 1).
        refine_steps: ``cvae-label``: Adam steps refining each class's code on ‖G(z, c) − x‖² (≥ 0).
        refine_lr: their step size (> 0).
        threshold: ``recon-detect``: a fixed threshold on the per-pixel squared reconstruction error
            (``None``: calibrated at ``fpr`` on held-out clean images).
        fpr: target false-positive rate of the calibration.
    """

    defense: str
    sample: bool = False
    eot: int = 10
    refine_steps: int = 0
    refine_lr: float = 0.05
    threshold: float | None = None
    fpr: float = 0.05

    def __post_init__(self) -> None:
        check_name("generative defense", self.defense, GENERATIVE_DEFENSES)
        if self.sample and self.defense != "vae-purify":
            raise InvalidParameterError(f"expected sample only with vae-purify (a VAE's posterior), got {self.defense}")
        if not _is_int(self.eot) or self.eot < 1:
            raise InvalidParameterError(f"expected eot >= 1 (an integer: draws per gradient), got {self.eot!r}")
        if not _is_int(self.refine_steps) or self.refine_steps < 0:
            raise InvalidParameterError(f"expected refine_steps >= 0 (an integer), got {self.refine_steps!r}")
        if self.refine_steps and self.defense != "cvae-label":
            raise InvalidParameterError(f"expected refine_steps only with cvae-label, got {self.defense}")
        lr = self.refine_lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise InvalidParameterError(f"expected refine_lr > 0, got {lr!r}")
        threshold = self.threshold
        if threshold is not None and (
            isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold >= 0
        ):
            raise InvalidParameterError(
                f"expected threshold >= 0 (a per-pixel squared reconstruction error), got {threshold!r}"
            )
        object.__setattr__(self, "fpr", check_fpr(self.fpr))

    @property
    def generator(self) -> str:
        return GENERATOR_OF[self.defense]

    @property
    def detector(self) -> bool:
        return self.defense == "recon-detect"

    @property
    def random(self) -> bool:
        return self.sample

    def resolved(self, family: str | None = None) -> GenerativeDefenseSpec:
        """The parameters this defense does not use cleared (two specs of one defense compare equal)."""
        changes: dict[str, Any] = {}
        if not self.random:
            changes["eot"] = 1
        if self.defense != "cvae-label" or not self.refine_steps:
            changes["refine_lr"] = 0.05
        if not self.detector:
            changes.update(threshold=None, fpr=0.05)
        return replace(self, **changes)

    def describe(self) -> str:
        """A short human name, e.g. ``'vae-purify (sampled, EOT 10)'`` or ``'cvae-label (10 refine steps)'``."""
        if self.defense == "vae-purify" and self.sample:
            return f"vae-purify (sampled, EOT {self.eot})"
        if self.defense == "cvae-label" and self.refine_steps:
            return f"cvae-label ({self.refine_steps} refine steps × {self.refine_lr:g})"
        return self.defense

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class UserDefenseSpec:
    """A user's defended system (``defend --defense-module FILE.py:factory``): ``factory()`` returns an
    ``nn.Module`` from images in [0, 1] to logits, the classifier and its defense inside. It may declare a
    non-differentiable input transformation as two attributes, ``preprocess`` and ``classifier`` (the system
    being ``classifier(preprocess(x))``), for BPDA; and ``randomized = True`` for EOT (Athalye et al. 2018).

    Args:
        module: the factory, ``path/to/file.py:name`` or ``package.module:name``.
        eot: draws per gradient of the adaptive attack when the system is randomized.
    """

    module: str
    eot: int = 10
    defense: str = "module"
    adversarial: bool = True  # evaluated like a trained model: margin PGD, AutoAttack
    temperature: float | None = None
    detector: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.module, str) or ":" not in self.module:
            raise InvalidParameterError(
                f"expected --defense-module as FILE.py:factory or package.module:factory, got {self.module!r}"
            )
        if isinstance(self.eot, bool) or not isinstance(self.eot, int) or self.eot < 1:
            raise InvalidParameterError(f"expected eot as an int >= 1, got {self.eot!r}")

    def resolved(self, family: str | None = None) -> UserDefenseSpec:  # noqa: ARG002 - nothing per family
        return self

    def describe(self) -> str:
        return f"user defense {self.module}"

    def to_dict(self) -> dict[str, Any]:
        return {"defense": self.defense, "module": self.module, "eot": self.eot}

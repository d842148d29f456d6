"""What the commands share between their request and their work: the workload (model and images), the attack's
spec, a training-time defense's spec and recipe, a generator's config, a detector's calibration images, and which
options apply to which defense. Each takes a typed request (:mod:`experiments.requests`).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from advbridge.bridge.defense_spec import TrainingDefenseSpec
from advbridge.bridge.errors import InvalidParameterError, check_name
from advbridge.bridge.spec import ATTACKS, DEFAULT_NORMS, AttackSpec, Norm, parse_eps, standard_eps
from advbridge.experiments.requests import (
    AttackRequest,
    AuditRequest,
    DefendRequest,
    Request,
    TrainRequest,
    WorkloadRequest,
)
from advbridge.experiments.workload import Workload, load_workload
from advbridge.zoo.datasets import load_tensors

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from advbridge.defenses.generative import GeneratorConfig


def workload_of(request: WorkloadRequest) -> Workload:
    """The model (trained or from the cache) and ``--n`` seeded test images of ``compare`` and ``defend``."""
    return load_workload(
        request.dataset,
        request.model,
        n=request.n,
        seed=request.seed,
        data_root=request.data_root,
        progress=not request.quiet,
        checkpoint=request.checkpoint,
        mean=parse_floats("--mean", request.mean),
        std=parse_floats("--std", request.std),
        image_size=request.image_size,
        num_classes=request.num_classes,
        device=parse_device(request.device),
        logits=getattr(request, "logits", None),  # audit's --logits (a model with several outputs)
        **request.train_options(),
    )


def parse_device(text: str | None) -> torch.device | None:
    """``--device``: ``cpu``, ``cuda`` or ``cuda:N`` of a GPU this machine has (``None``: cuda if any, else cpu)."""
    if text is None:
        return None
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise InvalidParameterError(f"expected --device cpu, cuda or cuda:N, got {text!r}")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise InvalidParameterError(
                f"expected --device cpu or one of this machine's {count} GPU(s) (cuda:0..cuda:{count - 1}), got {text!r}"
                if count
                else f"expected --device cpu (this machine has no CUDA GPU), got {text!r}"
            )
    return device


def parse_floats(flag: str, text: str | None) -> tuple[float, ...] | None:
    """``"0.5,0.25"`` → ``(0.5, 0.25)``: finite numbers, at least one; ``None`` stays ``None``."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InvalidParameterError(f"expected {flag} as comma-separated numbers, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise InvalidParameterError(f"expected {flag} as finite numbers, got {text!r}")
    return values


def resolved_attack(attack: str, family: str, norm: str | None, eps: float | None, **fields: Any) -> AttackSpec:
    """The attack of ``compare``, ``defend`` and the API: its default norm (L∞ for FGSM/PGD, L2 for DeepFool/DDN)
    and, for FGSM and PGD, the dataset family's standard budget when ``eps`` is not given."""
    check_name("attack", attack, ATTACKS)
    chosen = Norm.parse(norm) if norm else DEFAULT_NORMS[attack]
    if eps is None and attack in ("fgsm", "pgd"):
        eps = standard_eps(family, chosen)
    return AttackSpec(attack=attack, norm=chosen, eps=eps, **fields)


def attack_spec(request: AttackRequest, family: str, **extra: Any) -> AttackSpec:
    """The attack of a ``compare`` or ``defend`` request (``--eps``/``--step-size`` may be fractions)."""
    return resolved_attack(
        request.attack, family, request.norm, parse_eps(request.eps) if request.eps is not None else None,
        steps=request.steps, step_size=parse_eps(request.step_size) if request.step_size else None,
        random_start=request.random_start, seed=request.seed, **extra,
    )  # fmt: skip


def training_spec(
    request: DefendRequest | TrainRequest, eps: str | None, norm: str, steps: int | None, step_size: str | None
) -> TrainingDefenseSpec:
    """The training-time defense of ``train`` and ``defend`` (each names its budget flags)."""
    if request.defense is None:
        raise InvalidParameterError("expected --defense with a training-time defense's budget")
    return TrainingDefenseSpec(
        defense=request.defense,
        eps=parse_eps(eps) if eps is not None else None,
        norm=norm,
        steps=steps,
        step_size=parse_eps(step_size) if step_size is not None else None,
        ratio=request.ratio,
        temperature=request.temperature,
        eps_ramp=request.eps_ramp,
    )


def recipe(spec: TrainingDefenseSpec, **given: Any) -> dict[str, Any]:
    """Training options: those ``given``, the rest from the defense's recipe (adv-fgsm-rs: Wong et al.'s)."""
    from advbridge.defenses.trainer import recipe_defaults

    return {**recipe_defaults(spec), **{k: v for k, v in given.items() if v is not None}}


def generator_config(
    request: DefendRequest | TrainRequest, generator: str, *, epochs: int | None, max_train: int | None,
    seed: int | None = None,
) -> GeneratorConfig:  # fmt: skip
    """The generator's config from the options of ``train --generator`` and of a generative ``defend``."""
    from advbridge.defenses.generative import GeneratorConfig

    options: dict[str, Any] = {
        "latent_dim": request.latent_dim,
        "beta": request.beta,
        "epochs": epochs,
        "lr": request.lr,
        "seed": seed,
    }
    options["batch_size"] = request.batch_size
    options["image_size"] = request.image_size
    return GeneratorConfig(
        dataset=request.dataset,
        generator=generator,
        max_train=max_train,
        data_root=request.data_root,
        **{k: v for k, v in options.items() if v is not None},
    )


def calibration_images(request: DefendRequest | AuditRequest, workload: Workload) -> Tensor:
    """``--calibration-n`` clean test images after the evaluated ones in the same seeded order (disjoint)."""
    x, _ = load_tensors(request.dataset, "test", n=request.n + request.calibration_n, data_root=request.data_root, seed=request.seed,
                        image_size=request.image_size)  # fmt: skip
    return x[request.n :].to(workload.x.device)


#: The adversarial-training defenses.
ADVERSARIAL = frozenset({"adv-fgsm", "adv-fgsm-rs", "adv-pgd"})
#: Options that belong to some defenses only (``defend``'s option name → the defenses it applies to; ``train``
#: spells the training budget without ``train_``): given with another defense they are refused, not ignored.
DEFENSE_OPTIONS: dict[str, frozenset[str]] = {
    "bits": frozenset({"bit-depth", "squeeze-detect"}),
    "size": frozenset({"median", "squeeze-detect"}),
    "factor": frozenset({"resample", "squeeze-detect"}),
    "threshold": frozenset({"squeeze-detect", "recon-detect"}),
    "ratio": ADVERSARIAL,
    "temperature": frozenset({"distill"}),
    "eps_ramp": ADVERSARIAL,
    "train_eps": ADVERSARIAL,
    "train_steps": frozenset({"adv-pgd"}),
    "train_step_size": ADVERSARIAL,
    "sample": frozenset({"vae-purify"}),
    "refine_steps": frozenset({"cvae-label"}),
    "refine_lr": frozenset({"cvae-label"}),
}


def check_options_apply(request: Request, defense: str, options: dict[str, frozenset[str]] = DEFENSE_OPTIONS) -> None:
    """Refuse an option given (not ``None``/``False``) that ``defense`` does not use, naming those it does."""
    for name, defenses in options.items():
        value = getattr(request, name, None)
        if value is not None and value is not False and defense not in defenses:
            flag = "--" + name.replace("_", "-")
            raise InvalidParameterError(
                f"{flag} does not apply to {defense}; expected it only with {', '.join(sorted(defenses))}"
            )


AuditOrDefend = TypeVar("AuditOrDefend", DefendRequest, AuditRequest)


def take_surrogate(request: AuditOrDefend) -> AuditOrDefend:
    """``--surrogate`` (only with ``--defense-module``) is the twin's ``--model``; refused beside ``--model``."""
    if request.surrogate is None:
        return request
    if request.defense_module is None:
        raise InvalidParameterError(
            f"expected --surrogate only with --defense-module, got --surrogate {request.surrogate}"
        )
    if request.model is not None:
        raise InvalidParameterError(
            f"expected the undefended twin once, as --surrogate or --model, got both ({request.surrogate}, {request.model})"
        )
    return replace(request, model=request.surrogate)

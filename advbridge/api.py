"""The Python API: advbridge on a user's own model and images, without the CLI.

    import advbridge
    result = advbridge.compare(model, images, labels, attack="deepfool", libraries="all")
    result.table            # pandas: one row per library (agreement with ours, success, norms, speed, flags)
    result.save("results/mine")   # the files ``cli.py compare --out results/mine`` writes

    run = advbridge.evaluate_defense("median", model, images, labels, attack="pgd", size=2)
    run = advbridge.evaluate_defense(my_defended_module, model, images, labels)  # model: its undefended twin
    run.table               # clean / transfer / white-box / adaptive / worst-case rows, with the flags

    report = advbridge.audit(my_defended_module, images, labels, surrogate=model)  # trust no number
    report.verdict          # the worst case, and whether an indicator of attack failure stayed raised
    report.indicators       # AutoAttack's checks and Pintor et al.'s indicators: value, remedy, before -> after

``model`` is any ``nn.Module`` mapping images in [0, 1] (N, C, H, W) to logits (normalization inside it);
``images`` a tensor or a DataLoader of ``(images, labels)``. Nothing is trained or downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import Tensor, nn

from advbridge.bridge.errors import InvalidParameterError, check_name
from advbridge.bridge.io import OutputPrefix
from advbridge.bridge.spec import ATTACKS, Norm, standard_eps
from advbridge.bridge.validation import check_images
from advbridge.experiments.options import resolved_attack
from advbridge.experiments.requests import check_count
from advbridge.experiments.workload import Workload, check_user_model
from advbridge.zoo.datasets import DatasetInfo

if TYPE_CHECKING:
    from advbridge.experiments.audit.command import AuditRun
    from advbridge.experiments.compare import CompareRun


def _family(x: Tensor) -> str:
    """The dataset family whose standard budget a default eps takes, from the image shape."""
    channels, side = x.shape[1], x.shape[-1]
    if channels == 1 and side <= 28:
        return "mnist"
    return "cifar10" if side <= 32 else "imagenet"


def as_tensors(images: Tensor | Iterable, labels: Tensor | Sequence[int] | None) -> tuple[Tensor, Tensor]:
    """``(x, y)`` from a tensor and labels, or from an iterable of ``(images, labels)`` batches (a DataLoader);
    images must be (N, C, H, W) floats in [0, 1]."""
    if isinstance(images, Tensor):
        if labels is None:
            raise InvalidParameterError("expected labels with an images tensor (or a DataLoader of (images, labels))")
        x, y = images, torch.as_tensor(labels)
    else:
        if labels is not None:
            raise InvalidParameterError("expected no labels with a DataLoader: its batches carry them")
        batches = [(torch.as_tensor(b[0]), torch.as_tensor(b[1])) for b in images]
        if not batches:
            raise InvalidParameterError("expected a DataLoader with at least one batch, got none")
        x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    if x.dim() != 4 or not x.is_floating_point():
        raise InvalidParameterError(f"expected images as a float tensor (N, C, H, W), got {tuple(x.shape)} {x.dtype}")
    if len(x) == 0 or len(x) != len(y) or y.dim() != 1:
        raise InvalidParameterError(f"expected one label per image, got {len(x)} images and labels {tuple(y.shape)}")
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 1:
        hint = (
            ": pixel values 0..255? divide them by 255" if low >= 0 and high <= 255
            else ": normalized images? pass them in [0, 1] and put the normalization inside the model "
            "(advbridge.zoo.models.NormalizedClassifier(model, mean, std))"
        )  # fmt: skip
        raise InvalidParameterError(
            f"expected images in [0, 1] (normalize inside the model), got [{low:g}, {high:g}]{hint}"
        )
    check_images(x)  # NaN and infinities (the range test above lets NaN through)
    return x.float(), y.long()


def user_workload(
    model: nn.Module, x: Tensor, y: Tensor, *, name: str = "user", num_classes: int | None = None
) -> Workload:
    """A :class:`~advbridge.experiments.workload.Workload` of a user's model and images; the number of classes
    from the model's output unless given."""
    if not isinstance(model, nn.Module):
        raise InvalidParameterError(f"expected the model as a torch.nn.Module, got {type(model).__name__}")
    model = model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x, y = x.to(device), y.to(device)
    accuracy, classes = check_user_model(model, x, y, type(model).__name__, num_classes, "the given")
    channels = x.shape[1]
    info = DatasetInfo(
        name=name, family=_family(x), num_classes=classes, in_chans=channels, image_size=x.shape[-1],
        mean=(0.0,) * channels, std=(1.0,) * channels, class_names=tuple(str(k) for k in range(classes)),
    )  # fmt: skip
    card = {
        "model": type(model).__name__,
        "accuracy": accuracy,
        "source": "user",
        "num_classes": classes,
        "accuracy_on": f"the {len(x)} given images",
    }  # the failed_training check of every row
    return Workload(model, x, y, info, card)


def compare(
    model: nn.Module,
    images: Tensor | Iterable,
    labels: Tensor | Sequence[int] | None = None,
    *,
    attack: str = "deepfool",
    libraries: str | Sequence[str] = "all",
    norm: str | None = None,
    eps: float | None = None,
    steps: int | None = None,
    step_size: float | None = None,
    random_start: bool = False,
    seed: int = 0,
    batch_size: int | None = None,
    num_classes: int | None = None,
    eps_grid: Sequence[float] | None = None,
    show_progress: bool = False,
    **attack_options: Any,
) -> CompareRun:
    """Run ``attack`` by our implementation and each of ``libraries`` (``"all"``, ``"own,art"`` or a list) on
    ``model`` and the images, as ``cli.py compare`` does.

    ``eps`` defaults to the standard budget of the images' kind (MNIST-like 1×28×28: L∞ 0.3; up to 32 px:
    8/255; larger: 4/255) for FGSM and PGD; minimal-norm attacks (DeepFool, DDN) are unbounded unless given
    one, with robust accuracy at each of ``eps_grid``. ``attack_options``: the other :class:`AttackSpec`
    fields (``overshoot``, ``candidates``, ``gamma``, ``init_norm``, ``levels``, ``targeted``). Bad input raises
    an :class:`~advbridge.bridge.errors.AdvBridgeError` subclass before any attack runs.
    """
    from advbridge.experiments.compare import compare_workload, parse_libraries
    from advbridge.experiments.minimal import DEFAULT_GRID_FACTORS

    check_name("attack", attack, ATTACKS)
    names = parse_libraries(libraries)
    x, y = as_tensors(images, labels)
    workload = user_workload(model, x, y, num_classes=num_classes)
    spec = resolved_attack(attack, workload.info.family, norm, eps, steps=steps, step_size=step_size,
                        random_start=random_start, seed=seed, **attack_options)  # fmt: skip
    _check_batch_size(batch_size)
    chosen = spec.norm
    grid = None
    if spec.minimal:
        standard = standard_eps(workload.info.family, chosen)
        grid = [float(e) for e in eps_grid] if eps_grid is not None else [f * standard for f in DEFAULT_GRID_FACTORS]
        if not grid or any(not e > 0 for e in grid):
            raise InvalidParameterError(f"expected eps_grid as eps values > 0, got {eps_grid!r}")
    return compare_workload(spec, names, workload, eps_grid=grid, batch_size=batch_size, show_progress=show_progress)


def _check_batch_size(batch_size: int | None) -> None:
    if batch_size is not None:
        check_count("batch_size", batch_size)


@dataclass
class DefenseRun:
    """What :func:`evaluate_defense` measured: ``table`` (pandas: one row per defended model or implementation ×
    attack library × mode — none / transfer / white-box / adaptive / worst case — with robust accuracy and the
    flags), and the files written when ``out`` was given."""

    table: pd.DataFrame
    paths: list[Path] = field(default_factory=list)


def evaluate_defense(
    defense: str | nn.Module,
    model: nn.Module,
    images: Tensor | Iterable,
    labels: Tensor | Sequence[int] | None = None,
    *,
    attack: str = "pgd",
    libraries: str | Sequence[str] = "all",
    defense_libraries: str | Sequence[str] | None = None,
    norm: str | None = None,
    eps: float | None = None,
    steps: int | None = None,
    seed: int = 0,
    restarts: int = 10,
    autoattack: bool = True,
    eot: int = 10,
    calibration: Tensor | None = None,
    batch_size: int | None = None,
    out: str | os.PathLike | None = None,
    show_progress: bool = False,
    **defense_options: Any,
) -> DefenseRun:
    """Evaluate a defense on ``model`` (its undefended twin) and the images, as ``cli.py defend`` does: clean,
    transfer (each library's attack on ``model``, fed to the defended system), white-box (on the system as it
    is), adaptive (margin PGD from ``restarts`` random starts, AutoAttack; BPDA/EOT where the system declares
    them) and the worst case, with the flags of gradient masking and of a model that did not learn.

    ``defense``: a registered input-transformation defense by name (``"bit-depth"``, ``"median"``,
    ``"resample"``, ``"squeeze-detect"``; ``defense_options`` are its fields: ``bits``, ``size``, ``factor``,
    ``mode``, ``threshold``, ``fpr``; the detector calibrates its threshold on ``calibration`` clean images),
    or any ``nn.Module`` — the user's defended system from images in [0, 1] to logits, optionally declaring
    ``preprocess`` and ``classifier`` (BPDA) and ``randomized = True`` (EOT over ``eot`` draws). Defenses that
    advbridge trains (adversarial training, distillation, generative models) need a dataset to train on:
    ``cli.py defend --defense NAME --dataset ...``. Bad input raises an
    :class:`~advbridge.bridge.errors.AdvBridgeError` before any attack runs; nothing is trained.
    """
    from advbridge.bridge.defense_spec import DefenseSpec, UserDefenseSpec
    from advbridge.experiments.compare import parse_libraries
    from advbridge.experiments.engine import EvaluationOptions
    from advbridge.experiments.registry import get_defense

    names = parse_libraries(libraries)
    check_count("restarts", restarts)
    check_count("eot", eot)
    _check_batch_size(batch_size)
    if isinstance(defense, str):
        entry = get_defense(defense)
        if entry.kind not in ("squeezer", "detector"):
            raise InvalidParameterError(
                f"expected a defense applied to a given model (bit-depth, median, resample, squeeze-detect) or your "
                f"defended nn.Module, got {defense} ({entry.kind}: advbridge trains it on a dataset; use "
                f"cli.py defend --defense {defense} --dataset ...)"
            )
    elif not isinstance(defense, nn.Module):
        raise InvalidParameterError(
            f"expected the defense as a registered name or a torch.nn.Module, got {type(defense).__name__}"
        )
    elif defense_options or defense_libraries is not None or calibration is not None:
        given = sorted([*defense_options, *(["defense_libraries"] if defense_libraries is not None else []),
                        *(["calibration"] if calibration is not None else [])])  # fmt: skip
        raise InvalidParameterError(f"expected no options of a registered defense with your module, got {given}")
    x, y = as_tensors(images, labels)
    workload = user_workload(model, x, y)
    attack_spec = resolved_attack(attack, workload.info.family, norm, eps, steps=steps, seed=seed)
    spec: DefenseSpec | None = None
    if isinstance(defense, str):
        spec = DefenseSpec(defense=defense, **defense_options).resolved(workload.info.family)
        if spec.detector and spec.threshold is None:
            if calibration is None:
                raise InvalidParameterError(
                    "expected calibration= clean images (held out) to set the detector's threshold, or threshold="
                )
            calibration, _ = as_tensors(calibration, torch.zeros(len(calibration), dtype=torch.long))
        elif calibration is not None:
            raise InvalidParameterError(
                f"expected calibration= only with a detector without a threshold, got {defense}"
            )
    options = EvaluationOptions(
        names, restarts=restarts, autoattack=autoattack, batch_size=batch_size, show_progress=show_progress,
        calibration=None if calibration is None else calibration.to(workload.x.device),
    )  # fmt: skip
    prefix = None if out is None else OutputPrefix.of(out)
    if isinstance(defense, str):
        from advbridge.experiments.defend.squeezers import run_defend

        assert spec is not None  # (resolved above for every registered name)
        table, _, paths = run_defend(spec, attack_spec, workload, options, defense_libraries=defense_libraries,
                                     out=prefix)  # fmt: skip
    else:
        from advbridge.experiments.defend.user import run_defend_module

        user_spec = UserDefenseSpec(module=f"python:{type(defense).__name__}", eot=eot)
        table, paths = run_defend_module(user_spec, attack_spec, workload, options, out=prefix, system=defense)
    return DefenseRun(table, paths)


def audit(
    model: nn.Module,
    images: Tensor | Iterable,
    labels: Tensor | Sequence[int] | None = None,
    *,
    surrogate: nn.Module | None = None,
    defense: str | None = None,
    norm: str = "Linf",
    eps: float | None = None,
    steps: int = 40,
    budget: int | None = None,
    libraries: str | Sequence[str] = "all",
    restarts: int = 5,
    eot: int = 10,
    autoattack: bool = True,
    square_queries: int = 1000,
    minimal: bool = True,
    seed: int = 0,
    every_point: bool = False,
    versus_autoattack: bool = False,
    binarization_samples: int = 5,
    binarization_inner: int = 49,
    num_classes: int | None = None,
    calibration: Tensor | None = None,
    logits: str | int | None = None,
    out: str | os.PathLike | None = None,
    show_progress: bool = False,
    **defense_options: Any,
) -> AuditRun:
    """Audit ``model`` as ``cli.py audit`` does: every attack of every library that has it, AutoAttack, Square,
    transfer from ``surrogate`` (the model's undefended twin, when there is one) and the minimal-norm attacks,
    per sample the worst case; the indicators of attack failure (AutoAttack's checks, Pintor et al.'s six),
    each raised one remedied (EOT, BPDA, margin loss, log-probabilities, more steps, restarts, the best point of
    the path, an unbounded run) and the audit run again; every row's optimality (AttackBench).

    ``defense``: a registered squeezer (``"bit-depth"``, ``"median"``, ``"resample"``; ``defense_options``: its
    ``bits``, ``size``, ``factor``, ``mode``) put in front of ``model``, or the squeezing detector
    (``"squeeze-detect"``: ``threshold=``, or ``calibration=`` held-out clean images and ``fpr=``) next to it, as
    one classifier with a reject class (success: fooled and not detected); ``model`` is then the surrogate. ``eps``
    defaults to the images' standard budget (MNIST-like: L∞ 0.3; up to 32 px: 8/255; larger: 4/255);
    ``budget``: forward + backward propagations per sample and row (AttackBench: 2,000). ``every_point``: every
    row on every sample (default: the cascade, each row on what no earlier row broke); ``versus_autoattack``:
    AutoAttack standard alone too, its robust accuracy and cost beside the audit's. ``binarization_samples``:
    problems of the binarization test (Zimmermann et al. 2022; 0: none), ``binarization_inner``: inner points of
    each (their case studies: 49 or 999). ``logits``: for a
    ``model`` (or ``surrogate``) returning several outputs (a tuple or dict), the index or key of its logits
    (:func:`~advbridge.bridge.logits.select_logits`; a bad one is refused with the accepted ones). Returns an
    :class:`~advbridge.experiments.audit.command.AuditRun` (``table``, ``indicators``, ``verdict``,
    ``.save(prefix)``). Bad input raises an :class:`~advbridge.bridge.errors.AdvBridgeError` before any attack.
    """
    from advbridge.bridge.spec import parse_eps
    from advbridge.experiments.audit.command import audit_config, defended_by, parse_budget, run
    from advbridge.experiments.compare import parse_libraries

    names = parse_libraries(libraries)
    chosen = Norm.parse(norm)
    x, y = as_tensors(images, labels)
    if defense is None and defense_options:
        raise InvalidParameterError(f"expected defense= with the options {sorted(defense_options)}")
    from advbridge.bridge.defense_spec import GENERATIVE_DEFENSES, TRAINING_DEFENSES

    if defense in TRAINING_DEFENSES or defense in GENERATIVE_DEFENSES:
        raise InvalidParameterError(
            f"expected defense= bit-depth, median, resample or squeeze-detect (applied to the given model), got "
            f"{defense!r}: advbridge "
            f"trains it on a dataset (cli.py audit --defense {defense} --dataset ...), or audit your trained model"
        )
    if defense is not None and surrogate is not None:
        raise InvalidParameterError("expected defense= (model is then the surrogate) or surrogate=, not both")
    if surrogate is not None and not isinstance(surrogate, nn.Module):
        raise InvalidParameterError(f"expected the surrogate as a torch.nn.Module, got {type(surrogate).__name__}")
    name = type(model).__name__
    if not isinstance(model, nn.Module):
        raise InvalidParameterError(f"expected the model as a torch.nn.Module, got {name}")
    from advbridge.bridge.logits import LogitsOf, select_logits
    from advbridge.experiments.audit.command import check_logits_used, system_label
    from advbridge.experiments.registry import get_defense

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    model = select_logits(model.eval(), logits, x[:1].to(device), name=name, flag="logits=")
    if surrogate is not None:
        surrogate_device = next((p.device for p in surrogate.parameters()), device)
        surrogate = select_logits(surrogate.eval(), logits, x[:1].to(surrogate_device),
                                  name=type(surrogate).__name__, flag="logits=")  # fmt: skip
    check_logits_used(logits, model, surrogate, flag="logits=")
    workload = user_workload(model, x, y, num_classes=num_classes)
    family = workload.info.family
    config = audit_config(
        norm=chosen.value, eps=standard_eps(family, chosen) if eps is None else parse_eps(eps), steps=steps,
        budget=parse_budget(budget), libraries=names, restarts=restarts, eot=eot, autoattack=autoattack,
        square_queries=square_queries, minimal=minimal, seed=seed, every_point=every_point,
        versus_autoattack=versus_autoattack, binarization_samples=binarization_samples,
        binarization_inner=binarization_inner,
    )  # fmt: skip
    system = workload.model
    if defense is not None:
        if calibration is not None:
            calibration, _ = as_tensors(calibration, torch.zeros(len(calibration), dtype=torch.long))
            calibration = calibration.to(workload.x.device)
        system = defended_by(defense, workload.model, family, defense_options, calibration,
                             num_classes=workload.info.num_classes)  # fmt: skip
        surrogate = workload.model
    prefix = None
    if out is not None:
        prefix = OutputPrefix.writable(out)
    inner = surrogate.model if isinstance(surrogate, LogitsOf) else surrogate
    kind = None if defense is None else get_defense(defense).kind
    context = {"model": name, "dataset": "user", "audited": defense or name,
               "system": system_label(kind, defense, None, name),
               "surrogate": name if defense is not None else None if inner is None else type(inner).__name__}  # fmt: skip
    return run(
        system, workload.x, workload.y, config, num_classes=workload.info.num_classes,
        surrogate=None if surrogate is None else surrogate.eval().to(workload.x.device), context=context,
        out=prefix, show_progress=show_progress,
    )  # fmt: skip

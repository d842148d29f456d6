"""``cli.py audit`` and ``advbridge.audit``: the audited system from what the user gave, the config, the run.

What is audited (``system``), from the options:

- a model alone (``--model`` / a Python module): the model;
- ``--defense NAME`` (a registered feature squeezer: bit-depth, median, resample) on the model: the squeezer
  in front of it (it declares its ``preprocess``: BPDA applies), the model itself as the surrogate;
- ``--defense NAME`` (a training-time defense: adv-fgsm, adv-fgsm-rs, adv-pgd, distill): the defended model
  trained from the model's recipe (or taken from the cache), the model as its twin and surrogate;
- ``--defense ae-purify|vae-purify|cvae-label``: the purifier in front of the model, or the labeller, its
  generator trained on the dataset (or taken from the cache), the model as the surrogate;
- ``--defense-module FILE.py:factory`` (a user's defended system): that module, the model (``--model`` or
  ``--surrogate``) as its undefended twin, the surrogate of the transfer and straight-through rows.

A user's model or module that returns several outputs (a tuple, a dict) is audited on the one ``--logits`` names
(:func:`~advbridge.bridge.logits.select_logits`, checked on one batch before any attack). The card is titled with
the audited system (:func:`system_label`), its surrogate beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from torch import Tensor, nn

from advbridge.bridge.defense_spec import DefenseSpec, GenerativeDefenseSpec
from advbridge.bridge.errors import InvalidParameterError
from advbridge.bridge.io import OutputPrefix
from advbridge.experiments.audit.engine import run_audit
from advbridge.experiments.audit.results import Audit, AuditConfig
from advbridge.experiments.registry import get_defense
from advbridge.experiments.requests import AuditRequest, Outcome
from advbridge.experiments.workload import Workload

#: The registry's kinds the audit builds in front of (or next to) the model it is given: a squeezer, the
#: squeezing detector (as one classifier with a reject class). Training-time and generative defenses are built
#: from their recipe and generator; every name and kind comes from :mod:`experiments.registry`.
APPLIED_KINDS = ("squeezer", "detector")


@dataclass
class AuditRun:
    """What an audit found: ``table`` (one row per attack × library × stage, then the worst cases),
    ``indicators`` (one row per indicator: value, threshold, raised, remedy, value after it, robust accuracy
    before → after), ``audit`` (the per-sample results), ``verdict`` (one line), and the files written."""

    audit: Audit
    table: pd.DataFrame
    indicators: pd.DataFrame
    verdict: str
    paths: list[Path] = field(default_factory=list)
    context: Mapping | None = None

    @property
    def worst_case_robust_accuracy(self) -> float:
        return self.audit.robust_after

    def save(self, out: str | Path | OutputPrefix) -> list[Path]:
        """Write the audit's files under ``out`` (those of ``cli.py audit --out``)."""
        from advbridge.experiments.audit.report import write_audit

        prefix = OutputPrefix.of(out)
        prefix.check_writable()
        self.paths = write_audit(self.audit, prefix, self.context)
        return self.paths


def squeezer_spec(defense: str, family: str, options: Mapping) -> DefenseSpec:
    """The resolved spec of the registered squeezer or squeezing detector ``defense`` the audit puts in front of
    (or next to) a model; any other name is refused with those the audit accepts."""
    from advbridge.experiments.registry import registered_defenses

    applied = [e.name for e in registered_defenses() if e.kind in APPLIED_KINDS]
    if defense not in applied:
        raise InvalidParameterError(
            f"expected a defense applied to the given model, one of {', '.join(applied)} (or your defended module), "
            f"got {defense!r}"
        )
    return DefenseSpec(defense=defense, **dict(options)).resolved(family)


def defended_by(
    defense: str, classifier: nn.Module, family: str, options: Mapping, calibration: Tensor | None = None, *,
    num_classes: int = 0,
) -> nn.Module:  # fmt: skip
    """The registered squeezer ``defense`` (our implementation, exact backward) in front of ``classifier``, or the
    squeezing detector next to it (:func:`rejecting_detector`)."""
    return applied(squeezer_spec(defense, family, options), classifier, calibration, num_classes)


def applied(spec: DefenseSpec, classifier: nn.Module, calibration: Tensor | None, num_classes: int) -> nn.Module:
    """The resolved squeezer ``spec`` in front of ``classifier`` (exact backward, its ``preprocess`` declared), or
    the squeezing detector next to it."""
    from advbridge.defenses.preprocessor import PreprocessedClassifier
    from advbridge.defenses.preprocessor.squeezing import build_squeezer

    if spec.detector:
        return rejecting_detector(spec, classifier, calibration, num_classes)
    return PreprocessedClassifier(build_squeezer(spec, "exact"), classifier).eval()


def rejecting_detector(spec, classifier: nn.Module, calibration, classes: int) -> nn.Module:
    """Xu et al.'s squeezing detector (our squeezers, exact backward) next to ``classifier`` as one classifier with a
    reject class (:class:`~advbridge.defenses.detector.RejectingClassifier`); its threshold the spec's, or
    calibrated at the spec's false-positive rate on ``calibration`` clean images; its BPDA variant declared."""
    from advbridge.defenses.detector import RejectingClassifier, SqueezeDetector, calibrate_threshold
    from advbridge.experiments.defend.squeezers import own_squeezers

    exact = SqueezeDetector(classifier, own_squeezers(spec, "exact"))
    threshold = spec.threshold
    if threshold is None:
        if calibration is None:
            raise InvalidParameterError("expected calibration images (or a threshold) for the squeezing detector")
        threshold = calibrate_threshold(exact.scores(calibration), spec.fpr)
    bpda = SqueezeDetector(classifier, own_squeezers(spec, "bpda"))
    differentiable = RejectingClassifier(classifier, bpda.score, threshold, num_classes=classes).eval()
    return RejectingClassifier(classifier, exact.score, threshold, num_classes=classes, bpda=differentiable).eval()


def trained_defended(request: AuditRequest, defense: str, workload: Workload) -> nn.Module:
    """The training-time defense ``defense`` (ours, at its defaults) trained from the twin's recipe, or taken
    from the cache: the audit then sees only the trained module and its twin."""
    from advbridge.bridge.defense_spec import TrainingDefenseSpec
    from advbridge.bridge.training import train_defended
    from advbridge.experiments.defend.run_trained import defended_config
    from advbridge.experiments.options import recipe

    spec = TrainingDefenseSpec(defense=defense).resolved(workload.info.family)
    config = defended_config(workload.card, data_root=request.data_root, **recipe(spec))
    model, _ = train_defended(config, spec, library="own", progress=not request.quiet)
    return model.to(workload.x.device).eval()


def generative_defended(request: AuditRequest, defense: str, workload: Workload) -> nn.Module:
    """The generative defense ``defense`` at its defaults (:func:`generative_system`), its generator trained on the
    request's dataset or taken from the cache."""
    from advbridge.bridge.defense_spec import GenerativeDefenseSpec
    from advbridge.defenses.generative import GeneratorConfig
    from advbridge.experiments.options import calibration_images

    spec = GenerativeDefenseSpec(defense=defense).resolved(workload.info.family)
    sizes = {} if request.image_size is None else {"image_size": request.image_size}
    config = GeneratorConfig(dataset=request.dataset, generator=spec.generator, data_root=request.data_root, **sizes)
    return generative_system(
        spec, config, workload, progress=not request.quiet, threshold=request.threshold,
        fpr=0.05 if request.fpr is None else request.fpr, calibration=lambda: calibration_images(request, workload),
    )  # fmt: skip


def generative_system(
    spec: GenerativeDefenseSpec, config, workload: Workload, *, progress: bool, threshold: float | None = None,
    fpr: float = 0.05, calibration: Callable[[], Tensor] | None = None,
) -> nn.Module:  # fmt: skip
    """The resolved generative defense ``spec`` around ``workload.model``: the purifier (autoencoder or VAE) in
    front of it, the class-conditional labeller, or MagNet's reconstruction-error detector next to it (its
    ``threshold``, else calibrated at ``fpr`` on ``calibration()``); its generator (``config``, a
    :class:`~advbridge.defenses.generative.GeneratorConfig`) trained or taken from the cache."""
    from advbridge.defenses.detector import RejectingClassifier, calibrate_threshold
    from advbridge.defenses.generative import (
        Purifier,
        ReconstructionDetector,
        ReconstructionLabeller,
        check_generator_for,
        get_or_train_generator,
    )  # fmt: skip
    from advbridge.defenses.preprocessor import PreprocessedClassifier

    info = workload.info
    generator, card = get_or_train_generator(config, progress=progress, device=workload.x.device)
    check_generator_for(card, info.name, info.in_chans, info.image_size)
    generator = generator.eval()
    if spec.defense == "cvae-label":
        return ReconstructionLabeller(generator, refine_steps=spec.refine_steps, refine_lr=spec.refine_lr).eval()
    if spec.detector:  # MagNet's reconstruction-error detector next to the model, with a reject class
        detector = ReconstructionDetector(generator)
        if threshold is None:
            if calibration is None:
                raise InvalidParameterError("expected calibration images (or a threshold) for the detector")
            threshold = calibrate_threshold(detector.scores(calibration()), fpr)
        return RejectingClassifier(
            workload.model,
            detector.score,
            threshold,
            num_classes=info.num_classes,
            sharpness=10 / max(threshold, 1e-12),
        ).eval()
    return PreprocessedClassifier(Purifier(generator, sample=spec.sample), workload.model).eval()


def audit_config(
    *, norm: str, eps: float, steps: int, budget: int | None, libraries: Sequence[str], restarts: int, eot: int,
    autoattack: bool, square_queries: int, minimal: bool, seed: int, every_point: bool = False,
    versus_autoattack: bool = False, binarization_samples: int = AuditConfig.binarization_samples,
    binarization_inner: int = AuditConfig.binarization_inner,
) -> AuditConfig:  # fmt: skip
    return AuditConfig(
        norm=norm, eps=eps, steps=steps, budget=budget, libraries=tuple(libraries), restarts=restarts, eot=eot,
        autoattack=autoattack, square_queries=square_queries, minimal=minimal, seed=seed, every_point=every_point,
        versus_autoattack=versus_autoattack, binarization_samples=binarization_samples,
        binarization_inner=binarization_inner,
    )  # fmt: skip


def request_config(request: AuditRequest, norm: str, eps: float, libraries: Sequence[str]) -> AuditConfig:
    """The audit's config from ``cli.py audit``'s options, its threat model and libraries resolved."""
    return audit_config(
        norm=norm, eps=eps, steps=request.steps, budget=parse_budget(request.budget), libraries=libraries,
        restarts=request.restarts, eot=request.eot, autoattack=not request.no_autoattack,
        square_queries=request.square_queries, minimal=not request.no_minimal, seed=request.seed,
        every_point=request.every_point, versus_autoattack=request.versus_autoattack,
        binarization_samples=request.binarization_samples, binarization_inner=request.binarization_inner,
    )  # fmt: skip


def system_label(kind: str | None, defense: str | None, module: str | None, model: object) -> str:
    """The audited system as the card's title names it: the user's module, the registered defense with the model it
    is applied to (or trained from), or the model."""
    if module is not None:
        return module
    if defense is None:
        return str(model)
    relation = {"squeezer": "in front of", "detector": "beside", "training": "trained from",
                "generative": "with"}.get(kind or "", "on")  # fmt: skip
    return f"{defense} {relation} {model}"


def check_logits_used(choice: str | int | None, *modules: nn.Module | None, flag: str = "--logits") -> None:
    """``--logits`` given, yet no audited module returns several outputs: refused (it would pick nothing)."""
    from advbridge.bridge.logits import LogitsOf

    if choice is not None and not any(isinstance(m, LogitsOf) for m in modules):
        raise InvalidParameterError(
            f"expected {flag} only with a model that returns several outputs (a tuple or dict), got {str(choice)!r} "
            "for models that return a logits tensor"
        )


def run(
    system: nn.Module, x, y, config: AuditConfig, *, num_classes: int, surrogate: nn.Module | None,
    context: Mapping | None, out: OutputPrefix | None, show_progress: bool,
) -> AuditRun:  # fmt: skip
    """Audit ``system`` and write its files under ``out`` (``None``: none); a model that seems to expect normalized
    inputs gets a warning on its card (:func:`~advbridge.experiments.audit.systems.normalization_hint`)."""
    import logging

    from advbridge.experiments.audit.report import write_audit
    from advbridge.experiments.audit.systems import normalization_hint
    from advbridge.experiments.audit.tables import indicator_table, results_table, verdict

    audit = run_audit(system, x, y, config, num_classes=num_classes, surrogate=surrogate, show_progress=show_progress)
    hint = normalization_hint(system, x, y, num_classes)
    if hint is not None:
        logging.getLogger(__name__).warning(hint)
        audit.warnings.append(hint)
    result = AuditRun(audit, results_table(audit), indicator_table(audit), verdict(audit), context=context)
    if out is not None:
        result.paths = write_audit(audit, out, context)
    return result


def parse_budget(value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 2):
        raise InvalidParameterError(f"expected --budget >= 2 propagations per sample, got {value!r}")
    return value


def cli_audit(request: AuditRequest) -> Outcome:
    """``cli.py audit``: every option checked before the model is loaded, then the audit and its files."""
    from advbridge.bridge.defense_spec import UserDefenseSpec
    from advbridge.bridge.spec import Norm, parse_eps, standard_eps
    from advbridge.experiments.compare import parse_libraries
    from advbridge.experiments.defend.user import load_defense_module
    from advbridge.experiments.options import take_surrogate, workload_of
    from advbridge.zoo.datasets import dataset_info

    if request.study is not None or request.cell is not None or request.study_dir is not None:
        if request.study is None:
            raise InvalidParameterError("expected --study NAME with --cell and --study-dir")
        from advbridge.experiments.audit.study import cli_study_audit

        return cli_study_audit(request)
    if request.defense is not None and request.defense_module is not None:
        raise InvalidParameterError(
            f"expected --defense NAME or --defense-module FILE.py:factory (at most one), got both "
            f"({request.defense}, {request.defense_module})"
        )
    request = take_surrogate(request)
    if request.logits is not None and request.defense_module is None:
        from advbridge.zoo.user_models import is_factory

        if not is_factory(request.model):  # advbridge's models return a logits tensor
            raise InvalidParameterError(
                f"expected --logits with your own model or module returning several outputs (--model FILE.py:factory "
                f"or --defense-module), got --logits {request.logits} for {request.model or 'the default model'}"
            )
    info = dataset_info(request.dataset, data_root=request.data_root)
    norm = Norm.parse(request.norm)
    eps = standard_eps(info.family, norm) if request.eps is None else parse_eps(request.eps)
    libraries = parse_libraries(request.libraries)
    squeezer_options = {
        k: getattr(request, k)
        for k in ("bits", "size", "factor", "mode", "threshold", "fpr")
        if getattr(request, k) is not None
    }
    if request.defense is None and squeezer_options:
        raise InvalidParameterError(f"expected --defense with {', '.join('--' + k for k in squeezer_options)}")
    kind = None if request.defense is None else get_defense(request.defense).kind  # (an unknown name: refused)
    trained, generative = kind == "training", kind == "generative"
    detector = kind == "detector" or (
        generative and request.defense is not None and GenerativeDefenseSpec(defense=request.defense).detector
    )
    detector_options = {"threshold", "fpr"} if generative and detector else set()
    if generative and set(squeezer_options) - detector_options:
        given = ", ".join("--" + k for k in sorted(set(squeezer_options) - detector_options))
        raise InvalidParameterError(f"expected no squeezer options with --defense {request.defense}, got {given}")
    if trained:
        if squeezer_options:
            raise InvalidParameterError(f"expected no squeezer options with --defense {request.defense}")
        from advbridge.zoo.user_models import is_factory

        if is_factory(request.model) or (
            request.checkpoint is not None and not Path(request.checkpoint).expanduser().is_dir()
        ):
            raise InvalidParameterError(
                f"expected a model advbridge trains (a timm name or a cache folder) with --defense {request.defense}, "
                "got your own model; audit your defended model with --defense-module FILE.py:factory"
            )
    elif request.defense is not None and not generative:
        squeezer_spec(request.defense, info.family, squeezer_options)
    calibrate = detector and request.threshold is None
    if calibrate:
        from advbridge.zoo.datasets import check_split_size

        check_split_size(
            request.dataset, request.n + request.calibration_n, request.data_root, what="--n + --calibration-n"
        )
    module_spec = UserDefenseSpec(module=request.defense_module).resolved() if request.defense_module else None
    config = request_config(request, norm.value, eps, libraries)
    name = request.defense or (Path(request.defense_module.split(":")[0]).stem if request.defense_module else "model")
    out = OutputPrefix.parse(request.out or f"results/audit-{request.dataset.replace(':', '_').replace('/', '_')}-{name}-{norm.value}",
                             default_name="audit")  # fmt: skip
    out.check_writable()
    workload = workload_of(request)
    system, surrogate = workload.model, None
    if trained and request.defense is not None:
        system, surrogate = trained_defended(request, request.defense, workload), workload.model
    elif generative and request.defense is not None:
        system, surrogate = generative_defended(request, request.defense, workload), workload.model
    elif request.defense is not None:
        from advbridge.experiments.options import calibration_images

        calibration = calibration_images(request, workload) if calibrate else None
        system = defended_by(
            request.defense, workload.model, info.family, squeezer_options, calibration,
            num_classes=workload.info.num_classes,
        )  # fmt: skip
        surrogate = workload.model
    elif module_spec is not None:
        from advbridge.bridge.logits import select_logits

        module = load_defense_module(module_spec).to(workload.x.device).eval()
        system = select_logits(module, request.logits, workload.x[:1], name=str(request.defense_module))
        surrogate = workload.model
    check_logits_used(request.logits, system, surrogate)
    model_name = workload.context.get("model")
    context = {**workload.context, "audited": request.defense or request.defense_module or model_name,
               "system": system_label(kind, request.defense, request.defense_module, model_name),
               "surrogate": model_name if surrogate is not None else None, "data_seed": request.seed}  # fmt: skip
    result = run(
        system, workload.x, workload.y, config, num_classes=workload.info.num_classes, surrogate=surrogate,
        context=context, out=out, show_progress=not request.quiet,
    )  # fmt: skip
    return printed(result, config, len(workload.x), workload.info.name)


def printed(result: AuditRun, config: AuditConfig, n: int, dataset: str) -> Outcome:
    """What ``cli.py audit`` prints: what was audited on what, the verdict, the cost, the rows, the raised
    indicators, the files written."""
    from advbridge.experiments.audit.tables import SHOWN, cost_line
    from advbridge.experiments.compare import format_table

    context = result.context or {}
    surrogate = context.get("surrogate")
    header = (
        f"audit of {context.get('system')} ({config.norm} eps={config.eps:g}) on {n} images of {dataset}"
        + (f", surrogate {surrogate}" if surrogate is not None else "")
        + (f", budget {config.budget} propagations per sample" if config.budget else "")
    )
    indicators = result.indicators.loc[result.indicators["raised"]]
    lines = [
        header,
        result.verdict,
        cost_line(result.audit),
        "",
        format_table(result.table, SHOWN, drop_empty=True, reason_width=60),
    ]
    lines += ["", "indicators raised:" if len(indicators) else "indicators: none raised"]
    if len(indicators):
        shown = ["indicator", "value", "threshold", "remedy", "value_after_remedy", "robust_accuracy_before",
                 "robust_accuracy_after"]  # fmt: skip
        lines.append(indicators[shown].to_string(index=False))
    return Outcome(lines, result.paths)

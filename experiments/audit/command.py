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
"""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from torch import nn

from advbridge.bridge.defense_spec import TRAINING_DEFENSES
from advbridge.bridge.errors import InvalidParameterError
from advbridge.bridge.io import OutputPrefix
from advbridge.experiments.audit.engine import Audit, AuditConfig, run_audit

#: Registered squeezers the audit puts in front of a model.
AUDITABLE_DEFENSES = ("bit-depth", "median", "resample")
#: The squeezing detector: next to the model, as one classifier with a reject class.
DETECTOR = "squeeze-detect"
#: Generative defenses the audit builds from their generator (recon-detect is a detector: ``defend``).
GENERATIVE_AUDITABLE = ("ae-purify", "vae-purify", "cvae-label", "recon-detect")
#: Detectors (audited as a classifier with a reject class), whose threshold is calibrated unless given.
DETECTORS = (DETECTOR, "recon-detect")


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

        self.paths = write_audit(self.audit, OutputPrefix.writable(out), self.context)
        return self.paths


def defended_by(
    defense: str, classifier: nn.Module, family: str, options: Mapping, calibration=None, *, num_classes: int = 0,
    check_only: bool = False,
) -> nn.Module | None:  # fmt: skip
    """The registered squeezer ``defense`` (our implementation, exact backward) in front of ``classifier``, or the
    squeezing detector next to it (:func:`rejecting_detector`); ``check_only``: the name and options checked."""
    from advbridge.bridge.defense_spec import DefenseSpec
    from advbridge.defenses.preprocessor import PreprocessedClassifier
    from advbridge.defenses.preprocessor.squeezing import build_squeezer

    if defense not in (*AUDITABLE_DEFENSES, DETECTOR):
        accepted = ", ".join((*AUDITABLE_DEFENSES, DETECTOR, *TRAINING_DEFENSES, *GENERATIVE_AUDITABLE))
        raise InvalidParameterError(
            f"expected --defense one of {accepted} (or your defended module: --defense-module), got {defense!r}"
        )
    spec = DefenseSpec(defense=defense, **dict(options)).resolved(family)
    if check_only:
        return None
    if spec.detector:
        return rejecting_detector(spec, classifier, calibration, num_classes)
    return PreprocessedClassifier(build_squeezer(spec, "exact"), classifier).eval()


def rejecting_detector(spec, classifier: nn.Module, calibration, classes: int) -> nn.Module:
    """Xu et al.'s squeezing detector (our squeezers, exact backward) next to ``classifier`` as one classifier with a
    reject class (:class:`~advbridge.defenses.detector.RejectingClassifier`); its threshold the spec's, or
    calibrated at the spec's false-positive rate on ``calibration`` clean images; its BPDA variant declared."""
    from advbridge.bridge.adapters import get_adapter
    from advbridge.defenses.detector import RejectingClassifier, SqueezeDetector, calibrate_threshold

    exact = SqueezeDetector(classifier, list(get_adapter("own").build_defense(spec, "exact")))
    threshold = spec.threshold
    if threshold is None:
        if calibration is None:
            raise InvalidParameterError("expected calibration images (or a threshold) for the squeezing detector")
        threshold = calibrate_threshold(exact.scores(calibration), spec.fpr)
    bpda = SqueezeDetector(classifier, list(get_adapter("own").build_defense(spec, "bpda")))
    differentiable = RejectingClassifier(classifier, bpda.score, threshold, num_classes=classes).eval()
    return RejectingClassifier(classifier, exact.score, threshold, num_classes=classes, bpda=differentiable).eval()


def trained_defended(args: Namespace, workload) -> nn.Module:
    """The training-time defense ``args.defense`` (ours, at its defaults) trained from the twin's recipe, or taken
    from the cache: the audit then sees only the trained module and its twin."""
    from advbridge.bridge.defense_spec import TrainingDefenseSpec
    from advbridge.bridge.training import train_defended
    from advbridge.experiments.commands import recipe
    from advbridge.experiments.defend.run_trained import defended_config

    spec = TrainingDefenseSpec(defense=args.defense).resolved(workload.info.family)
    config = defended_config(workload.card, data_root=args.data_root, **recipe(spec))
    model, _ = train_defended(config, spec, library="own", progress=not args.quiet)
    return model.to(workload.x.device).eval()


def generative_defended(args: Namespace, workload) -> nn.Module:
    """The generative defense ``args.defense`` at its defaults: the purifier (autoencoder or VAE) in front of the
    model, or the class-conditional labeller; its generator trained on the dataset or taken from the cache."""
    from advbridge.bridge.defense_spec import GenerativeDefenseSpec
    from advbridge.defenses.detector import RejectingClassifier, calibrate_threshold
    from advbridge.defenses.generative import (
        GeneratorConfig,
        Purifier,
        ReconstructionDetector,
        ReconstructionLabeller,
        check_generator_for,
        get_or_train_generator,
    )  # fmt: skip
    from advbridge.defenses.preprocessor import PreprocessedClassifier
    from advbridge.experiments.commands import calibration_images

    info = workload.info
    spec = GenerativeDefenseSpec(defense=args.defense).resolved(info.family)
    sizes = {} if args.image_size is None else {"image_size": args.image_size}
    config = GeneratorConfig(dataset=args.dataset, generator=spec.generator, data_root=args.data_root, **sizes)
    generator, card = get_or_train_generator(config, progress=not args.quiet, device=workload.x.device)
    check_generator_for(card, info.name, info.in_chans, info.image_size)
    generator = generator.eval()
    if spec.defense == "cvae-label":
        return ReconstructionLabeller(generator, refine_steps=spec.refine_steps, refine_lr=spec.refine_lr).eval()
    if spec.detector:  # MagNet's reconstruction-error detector next to the model, with a reject class
        detector = ReconstructionDetector(generator)
        threshold = args.threshold
        if threshold is None:
            fpr = 0.05 if args.fpr is None else args.fpr
            threshold = calibrate_threshold(detector.scores(calibration_images(args, workload)), fpr)
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
    autoattack: bool, square_queries: int, minimal: bool, seed: int,
) -> AuditConfig:  # fmt: skip
    return AuditConfig(
        norm=norm, eps=eps, steps=steps, budget=budget, libraries=tuple(libraries), restarts=restarts, eot=eot,
        autoattack=autoattack, square_queries=square_queries, minimal=minimal, seed=seed,
    )  # fmt: skip


def run(
    system: nn.Module, x, y, config: AuditConfig, *, num_classes: int, surrogate: nn.Module | None,
    context: Mapping | None, out: OutputPrefix | None, show_progress: bool,
) -> AuditRun:  # fmt: skip
    """Audit ``system`` and write its files under ``out`` (``None``: none)."""
    from advbridge.experiments.audit.report import indicator_table, results_table, verdict, write_audit

    audit = run_audit(system, x, y, config, num_classes=num_classes, surrogate=surrogate, show_progress=show_progress)
    result = AuditRun(audit, results_table(audit), indicator_table(audit), verdict(audit), context=context)
    if out is not None:
        result.paths = write_audit(audit, out, context)
    return result


def parse_budget(value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 2):
        raise InvalidParameterError(f"expected --budget >= 2 propagations per sample, got {value!r}")
    return value


def cli_audit(args: Namespace):
    """``cli.py audit``: every option checked before the model is loaded, then the audit and its files."""
    from advbridge.bridge.defense_spec import UserDefenseSpec
    from advbridge.bridge.spec import Norm, parse_eps, standard_eps
    from advbridge.experiments.audit.report import SHOWN, cost_line
    from advbridge.experiments.commands import Outcome, take_surrogate, workload_of
    from advbridge.experiments.compare import format_table, parse_libraries
    from advbridge.experiments.defend.user import load_defense_module
    from advbridge.zoo.datasets import dataset_info

    if args.defense is not None and args.defense_module is not None:
        raise InvalidParameterError(
            f"expected --defense NAME or --defense-module FILE.py:factory (at most one), got both "
            f"({args.defense}, {args.defense_module})"
        )
    take_surrogate(args)
    info = dataset_info(args.dataset, data_root=args.data_root)
    norm = Norm.parse(args.norm)
    eps = standard_eps(info.family, norm) if args.eps is None else parse_eps(args.eps)
    libraries = parse_libraries(args.libraries)
    squeezer_options = {
        k: getattr(args, k)
        for k in ("bits", "size", "factor", "mode", "threshold", "fpr")
        if getattr(args, k) is not None
    }
    if args.defense is None and squeezer_options:
        raise InvalidParameterError(f"expected --defense with {', '.join('--' + k for k in squeezer_options)}")
    trained = args.defense in TRAINING_DEFENSES
    generative = args.defense in GENERATIVE_AUDITABLE
    detector_options = {"threshold", "fpr"} if args.defense == "recon-detect" else set()
    if generative and set(squeezer_options) - detector_options:
        given = ", ".join("--" + k for k in sorted(set(squeezer_options) - detector_options))
        raise InvalidParameterError(f"expected no squeezer options with --defense {args.defense}, got {given}")
    if trained:
        if squeezer_options:
            raise InvalidParameterError(f"expected no squeezer options with --defense {args.defense}")
        from advbridge.zoo.user_models import is_factory

        if is_factory(args.model) or (args.checkpoint is not None and not Path(args.checkpoint).expanduser().is_dir()):
            raise InvalidParameterError(
                f"expected a model advbridge trains (a timm name or a cache folder) with --defense {args.defense}, "
                "got your own model; audit your defended model with --defense-module FILE.py:factory"
            )
    elif args.defense is not None and not generative:
        defended_by(args.defense, nn.Identity(), info.family, squeezer_options, check_only=True)
    calibrate = args.defense in DETECTORS and args.threshold is None
    if args.calibration_n < 1:
        raise InvalidParameterError(f"expected --calibration-n >= 1, got {args.calibration_n}")
    if calibrate:
        from advbridge.zoo.datasets import check_split_size

        check_split_size(args.dataset, args.n + args.calibration_n, args.data_root, what="--n + --calibration-n")
    module_spec = UserDefenseSpec(module=args.defense_module).resolved() if args.defense_module else None
    config = audit_config(
        norm=norm.value, eps=eps, steps=args.steps, budget=parse_budget(args.budget), libraries=libraries,
        restarts=args.restarts, eot=args.eot, autoattack=not args.no_autoattack, square_queries=args.square_queries,
        minimal=not args.no_minimal, seed=args.seed,
    )  # fmt: skip
    name = args.defense or (Path(args.defense_module.split(":")[0]).stem if args.defense_module else "model")
    out = OutputPrefix.parse(args.out or f"results/audit-{args.dataset.replace(':', '_').replace('/', '_')}-{name}-{norm.value}",
                             default_name="audit")  # fmt: skip
    out.check_writable()
    workload = workload_of(args)
    system, surrogate = workload.model, None
    if trained:
        system, surrogate = trained_defended(args, workload), workload.model
    elif generative:
        system, surrogate = generative_defended(args, workload), workload.model
    elif args.defense is not None:
        from advbridge.experiments.commands import calibration_images

        calibration = calibration_images(args, workload) if calibrate else None
        system = defended_by(
            args.defense, workload.model, info.family, squeezer_options, calibration,
            num_classes=workload.info.num_classes,
        )  # fmt: skip
        surrogate = workload.model
    elif module_spec is not None:
        system, surrogate = load_defense_module(module_spec).to(workload.x.device), workload.model
    context = {**workload.context, "audited": args.defense or args.defense_module or workload.context.get("model"),
               "surrogate": workload.context.get("model") if surrogate is not None else None}  # fmt: skip
    result = run(
        system, workload.x, workload.y, config, num_classes=workload.info.num_classes, surrogate=surrogate,
        context=context, out=out, show_progress=not args.quiet,
    )  # fmt: skip
    header = (
        f"audit of {context['audited']} ({config.norm} eps={config.eps:g}) on {len(workload.x)} images of "
        f"{workload.info.name}"
        + (f", surrogate {context['surrogate']}" if surrogate is not None else "")
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

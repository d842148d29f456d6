"""What ``cli.py``'s commands do, from their parsed options to the lines they print (cli.py only parses and
prints): ``compare``, ``defend`` (one body; the defense families are registered in
:mod:`experiments.registry`) and ``train``. Every option is checked before a model is trained or an image
attacked; a bad one raises a :class:`~bridge.errors.AdvBridgeError` (exit 2, one line).
"""

from __future__ import annotations

import math
from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advbridge.bridge.defense_spec import (
    GENERATIVE_DEFENSES,
    TRAINING_DEFENSES,
    DefenseSpec,
    GenerativeDefenseSpec,
    TrainingDefenseSpec,
    UserDefenseSpec,
)
from advbridge.bridge.errors import InvalidParameterError, check_name
from advbridge.bridge.io import OutputPrefix
from advbridge.bridge.spec import ATTACKS, DEFAULT_NORMS, AttackSpec, Norm, parse_eps, standard_eps
from advbridge.experiments.compare import default_out as compare_default_out
from advbridge.experiments.compare import format_table as compare_format_table
from advbridge.experiments.compare import parse_libraries, run_compare
from advbridge.experiments.defend.report import COLUMNS, default_out, format_table
from advbridge.experiments.defend.squeezers import AGREEMENT_COLUMNS, check_defense_libraries
from advbridge.experiments.engine import EvaluationOptions
from advbridge.experiments.minimal import DEFAULT_GRID_FACTORS
from advbridge.experiments.registry import get_defense, register_defense
from advbridge.experiments.workload import DEFAULT_MODELS, load_workload
from advbridge.zoo.datasets import check_split_size, dataset_info, load_tensors


@dataclass
class Outcome:
    """What a command prints: its lines, then the files it wrote."""

    lines: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- options
def train_options(args: Namespace) -> dict[str, Any]:
    """The training options shared by every command that may train the classifier."""
    return {
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "pretrained": args.pretrained,
        "weights": args.weights,
        "finetune": args.finetune,
        "optimizer": args.optimizer,
        "schedule": args.schedule,
        "clip_grad_norm": args.clip_grad_norm,
    }


def workload_of(args: Namespace):
    """The model (trained or from the cache) and ``--n`` seeded test images of ``compare`` and ``defend``."""
    return load_workload(
        args.dataset,
        args.model,
        n=args.n,
        seed=args.seed,
        data_root=args.data_root,
        progress=not args.quiet,
        checkpoint=args.checkpoint,
        mean=parse_floats("--mean", args.mean),
        std=parse_floats("--std", args.std),
        image_size=args.image_size,
        num_classes=args.num_classes,
        device=parse_device(args.device),
        **train_options(args),
    )


def parse_device(text: str | None):
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


def attack_spec(args: Namespace, family: str, **extra) -> AttackSpec:
    """The attack of ``compare`` and ``defend``: ``--eps`` defaults to the dataset's standard budget."""
    if args.n < 1:
        raise InvalidParameterError(f"expected --n >= 1, got {args.n}")
    if args.attack_batch_size is not None and args.attack_batch_size < 1:
        raise InvalidParameterError(f"expected --attack-batch-size >= 1, got {args.attack_batch_size}")
    check_name("attack", args.attack, ATTACKS)
    norm = Norm.parse(args.norm) if args.norm else DEFAULT_NORMS[args.attack]
    eps = parse_eps(args.eps) if args.eps is not None else None
    if eps is None and args.attack in ("fgsm", "pgd"):
        eps = standard_eps(family, norm)
    return AttackSpec(
        attack=args.attack,
        norm=norm,
        eps=eps,
        steps=args.steps,
        step_size=parse_eps(args.step_size) if args.step_size else None,
        random_start=args.random_start,
        seed=args.seed,
        **extra,
    )


def training_spec(args: Namespace, eps, norm, steps, step_size) -> TrainingDefenseSpec:
    """The training-time defense of ``train`` and ``defend`` (each names its budget flags)."""
    return TrainingDefenseSpec(
        defense=args.defense,
        eps=parse_eps(eps) if eps is not None else None,
        norm=norm,
        steps=steps,
        step_size=parse_eps(step_size) if step_size is not None else None,
        ratio=args.ratio,
        temperature=args.temperature,
        eps_ramp=args.eps_ramp,
    )


def recipe(spec: TrainingDefenseSpec, **given) -> dict[str, Any]:
    """Training options: those ``given``, the rest from the defense's recipe (adv-fgsm-rs: Wong et al.'s)."""
    from advbridge.defenses.trainer import recipe_defaults

    return {**recipe_defaults(spec), **{k: v for k, v in given.items() if v is not None}}


def generator_config(args: Namespace, generator: str, *, epochs, max_train, seed=None):
    """The generator's config from the options of ``train --generator`` and of a generative ``defend``."""
    from advbridge.defenses.generative import GeneratorConfig

    options = {"latent_dim": args.latent_dim, "beta": args.beta, "epochs": epochs, "lr": args.lr, "seed": seed}
    options["batch_size"] = args.batch_size
    options["image_size"] = args.image_size
    return GeneratorConfig(
        dataset=args.dataset,
        generator=generator,
        max_train=max_train,
        data_root=args.data_root,
        **{k: v for k, v in options.items() if v is not None},
    )


def calibration_images(args: Namespace, workload):
    """``--calibration-n`` clean test images after the evaluated ones in the same seeded order (disjoint)."""
    x, _ = load_tensors(args.dataset, "test", n=args.n + args.calibration_n, data_root=args.data_root, seed=args.seed,
                        image_size=args.image_size)  # fmt: skip
    return x[args.n :].to(workload.x.device)


_ADVERSARIAL = frozenset({"adv-fgsm", "adv-fgsm-rs", "adv-pgd"})
#: Options that belong to some defenses only (``defend``'s option name → the defenses it applies to; ``train``
#: spells the training budget without ``train_``): given with another defense they are refused, not ignored.
DEFENSE_OPTIONS: dict[str, frozenset[str]] = {
    "bits": frozenset({"bit-depth", "squeeze-detect"}),
    "size": frozenset({"median", "squeeze-detect"}),
    "factor": frozenset({"resample", "squeeze-detect"}),
    "threshold": frozenset({"squeeze-detect", "recon-detect"}),
    "ratio": _ADVERSARIAL,
    "temperature": frozenset({"distill"}),
    "eps_ramp": _ADVERSARIAL,
    "train_eps": _ADVERSARIAL,
    "train_steps": frozenset({"adv-pgd"}),
    "train_step_size": _ADVERSARIAL,
    "sample": frozenset({"vae-purify"}),
    "refine_steps": frozenset({"cvae-label"}),
    "refine_lr": frozenset({"cvae-label"}),
}


def check_options_apply(args: Namespace, defense: str, options: dict[str, frozenset[str]] = DEFENSE_OPTIONS) -> None:
    """Refuse an option given (not ``None``/``False``) that ``defense`` does not use, naming those it does."""
    for name, defenses in options.items():
        value = getattr(args, name, None)
        if value is not None and value is not False and defense not in defenses:
            flag = "--" + name.replace("_", "-")
            raise InvalidParameterError(
                f"{flag} does not apply to {defense}; expected it only with {', '.join(sorted(defenses))}"
            )


# ---------------------------------------------------------------------------------------------- compare
#: The attack options only ``compare`` has (``defend`` runs its attack at their defaults).
COMPARE_ATTACK_OPTIONS = ("targeted", "overshoot", "candidates", "gamma", "init_norm", "levels")


def compare(args: Namespace) -> Outcome:
    """``compare``: one attack, every library, one model and its images."""
    libraries = parse_libraries(args.libraries)
    info = dataset_info(args.dataset, data_root=args.data_root)
    spec = attack_spec(args, info.family, **{k: getattr(args, k) for k in COMPARE_ATTACK_OPTIONS})
    if args.eps_grid is not None and not spec.minimal:
        raise InvalidParameterError(
            f"expected --eps-grid only with a minimal-norm attack (deepfool, ddn), got it with {spec.attack}"
        )
    if args.eps_grid is not None:
        eps_grid = [parse_eps(e) for e in args.eps_grid.split(",") if e.strip()]
        if not eps_grid:
            raise InvalidParameterError(f"expected --eps-grid as comma-separated eps values, got {args.eps_grid!r}")
    else:
        eps_grid = [f * standard_eps(info.family, spec.norm) for f in DEFAULT_GRID_FACTORS]
    if any(e <= 0 for e in eps_grid):
        raise InvalidParameterError(f"expected every --eps-grid value > 0, got {args.eps_grid}")
    out = OutputPrefix.parse(args.out or compare_default_out(args.dataset, spec), default_name="compare")
    out.check_writable()  # the default folder too, before a model is trained or an image attacked
    if args.resume:  # a truncated resume key is refused now, not after the model is trained
        from advbridge.experiments.compare import PROGRESS_TAIL
        from advbridge.experiments.progress import read_resume_key

        read_resume_key(out.file(PROGRESS_TAIL))
    workload = workload_of(args)  # checks --n against the test split before it trains anything
    table, grid, paths = run_compare(
        spec,
        libraries,
        workload,
        out=out,
        eps_grid=eps_grid if spec.minimal else None,
        batch_size=args.attack_batch_size,
        resume=args.resume,
        show_progress=not args.quiet,
    )
    lines = [
        f"{spec.attack} {spec.norm.value} eps={spec.eps} steps={spec.steps} on {len(workload.x)} images of "
        f"{workload.info.name}, model {workload.context['model']} (clean test accuracy "
        f"{workload.card.get('accuracy', float('nan')):.4f})",
        compare_format_table(table),
    ]
    if grid is not None:
        lines += [f"\nrobust accuracy at eps ({spec.norm.value}):", grid.to_string(float_format=lambda v: f"{v:.3f}")]
    return Outcome(lines, paths)


# ---------------------------------------------------------------------------------------------- defend
def take_surrogate(args: Namespace) -> None:
    """``--surrogate`` (only with ``--defense-module``) is the twin's ``--model``; refused beside ``--model``."""
    if args.surrogate is None:
        return
    if args.defense_module is None:
        raise InvalidParameterError(
            f"expected --surrogate only with --defense-module, got --surrogate {args.surrogate}"
        )
    if args.model is not None:
        raise InvalidParameterError(
            f"expected the undefended twin once, as --surrogate or --model, got both ({args.surrogate}, {args.model})"
        )
    args.model = args.surrogate


def defend(args: Namespace) -> Outcome:
    """``defend``: the registered defense ``--defense`` evaluated on the workload, one body for every family:
    the spec, the attack and the libraries checked, the output prefix checked, then the classifier, the
    calibration images of a detector, and the family's evaluation (its models, the engine, the files)."""
    if (args.defense is None) == (args.defense_module is None):
        raise InvalidParameterError(
            f"expected --defense NAME or --defense-module FILE.py:factory (one of them), got --defense {args.defense} "
            f"and --defense-module {args.defense_module}"
        )
    take_surrogate(args)
    family = UserDefense() if args.defense_module else get_defense(args.defense).family
    check_options_apply(args, args.defense or "module")
    info = dataset_info(args.dataset, data_root=args.data_root)
    spec = family.spec(args, info.family)
    attack = attack_spec(args, info.family)
    for flag, value in (("--restarts", args.restarts), ("--eot", args.eot), ("--calibration-n", args.calibration_n)):
        if value < 1:
            raise InvalidParameterError(f"expected {flag} >= 1, got {value}")
    family.check(args, spec)
    libraries = parse_libraries(args.libraries)
    calibrate = spec.detector and spec.threshold is None
    if calibrate:  # (--n alone is checked by workload_of, before it trains anything)
        check_split_size(args.dataset, args.n + args.calibration_n, args.data_root, what="--n + --calibration-n")
    out = OutputPrefix.parse(args.out or default_out(args.dataset, spec, attack), default_name="defend")
    out.check_writable()
    workload = workload_of(args)
    calibration = calibration_images(args, workload) if calibrate else None
    options = EvaluationOptions(
        libraries, restarts=args.restarts, autoattack=not args.no_autoattack, calibration=calibration,
        show_progress=not args.quiet, batch_size=args.attack_batch_size,
    )  # fmt: skip
    table, lines, paths = family.run(args, spec, attack, workload, options, out)
    calibrated = (
        f", threshold calibrated on {len(calibration)} other clean images at fpr {spec.fpr}" if calibrate else ""
    )
    header = (
        f"{spec.describe()} vs {attack.attack} {attack.norm.value} eps={attack.eps} steps={attack.steps} on "
        f"{len(workload.x)} images of {workload.info.name}, {family.role} {workload.context['model']}{calibrated}"
    )
    return Outcome([header, format_table(table, family.columns), *lines], paths)


class DefenseFamily:
    """A registered family of defenses, as ``defend`` uses it: ``spec`` (the resolved spec from the options:
    by default ``spec_type`` filled with the options named in ``spec_fields``), ``check`` (the options, before
    any work: by default ``--restarts``), ``run`` (the family's evaluation and files: ``(table, lines, paths)``);
    ``role`` names the classifier in the header, ``columns`` are the printed table's."""

    role: str
    columns: list[str] = ["attack", *COLUMNS]
    spec_type: type
    spec_fields: tuple[str, ...] = ()

    def spec(self, args: Namespace, family: str):
        given = {k: getattr(args, k) for k in self.spec_fields if getattr(args, k) is not None}
        return self.spec_type(defense=args.defense, **given).resolved(family)

    def check(self, args: Namespace, spec) -> None:
        """The family's own options, before any work (the shared ones are checked by ``defend``)."""

    def libraries(self, defense: str) -> list[str]:
        """The libraries that implement ``defense`` at its defaults (``cli.py list``): ours only by default."""
        return ["own"]


@register_defense("squeeze-detect", kind="detector", summary="Xu et al.'s feature-squeezing detector")
@register_defense(
    "bit-depth", "median", "resample", kind="squeezer", summary="a feature squeezer in front of the classifier"
)
class Squeezers(DefenseFamily):
    """Feature squeezers and the squeezing detector: every library's implementation, on the classifier."""

    role, columns = "model", COLUMNS
    spec_type, spec_fields = DefenseSpec, ("bits", "size", "factor", "mode", "threshold", "fpr")

    def check(self, args: Namespace, spec: DefenseSpec) -> None:
        check_defense_libraries(spec, args.defense_libraries)

    def libraries(self, defense: str) -> list[str]:
        return check_defense_libraries(DefenseSpec(defense=defense).resolved("mnist"))

    def run(self, args, spec, attack, workload, options, out):
        from advbridge.experiments.defend.squeezers import run_defend

        libraries = check_defense_libraries(spec, args.defense_libraries)
        table, agreement, paths = run_defend(spec, attack, workload, options, defense_libraries=libraries, out=out)
        lines = [
            "\nimplementations of the defense (squeezed images vs own):",
            format_table(agreement, AGREEMENT_COLUMNS),
        ]
        return table, lines, paths


TRAINED_SUMMARY = "trained into the classifier (adversarial training, defensive distillation)"


@register_defense(*TRAINING_DEFENSES, kind="training", summary=TRAINED_SUMMARY)
class TrainedDefenses(DefenseFamily):
    """Training-time defenses: each library's trained model and the undefended twin."""

    role = "undefended model"

    def spec(self, args: Namespace, family: str) -> TrainingDefenseSpec:
        spec = training_spec(args, args.train_eps, args.train_norm, args.train_steps, args.train_step_size)
        return spec.resolved(family, warm_start=args.from_undefended)

    @staticmethod
    def given(args: Namespace) -> dict[str, Any]:
        """The defended models' training options given on the command line (``None``: the twin's)."""
        return {"epochs": args.train_epochs, "max_train": args.train_max, "lr": args.train_lr,
                "optimizer": args.train_optimizer, "schedule": args.train_schedule,
                "clip_grad_norm": args.train_clip_grad_norm}  # fmt: skip

    def check(self, args: Namespace, spec: TrainingDefenseSpec) -> None:
        """The defended models' options, checked by building their config now (before the twin is trained); a
        user's model cannot be the twin (advbridge trains the defended models from the twin's recipe)."""
        from advbridge.zoo.train_config import TrainConfig
        from advbridge.zoo.user_models import is_factory

        super().check(args, spec)
        user_file = args.checkpoint is not None and not Path(args.checkpoint).expanduser().is_dir()
        if is_factory(args.model) or user_file:
            raise InvalidParameterError(
                f"expected a model advbridge trains (a timm name or a cache folder) with --defense {spec.defense}, "
                "got your own model; evaluate your defended model with --defense-module FILE.py:factory"
            )
        from advbridge.experiments.defend.run_trained import check_training_libraries

        info = dataset_info(args.dataset, data_root=args.data_root)
        config = TrainConfig(dataset=args.dataset, model=args.model or DEFAULT_MODELS[info.family],
                             data_root=args.data_root, **recipe(spec, **self.given(args)))  # fmt: skip
        check_training_libraries(spec, config, args.defense_libraries)

    def libraries(self, defense: str) -> list[str]:
        from advbridge.experiments.defend.run_trained import check_training_libraries
        from advbridge.zoo.train_config import TrainConfig

        spec = TrainingDefenseSpec(defense=defense).resolved("mnist")
        config = TrainConfig(dataset="mnist-5k", model=DEFAULT_MODELS["mnist"], **recipe(spec))
        return check_training_libraries(spec, config)

    def run(self, args, spec, attack, workload, options, out):
        from advbridge.experiments.defend.run_trained import defended_config, run_defend_trained

        config = defended_config(
            workload.card, from_undefended=args.from_undefended, data_root=args.data_root,
            **recipe(spec, **self.given(args)),
        )  # fmt: skip
        table, checks, paths = run_defend_trained(
            spec, attack, workload, config, options, defense_libraries=args.defense_libraries, out=out
        )
        lines = [
            f"{library}: {'CATASTROPHIC OVERFITTING' if c['catastrophic_overfitting'] else 'no catastrophic overfitting'}"
            f" (FGSM accuracy {c['fgsm_acc']:.3f}, PGD {c['pgd_acc']:.3f})"
            for library, c in checks.items()
        ]
        return table, lines, paths


GENERATIVE_SUMMARY = "with a generative model (purification, labelling, reconstruction-error detection)"


@register_defense(*GENERATIVE_DEFENSES, kind="generative", summary=GENERATIVE_SUMMARY)
class GenerativeDefenses(DefenseFamily):
    """Defenses with a generator (ours only): purification, labelling, reconstruction-error detection."""

    role = "classifier"
    spec_type, spec_fields = GenerativeDefenseSpec, ("sample", "eot", "refine_steps", "refine_lr", "threshold", "fpr")

    def check(self, args: Namespace, spec: GenerativeDefenseSpec) -> None:
        super().check(args, spec)
        if args.defense_libraries and {s.strip() for s in args.defense_libraries.split(",")} - {"own", ""}:
            raise InvalidParameterError(
                f"expected --defense-libraries own for {spec.defense} (no reference library has it), "
                f"got {args.defense_libraries}"
            )
        generator_config(args, spec.generator, epochs=args.gen_epochs, max_train=args.gen_max_train)

    def run(self, args, spec, attack, workload, options, out):
        from advbridge.experiments.defend.run_generative import run_defend_generative

        generator = generator_config(args, spec.generator, epochs=args.gen_epochs, max_train=args.gen_max_train)
        table, checks, paths = run_defend_generative(spec, attack, workload, generator, options, out=out)
        lines = ["checks: " + ", ".join(f"{k} {v:.3f}" for k, v in checks.items())] if checks else []
        return table, lines, paths


class UserDefense(DefenseFamily):
    """``--defense-module``: a user's defended system against its undefended twin (``--model``)."""

    role = "undefended twin"

    def spec(self, args: Namespace, family: str) -> UserDefenseSpec:
        return UserDefenseSpec(module=args.defense_module, eot=args.eot)

    def run(self, args, spec, attack, workload, options, out):
        from advbridge.experiments.defend.user import run_defend_module

        table, paths = run_defend_module(spec, attack, workload, options, out=out)
        return table, [], paths


# ---------------------------------------------------------------------------------------------- train
def train(args: Namespace) -> Outcome:
    """``train``: a classifier (plain or with a training-time defense, by ``--library``'s trainer) or a
    generator, trained or taken from the model cache."""
    from advbridge.zoo.checkpoints import checkpoint_dir

    if args.generator is not None and args.defense is not None:
        raise InvalidParameterError(
            f"expected --generator or --defense, got both (--generator {args.generator}, --defense {args.defense})"
        )
    train_budget = {"ratio": _ADVERSARIAL, "temperature": frozenset({"distill"}), "eps_ramp": _ADVERSARIAL,
                    "eps": _ADVERSARIAL, "steps": frozenset({"adv-pgd"}), "step_size": _ADVERSARIAL}  # fmt: skip
    check_options_apply(args, args.defense or "no --defense", train_budget)
    if args.generator is not None:
        from advbridge.defenses.generative import get_or_train_generator

        cfg = generator_config(args, args.generator, epochs=args.epochs, max_train=args.max_train, seed=args.seed)
        _, card = get_or_train_generator(cfg, progress=not args.quiet)
        return Outcome(
            [
                f"{cfg.generator} on {cfg.dataset}: test reconstruction error {card['test_reconstruction']:.3f} "
                f"(squared L2 per image), {card['epochs_run']} epochs",
                f"checkpoint: {checkpoint_dir(cfg.dataset, f'generator-{cfg.generator}', cfg.cache_fields())}",
            ]
        )
    from advbridge.zoo.train_config import TrainConfig
    from advbridge.zoo.training import get_or_train

    spec = None if args.defense is None else training_spec(args, args.eps, args.norm, args.steps, args.step_size)
    info = dataset_info(args.dataset, data_root=args.data_root)
    options = {"seed": args.seed, "max_train": args.max_train, "image_size": args.image_size, **train_options(args)}
    options = recipe(spec, **options) if spec is not None else {k: v for k, v in options.items() if v is not None}
    config = TrainConfig(
        dataset=args.dataset, model=args.model or DEFAULT_MODELS[info.family], data_root=args.data_root, **options
    )
    if spec is None:
        _, card = get_or_train(config, progress=not args.quiet)
    else:
        from advbridge.bridge.training import train_defended

        _, card = train_defended(config, spec, library=args.library, progress=not args.quiet)
    defense = f" with {card['defense']['defense']}" if "defense" in card else ""
    lines = [
        f"{card.get('model')} on {card.get('dataset')}{defense}: test accuracy {card.get('accuracy', float('nan')):.4f}"
    ]
    resolved = config.resolved()
    key = resolved.cache_fields() if "defense" not in card else {**resolved.cache_fields(), "defense": card["defense"]}
    if card.get("train_seconds") is not None:
        lines.append(f"its training took {card['train_seconds']:.1f} s ({card.get('art_trainer') or 'own trainer'})")
    lines.append(f"checkpoint: {checkpoint_dir(resolved.dataset, resolved.model, key)}")
    return Outcome(lines)

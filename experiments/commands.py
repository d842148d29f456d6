"""What ``cli.py``'s commands do, from their typed request (:mod:`experiments.requests`) to the lines they print
(cli.py only parses and prints): ``compare``, ``defend`` (one body; the defense families are registered in
:mod:`experiments.defend.families`) and ``train``. Every option is checked before a model is trained or an image
attacked; a bad one raises a :class:`~bridge.errors.AdvBridgeError` (exit 2, one line).
"""

from __future__ import annotations

from advbridge.bridge.errors import InvalidParameterError
from advbridge.bridge.io import OutputPrefix
from advbridge.bridge.spec import parse_eps, standard_eps
from advbridge.experiments.compare import default_out as compare_default_out
from advbridge.experiments.compare import format_table as compare_format_table
from advbridge.experiments.compare import parse_libraries, run_compare
from advbridge.experiments.defend.families import DefenseFamily, UserDefense
from advbridge.experiments.defend.report import default_out, format_table
from advbridge.experiments.engine import EvaluationOptions
from advbridge.experiments.minimal import DEFAULT_GRID_FACTORS
from advbridge.experiments.options import (
    ADVERSARIAL,
    attack_spec,
    calibration_images,
    check_options_apply,
    generator_config,
    recipe,
    take_surrogate,
    training_spec,
    workload_of,
)
from advbridge.experiments.registry import get_defense
from advbridge.experiments.requests import CompareRequest, DefendRequest, Outcome, TrainRequest
from advbridge.experiments.workload import DEFAULT_MODELS
from advbridge.zoo.datasets import check_split_size, dataset_info

# ---------------------------------------------------------------------------------------------- compare
#: The attack options only ``compare`` has (``defend`` runs its attack at their defaults).
COMPARE_ATTACK_OPTIONS = ("targeted", "overshoot", "candidates", "gamma", "init_norm", "levels")


def compare(request: CompareRequest) -> Outcome:
    """``compare``: one attack, every library, one model and its images."""
    libraries = parse_libraries(request.libraries)
    info = dataset_info(request.dataset, data_root=request.data_root)
    spec = attack_spec(request, info.family, **{k: getattr(request, k) for k in COMPARE_ATTACK_OPTIONS})
    if request.eps_grid is not None and not spec.minimal:
        raise InvalidParameterError(
            f"expected --eps-grid only with a minimal-norm attack (deepfool, ddn), got it with {spec.attack}"
        )
    if request.eps_grid is not None:  # (each value a finite number > 0: checked by the request)
        eps_grid = [parse_eps(e) for e in request.eps_grid.split(",") if e.strip()]
    else:
        eps_grid = [f * standard_eps(info.family, spec.norm) for f in DEFAULT_GRID_FACTORS]
    out = OutputPrefix.parse(request.out or compare_default_out(request.dataset, spec), default_name="compare")
    out.check_writable()  # the default folder too, before a model is trained or an image attacked
    if request.resume:  # a truncated resume key is refused now, not after the model is trained
        from advbridge.experiments.compare import PROGRESS_TAIL
        from advbridge.experiments.progress import read_resume_key

        read_resume_key(out.file(PROGRESS_TAIL))
    workload = workload_of(request)  # checks --n against the test split before it trains anything
    table, grid, paths = run_compare(
        spec,
        libraries,
        workload,
        out=out,
        eps_grid=eps_grid if spec.minimal else None,
        batch_size=request.attack_batch_size,
        resume=request.resume,
        show_progress=not request.quiet,
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
def defend(request: DefendRequest) -> Outcome:
    """``defend``: the registered defense ``--defense`` evaluated on the workload, one body for every family:
    the spec, the attack and the libraries checked, the output prefix checked, then the classifier, the
    calibration images of a detector, and the family's evaluation (its models, the engine, the files)."""
    if (request.defense is None) == (request.defense_module is None):
        raise InvalidParameterError(
            f"expected --defense NAME or --defense-module FILE.py:factory (one of them), got --defense {request.defense} "
            f"and --defense-module {request.defense_module}"
        )
    request = take_surrogate(request)
    family: DefenseFamily = UserDefense() if request.defense is None else get_defense(request.defense).family
    check_options_apply(request, request.defense or "module")
    info = dataset_info(request.dataset, data_root=request.data_root)
    spec = family.spec(request, info.family)
    attack = attack_spec(request, info.family)
    defense_libraries = family.check(request, spec)  # the implementations evaluated, checked once
    libraries = parse_libraries(request.libraries)
    calibrate = spec.detector and spec.threshold is None
    if calibrate:  # (--n alone is checked by workload_of, before it trains anything)
        check_split_size(
            request.dataset, request.n + request.calibration_n, request.data_root, what="--n + --calibration-n"
        )
    out = OutputPrefix.parse(request.out or default_out(request.dataset, spec, attack), default_name="defend")
    out.check_writable()
    workload = workload_of(request)
    calibration = calibration_images(request, workload) if calibrate else None
    options = EvaluationOptions(
        libraries, restarts=request.restarts, autoattack=not request.no_autoattack, calibration=calibration,
        show_progress=not request.quiet, batch_size=request.attack_batch_size,
    )  # fmt: skip
    table, lines, paths = family.run(request, spec, attack, workload, options, out, defense_libraries)
    calibrated = (
        f", threshold calibrated on {len(calibration)} other clean images at fpr {spec.fpr}"
        if calibration is not None
        else ""
    )
    header = (
        f"{spec.describe()} vs {attack.attack} {attack.norm.value} eps={attack.eps} steps={attack.steps} on "
        f"{len(workload.x)} images of {workload.info.name}, {family.role} {workload.context['model']}{calibrated}"
    )
    return Outcome([header, format_table(table, family.columns), *lines], paths)


# ---------------------------------------------------------------------------------------------- train
def train(request: TrainRequest) -> Outcome:
    """``train``: a classifier (plain or with a training-time defense, by ``--library``'s trainer) or a
    generator, trained or taken from the model cache."""
    from advbridge.zoo.checkpoints import checkpoint_dir

    if request.generator is not None and request.defense is not None:
        raise InvalidParameterError(
            f"expected --generator or --defense, got both (--generator {request.generator}, --defense {request.defense})"
        )
    train_budget = {"ratio": ADVERSARIAL, "temperature": frozenset({"distill"}), "eps_ramp": ADVERSARIAL,
                    "eps": ADVERSARIAL, "steps": frozenset({"adv-pgd"}), "step_size": ADVERSARIAL}  # fmt: skip
    check_options_apply(request, request.defense or "no --defense", train_budget)
    if request.generator is not None:
        from advbridge.defenses.generative import get_or_train_generator

        cfg = generator_config(
            request, request.generator, epochs=request.epochs, max_train=request.max_train, seed=request.seed
        )
        _, card = get_or_train_generator(cfg, progress=not request.quiet)
        return Outcome(
            [
                f"{cfg.generator} on {cfg.dataset}: test reconstruction error {card['test_reconstruction']:.3f} "
                f"(squared L2 per image), {card['epochs_run']} epochs",
                f"checkpoint: {checkpoint_dir(cfg.dataset, f'generator-{cfg.generator}', cfg.cache_fields())}",
            ]
        )
    from advbridge.zoo.train_config import TrainConfig
    from advbridge.zoo.training import get_or_train

    spec = (
        None
        if request.defense is None
        else training_spec(request, request.eps, request.norm, request.steps, request.step_size)
    )
    info = dataset_info(request.dataset, data_root=request.data_root)
    options = {
        "seed": request.seed,
        "max_train": request.max_train,
        "image_size": request.image_size,
        **request.train_options(),
    }
    options = recipe(spec, **options) if spec is not None else {k: v for k, v in options.items() if v is not None}
    config = TrainConfig(
        dataset=request.dataset,
        model=request.model or DEFAULT_MODELS[info.family],
        data_root=request.data_root,
        **options,
    )
    if spec is None:
        _, card = get_or_train(config, progress=not request.quiet)
    else:
        from advbridge.bridge.training import train_defended

        _, card = train_defended(config, spec, library=request.library, progress=not request.quiet)
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

"""advbridge command line: parsing and printing only.

    python cli.py compare --attack pgd [--norm Linf --eps 8/255 --steps 40 ...]
    python cli.py defend --defense median --attack deepfool [--size 2 --libraries own,art ...]
    python cli.py train --dataset mnist-5k --model advbridge_mnist_cnn
    python cli.py list

User errors print one line on stderr and exit with code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from bridge.errors import AdvBridgeError

log = logging.getLogger("advbridge")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    p.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset", default="mnist-5k", help="mnist-5k (embedded), mnist, cifar10, animals10, imagefolder:PATH"
    )
    p.add_argument("--model", default=None, help="any timm name or advbridge_mnist_cnn / advbridge_cifar_cnn")
    p.add_argument("--data-root", default=None, help="folder with the dataset files (default: $ADVBRIDGE_DATA)")
    p.add_argument("--pretrained", action="store_true", default=None, help="start from timm hub weights (online)")
    p.add_argument("--weights", default=None, help="start from a local checkpoint (.safetensors or state dict)")
    p.add_argument("--finetune", choices=("all", "head"), default=None, help="train the whole network or the head")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--optimizer", default=None, help="adam (default) or sgd (momentum 0.9)")
    p.add_argument("--schedule", default=None, help="learning rate: cosine (default) or cyclic 0 -> lr -> 0")
    p.add_argument("--clip-grad-norm", type=float, default=None, help="clip gradient norms at this value")


def _add_generator_options(p, epochs_flag: str | None = None, max_flag: str | None = None) -> None:
    """The generator's options; under ``defend`` its epochs and sample cap have their own flags."""
    p.add_argument("--latent-dim", type=int, default=None, help="generator: size of the code (default 16)")
    p.add_argument("--beta", type=float, default=None, help="generator: weight of the KL term (vae, cvae; default 1)")
    if epochs_flag:
        p.add_argument(epochs_flag, dest="gen_epochs", type=int, default=None, help="generator epochs (default 10)")
        p.add_argument(
            max_flag, dest="gen_max_train", type=int, default=None, help="generator: at most this many images"
        )


def _add_attack_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attack", required=True, help="fgsm, pgd, deepfool, ddn")
    p.add_argument("--norm", default=None, help="Linf or L2 (default: Linf for fgsm/pgd, L2 for deepfool/ddn)")
    p.add_argument("--eps", default=None, help="budget, e.g. 0.3 or 8/255 (default: the dataset's standard)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--step-size", default=None, help="absolute step (default 2.5*eps/steps for pgd)")
    p.add_argument("--random-start", action="store_true")
    p.add_argument("--n", type=int, default=100, help="number of test images")
    p.add_argument("--libraries", default="all", help="comma-separated: own,art,foolbox,torchattacks,advlib")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--attack-batch-size",
        type=int,
        default=None,
        help="images per attack batch, each seeded on its own (default: all in one); under torchrun the batches "
        "are shared out among the ranks",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="advbridge", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compare", help="run one attack with every library on the same model and images")
    _add_attack_options(p)
    p.add_argument("--targeted", action="store_true", help="target the next class, (y+1) mod K")
    p.add_argument("--overshoot", type=float, default=0.02)
    p.add_argument("--candidates", type=int, default=None, help="DeepFool: top-k classes (default: all)")
    p.add_argument("--gamma", type=float, default=0.05, help="DDN norm update factor")
    p.add_argument("--init-norm", type=float, default=1.0, help="DDN initial norm")
    p.add_argument("--levels", type=int, default=None, help="DDN quantization levels (e.g. 256)")
    p.add_argument("--eps-grid", default=None, help="minimal-norm attacks: comma-separated eps for robust accuracy")
    p.add_argument(
        "--out",
        default=None,
        help="output prefix (a .csv/.md/.json/.png extension is dropped; a folder gets 'compare'): writes "
        "<out>.csv, .md, .json, .png... (default: results/compare-<dataset>-<attack>-<norm>)",
    )
    p.add_argument("--resume", action="store_true", help="continue a killed run from <out>.progress/")
    _add_model_options(p)
    _add_common(p)

    p = sub.add_parser("defend", help="evaluate a defense: every implementation, transfer / white-box / adaptive")
    p.add_argument(
        "--defense",
        required=True,
        help="bit-depth, median, resample, squeeze-detect; trained: adv-fgsm, adv-fgsm-rs, adv-pgd, distill; "
        "generative: ae-purify, vae-purify, cvae-label, recon-detect",
    )
    _add_attack_options(p)
    p.add_argument("--bits", type=int, default=None, help="bit depth 1-8 (default: Xu et al.'s, 1 MNIST, 5 CIFAR)")
    p.add_argument("--size", type=int, default=None, help="median window k (k×k), 2-5 (default 2)")
    p.add_argument("--factor", type=float, default=None, help="resampling factor > 1 (default 2)")
    p.add_argument("--mode", default="bilinear", help="resampling interpolation: nearest, bilinear, bicubic, area...")
    p.add_argument("--threshold", type=float, default=None, help="detector threshold (default: calibrated at --fpr)")
    p.add_argument("--fpr", type=float, default=0.05, help="detector: target false-positive rate of the calibration")
    p.add_argument("--calibration-n", type=int, default=500, help="held-out clean test images for the calibration")
    p.add_argument(
        "--defense-libraries",
        default=None,
        help="whose implementations of the defense to evaluate, comma-separated (default: every library that has it)",
    )
    g = p.add_argument_group("training-time defenses (--eps/--steps are the attack's; the training budget has its own)")
    g.add_argument("--train-eps", default=None, help="training budget (default: the dataset's standard L∞)")
    g.add_argument("--train-norm", default="Linf", help="adv-pgd training norm: Linf or L2")
    g.add_argument("--train-steps", type=int, default=None, help="adv-pgd training steps (default: 40 MNIST, 7 CIFAR)")
    g.add_argument("--train-step-size", default=None, help="adv-pgd training step (default 2.5*eps/steps)")
    g.add_argument("--ratio", type=float, default=None, help="share of each batch made adversarial (adv-fgsm: 0.5)")
    g.add_argument("--temperature", type=float, default=None, help="distillation temperature (default 100)")
    g.add_argument(
        "--eps-ramp", type=float, default=None,
        help="share of training over which eps ramps up from 0 (default 0.25 from scratch, 0 from a warm start)",
    )  # fmt: skip
    g.add_argument("--train-epochs", type=int, default=None, help="epochs of the defended models (default: --epochs)")
    g.add_argument("--train-max", type=int, default=None, help="train the defended models on at most this many samples")
    g.add_argument("--train-lr", type=float, default=None, help="defended models' peak learning rate")
    g.add_argument("--train-optimizer", default=None, help="defended models' optimizer: adam or sgd")
    g.add_argument("--train-schedule", default=None, help="defended models' schedule: cosine or cyclic")
    g.add_argument("--train-clip-grad-norm", type=float, default=None, help="defended models' gradient clipping")
    g.add_argument("--from-undefended", action="store_true", help="start the defended models from the twin's weights")
    g.add_argument("--restarts", type=int, default=10, help="random restarts of the adaptive PGD (margin loss)")
    g.add_argument("--no-autoattack", action="store_true", help="skip AutoAttack against adversarial training")
    g = p.add_argument_group("generative defenses: ae-purify, vae-purify, cvae-label, recon-detect")
    _add_generator_options(g, epochs_flag="--gen-epochs", max_flag="--gen-max-train")
    g.add_argument("--sample", action="store_true", help="vae-purify: decode a draw from q(z|x) (random: EOT)")
    g.add_argument("--eot", type=int, default=10, help="draws per gradient of the adaptive attack on a random defense")
    g.add_argument("--refine-steps", type=int, default=0, help="cvae-label: Adam steps refining each class's code")
    g.add_argument("--refine-lr", type=float, default=0.05, help="cvae-label: their step size")
    p.add_argument(
        "--out", default=None, help="output prefix (default: results/defend-<dataset>-<defense>-<attack>-<norm>)"
    )
    _add_model_options(p)
    _add_common(p)

    p = sub.add_parser("train", help="train (or fetch from the cache) a classifier")
    _add_model_options(p)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--defense", default=None, help="training-time defense: adv-fgsm, adv-fgsm-rs, adv-pgd, distill")
    p.add_argument("--eps", default=None, help="adversarial training budget (default: the dataset's standard L∞)")
    p.add_argument("--norm", default="Linf", help="adv-pgd: Linf or L2")
    p.add_argument("--steps", type=int, default=None, help="adv-pgd steps (default: 40 MNIST, 7 CIFAR-10)")
    p.add_argument("--step-size", default=None, help="adv-pgd step (default 2.5*eps/steps; adv-fgsm-rs 1.25*eps)")
    p.add_argument("--ratio", type=float, default=None, help="share of each batch made adversarial (adv-fgsm: 0.5)")
    p.add_argument("--temperature", type=float, default=None, help="distillation temperature (default 100)")
    p.add_argument(
        "--eps-ramp", type=float, default=None,
        help="share of training over which eps ramps up from 0 (default 0.25 from scratch, 0 from a warm start)",
    )  # fmt: skip
    p.add_argument("--library", default="own", help="whose trainer runs the defense: own, art")
    p.add_argument("--max-train", type=int, default=None, help="train on at most this many samples")
    p.add_argument("--generator", default=None, help="train a generative model instead: ae, vae, cvae")
    _add_generator_options(p)
    _add_common(p)

    from experiments.study_command import add_parser as add_study_parser

    add_study_parser(sub)

    p = sub.add_parser("list", help="print the attack x library matrix")
    _add_common(p)
    return parser


def _train_options(args: argparse.Namespace) -> dict:
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


def _load_workload(args: argparse.Namespace):
    """The model (trained or from the cache) and ``--n`` seeded test images of ``compare`` and ``defend``."""
    from experiments.workload import load_workload

    return load_workload(
        args.dataset,
        args.model,
        n=args.n,
        seed=args.seed,
        data_root=args.data_root,
        progress=not args.quiet,
        **_train_options(args),
    )


def _attack_spec(args: argparse.Namespace, family: str, **extra):
    """The attack of ``compare`` and ``defend``: ``--eps`` defaults to the dataset's standard budget."""
    from bridge.errors import InvalidParameterError, check_name
    from bridge.spec import ATTACKS, DEFAULT_NORMS, AttackSpec, Norm, parse_eps, standard_eps

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


def cmd_compare(args: argparse.Namespace) -> int:
    from bridge.io import OutputPrefix

    if args.out is not None:  # an unwritable --out fails in a second, before torch is even imported
        OutputPrefix.parse(args.out, default_name="compare").check_writable()

    from bridge.errors import InvalidParameterError
    from bridge.spec import parse_eps, standard_eps
    from experiments.compare import default_out, format_table, parse_libraries, run_compare
    from experiments.minimal import DEFAULT_GRID_FACTORS
    from zoo.datasets import dataset_info

    libraries = parse_libraries(args.libraries)
    info = dataset_info(args.dataset, data_root=args.data_root)
    spec = _attack_spec(
        args,
        info.family,
        targeted=args.targeted,
        overshoot=args.overshoot,
        candidates=args.candidates,
        gamma=args.gamma,
        init_norm=args.init_norm,
        levels=args.levels,
    )
    norm = spec.norm
    if args.eps_grid:
        eps_grid = [parse_eps(e) for e in args.eps_grid.split(",") if e.strip()]
    else:
        eps_grid = [f * standard_eps(info.family, norm) for f in DEFAULT_GRID_FACTORS]
    if any(e <= 0 for e in eps_grid):
        raise InvalidParameterError(f"expected every --eps-grid value > 0, got {args.eps_grid}")
    out = OutputPrefix.parse(args.out or default_out(args.dataset, spec), default_name="compare")
    out.check_writable()  # the default folder too, before a model is trained or an image attacked
    workload = _load_workload(args)
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
    print(
        f"{spec.attack} {spec.norm.value} eps={spec.eps} steps={spec.steps} on {len(workload.x)} images of "
        f"{workload.info.name}, model {workload.context['model']} (clean test accuracy "
        f"{workload.card.get('accuracy', float('nan')):.4f})"
    )
    print(format_table(table))
    if grid is not None:
        print(f"\nrobust accuracy at eps ({spec.norm.value}):")
        print(grid.to_string(float_format=lambda v: f"{v:.3f}"))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def cmd_defend(args: argparse.Namespace) -> int:
    from bridge.io import OutputPrefix

    if args.out is not None:  # an unwritable --out fails in a second, before torch is even imported
        OutputPrefix.parse(args.out, default_name="defend").check_writable()

    from bridge.defense_spec import DEFENSES, GENERATIVE_DEFENSES, TRAINING_DEFENSES, DefenseSpec
    from bridge.errors import InvalidParameterError, check_name
    from experiments.compare import parse_libraries

    check_name("defense", args.defense, DEFENSES + TRAINING_DEFENSES + GENERATIVE_DEFENSES)
    if args.defense in TRAINING_DEFENSES:
        return _defend_trained(args)
    if args.defense in GENERATIVE_DEFENSES:
        return _defend_generative(args)
    from experiments.defend import (
        AGREEMENT_COLUMNS,
        COLUMNS,
        check_defense_libraries,
        default_out,
        format_table,
        run_defend,
    )
    from zoo.datasets import dataset_info

    info = dataset_info(args.dataset, data_root=args.data_root)
    spec = DefenseSpec(
        defense=args.defense,
        bits=args.bits,
        size=args.size,
        factor=args.factor,
        mode=args.mode,
        threshold=args.threshold,
        fpr=args.fpr,
    ).resolved(info.family)
    attack = _attack_spec(args, info.family)
    libraries = parse_libraries(args.libraries)
    defense_libraries = check_defense_libraries(spec, args.defense_libraries)
    calibrate = spec.detector and spec.threshold is None
    if calibrate and args.calibration_n < 1:
        raise InvalidParameterError(f"expected --calibration-n >= 1, got {args.calibration_n}")
    out = OutputPrefix.parse(args.out or default_out(args.dataset, spec, attack), default_name="defend")
    out.check_writable()
    workload = _load_workload(args)
    calibration = _calibration_images(args, workload) if calibrate else None
    table, agreement, paths = run_defend(
        spec,
        attack,
        workload,
        attack_libraries=libraries,
        defense_libraries=defense_libraries,
        calibration=calibration,
        out=out,
        show_progress=not args.quiet,
        batch_size=args.attack_batch_size,
    )
    print(
        f"{spec.describe()} vs {attack.attack} {attack.norm.value} eps={attack.eps} steps={attack.steps} on "
        f"{len(workload.x)} images of {workload.info.name}, model {workload.context['model']}"
        + (f", threshold calibrated on {len(calibration)} other clean images at fpr {spec.fpr}" if calibrate else "")
    )
    print(format_table(table, COLUMNS))
    print("\nimplementations of the defense (squeezed images vs own):")
    print(format_table(agreement, AGREEMENT_COLUMNS))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _calibration_images(args: argparse.Namespace, workload):
    """``--calibration-n`` clean test images after the evaluated ones in the same seeded order (disjoint)."""
    from zoo.datasets import load_tensors

    x, _ = load_tensors(args.dataset, "test", n=args.n + args.calibration_n, data_root=args.data_root, seed=args.seed)
    return x[args.n :].to(workload.x.device)


def _training_spec(args: argparse.Namespace, eps, norm, steps, step_size):
    from bridge.defense_spec import TrainingDefenseSpec
    from bridge.spec import parse_eps

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


def _recipe(spec, **given) -> dict:
    """Training options: those ``given``, the rest from the defense's recipe (adv-fgsm-rs: Wong et al.'s)."""
    from defenses.trainer import recipe_defaults

    return {**recipe_defaults(spec), **{k: v for k, v in given.items() if v is not None}}


def _defend_trained(args: argparse.Namespace) -> int:
    from bridge.errors import InvalidParameterError
    from bridge.io import OutputPrefix
    from experiments.compare import parse_libraries, results_prefix
    from experiments.defend import COLUMNS, format_table
    from experiments.defend_trained import defended_config, run_defend_trained
    from zoo.datasets import dataset_info

    info = dataset_info(args.dataset, data_root=args.data_root)
    spec = _training_spec(args, args.train_eps, args.train_norm, args.train_steps, args.train_step_size)
    spec = spec.resolved(info.family, warm_start=args.from_undefended)
    attack = _attack_spec(args, info.family)
    if args.restarts < 1:
        raise InvalidParameterError(f"expected --restarts >= 1, got {args.restarts}")
    libraries = parse_libraries(args.libraries)
    out = OutputPrefix.parse(
        args.out or results_prefix(f"defend-{args.dataset}-{args.defense}-{attack.attack}-{attack.norm.value}"),
        default_name="defend",
    )
    out.check_writable()
    workload = _load_workload(args)
    config = defended_config(
        workload.card,
        from_undefended=args.from_undefended,
        data_root=args.data_root,
        **_recipe(
            spec,
            epochs=args.train_epochs,
            max_train=args.train_max,
            lr=args.train_lr,
            optimizer=args.train_optimizer,
            schedule=args.train_schedule,
            clip_grad_norm=args.train_clip_grad_norm,
        ),
    )
    table, checks, paths = run_defend_trained(
        spec,
        attack,
        workload,
        config,
        attack_libraries=libraries,
        defense_libraries=args.defense_libraries,
        restarts=args.restarts,
        autoattack=not args.no_autoattack,
        out=out,
        show_progress=not args.quiet,
        batch_size=args.attack_batch_size,
    )
    print(
        f"{spec.describe()} vs {attack.attack} {attack.norm.value} eps={attack.eps} steps={attack.steps} on "
        f"{len(workload.x)} images of {workload.info.name}, undefended model {workload.context['model']}"
    )
    print(format_table(table, ["attack", *COLUMNS]))
    for library, check in checks.items():
        verdict = "CATASTROPHIC OVERFITTING" if check["catastrophic_overfitting"] else "no catastrophic overfitting"
        print(f"{library}: {verdict} (FGSM accuracy {check['fgsm_acc']:.3f}, PGD {check['pgd_acc']:.3f})")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _generator_config(args: argparse.Namespace, generator: str, *, epochs, max_train, seed=None):
    from defenses.generative import GeneratorConfig

    options = {"latent_dim": args.latent_dim, "beta": args.beta, "epochs": epochs, "lr": args.lr, "seed": seed}
    options["batch_size"] = args.batch_size
    return GeneratorConfig(
        dataset=args.dataset,
        generator=generator,
        max_train=max_train,
        data_root=args.data_root,
        **{k: v for k, v in options.items() if v is not None},
    )


def _train_generator(args: argparse.Namespace) -> int:
    from defenses.generative import get_or_train_generator
    from zoo.checkpoints import checkpoint_dir

    cfg = _generator_config(args, args.generator, epochs=args.epochs, max_train=args.max_train, seed=args.seed)
    _, card = get_or_train_generator(cfg, progress=not args.quiet)
    print(
        f"{cfg.generator} on {cfg.dataset}: test reconstruction error {card['test_reconstruction']:.3f} "
        f"(squared L2 per image), {card['epochs_run']} epochs"
    )
    print(f"checkpoint: {checkpoint_dir(cfg.dataset, f'generator-{cfg.generator}', cfg.cache_fields())}")
    return 0


def _defend_generative(args: argparse.Namespace) -> int:
    from bridge.defense_spec import GenerativeDefenseSpec
    from bridge.errors import InvalidParameterError
    from bridge.io import OutputPrefix
    from experiments.compare import parse_libraries
    from experiments.defend import COLUMNS, default_out, format_table
    from experiments.defend_generative import run_defend_generative
    from zoo.datasets import dataset_info

    info = dataset_info(args.dataset, data_root=args.data_root)
    spec = GenerativeDefenseSpec(
        defense=args.defense,
        sample=args.sample,
        eot=args.eot,
        refine_steps=args.refine_steps,
        refine_lr=args.refine_lr,
        threshold=args.threshold,
        fpr=args.fpr,
    ).resolved(info.family)
    attack = _attack_spec(args, info.family)
    if args.restarts < 1:
        raise InvalidParameterError(f"expected --restarts >= 1, got {args.restarts}")
    if args.defense_libraries and {s.strip() for s in args.defense_libraries.split(",")} - {"own", ""}:
        raise InvalidParameterError(
            f"expected --defense-libraries own for {spec.defense} (no reference library has it), got {args.defense_libraries}"
        )
    libraries = parse_libraries(args.libraries)
    generator = _generator_config(args, spec.generator, epochs=args.gen_epochs, max_train=args.gen_max_train)
    calibrate = spec.detector and spec.threshold is None
    if calibrate and args.calibration_n < 1:
        raise InvalidParameterError(f"expected --calibration-n >= 1, got {args.calibration_n}")
    out = OutputPrefix.parse(args.out or default_out(args.dataset, spec, attack), default_name="defend")
    out.check_writable()
    workload = _load_workload(args)
    calibration = _calibration_images(args, workload) if calibrate else None
    table, checks, paths = run_defend_generative(
        spec,
        attack,
        workload,
        generator,
        attack_libraries=libraries,
        restarts=args.restarts,
        calibration=calibration,
        out=out,
        show_progress=not args.quiet,
        batch_size=args.attack_batch_size,
    )
    print(
        f"{spec.describe()} vs {attack.attack} {attack.norm.value} eps={attack.eps} steps={attack.steps} on "
        f"{len(workload.x)} images of {workload.info.name}, classifier {workload.context['model']}"
    )
    print(format_table(table, ["attack", *COLUMNS]))
    if checks:
        print("checks: " + ", ".join(f"{k} {v:.3f}" for k, v in checks.items()))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    if args.generator is not None:
        return _train_generator(args)
    from experiments.workload import DEFAULT_MODELS
    from zoo.checkpoints import checkpoint_dir
    from zoo.datasets import dataset_info
    from zoo.training import TrainConfig, get_or_train

    spec = None
    if args.defense is not None:
        spec = _training_spec(args, args.eps, args.norm, args.steps, args.step_size)
    info = dataset_info(args.dataset, data_root=args.data_root)
    options = {"seed": args.seed, "max_train": args.max_train, **_train_options(args)}
    options = _recipe(spec, **options) if spec is not None else {k: v for k, v in options.items() if v is not None}
    config = TrainConfig(
        dataset=args.dataset, model=args.model or DEFAULT_MODELS[info.family], data_root=args.data_root, **options
    )
    if spec is None:
        _, card = get_or_train(config, progress=not args.quiet)
    else:
        from defenses.trainer import train_defended

        _, card = train_defended(config, spec, library=args.library, progress=not args.quiet)
    defense = f" with {card['defense']['defense']}" if "defense" in card else ""
    print(
        f"{card.get('model')} on {card.get('dataset')}{defense}: test accuracy {card.get('accuracy', float('nan')):.4f}"
    )
    resolved = config.resolved()
    key = resolved.cache_fields() if "defense" not in card else {**resolved.cache_fields(), "defense": card["defense"]}
    if card.get("train_seconds") is not None:
        print(f"its training took {card['train_seconds']:.1f} s ({card.get('art_trainer') or 'own trainer'})")
    print(f"checkpoint: {checkpoint_dir(resolved.dataset, resolved.model, key)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from experiments.matrix import support_matrix

    print(support_matrix().to_string())
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from experiments.study_command import run

    return run(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("art", "matplotlib", "PIL", "timm"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    commands = {"compare": cmd_compare, "defend": cmd_defend, "train": cmd_train, "study": cmd_study, "list": cmd_list}
    try:
        if args.command != "list" and any(name in os.environ for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR")):
            _join_torchrun(args)
        return commands[args.command](args)
    except AdvBridgeError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _join_torchrun(args: argparse.Namespace) -> None:
    """Under ``torchrun``: join the process group (left at exit); ranks other than 0 print nothing but
    warnings and errors (rank 0 prints the tables and writes the files)."""
    import atexit

    from bridge.distributed import setup, teardown

    if not setup().main:
        args.quiet = True
        logging.getLogger().setLevel(logging.WARNING)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    atexit.register(teardown)


if __name__ == "__main__":
    sys.exit(main())

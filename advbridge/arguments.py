"""The command line's parser: every command's options, their defaults and help (``advbridge --help``).

:mod:`advbridge.cli` parses with it and turns the parsed options into the typed requests of
:mod:`experiments.requests`, which check every number before any work. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

DESCRIPTION = """\
advbridge attacks and defends image classifiers and runs every attack and defense side by side with
adversarial-robustness-toolbox (ART), torchattacks, foolbox and adv-lib, on your model or ours: how far each
library agrees with ours, success, perturbation norms, speed, and the flags of a failed attack or a masked
gradient. Images are in [0, 1]; bad input is refused with one line (exit 2) before any work."""

EPILOG = """\
examples:
  advbridge compare --attack deepfool                       # the embedded 5,000 MNIST digits, our CNN
  advbridge compare --attack pgd --model my_net.py:build --checkpoint my_net.safetensors --dataset mnist
  advbridge defend --defense median --attack pgd --libraries own,art
  advbridge defend --defense-module my_defense.py:build --surrogate my_net.py:build --attack pgd
  advbridge list                                            # attacks, defenses, datasets, model sources"""


class Parser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one line on stderr and exit code 2, like every other bad input
    (argparse would print the whole usage block first); its subparsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its help (unless the help says it or there is none), descriptions as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    p.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")


def _add_training_defense_options(g, prefix: str) -> None:
    """The training budget (``defend``'s spelt ``--train-eps``..., beside the attack's ``--eps``) and the other
    options of a training-time defense."""
    g.add_argument(
        f"{prefix}eps", default=None, help="adversarial training budget (default: the dataset's standard L∞)"
    )
    g.add_argument(f"{prefix}norm", default="Linf", help="adv-pgd training norm: Linf or L2")
    g.add_argument(
        f"{prefix}steps", type=int, default=None, help="adv-pgd training steps (default: 40 MNIST, 7 CIFAR-10)"
    )
    g.add_argument(
        f"{prefix}step-size", default=None, help="adv-pgd step (default 2.5*eps/steps; adv-fgsm-rs 1.25*eps)"
    )
    g.add_argument("--ratio", type=float, default=None, help="share of each batch made adversarial (adv-fgsm: 0.5)")
    g.add_argument("--temperature", type=float, default=None, help="distillation temperature (default 100)")
    g.add_argument(
        "--eps-ramp", type=float, default=None,
        help="share of training over which eps ramps up from 0 (default 0.25 from scratch, 0 from a warm start)",
    )  # fmt: skip


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset", default="mnist-5k", help="mnist-5k (embedded), mnist, cifar10, animals10, imagefolder:PATH"
    )
    p.add_argument(
        "--model", default=None,
        help="a timm name, advbridge_mnist_cnn / advbridge_cifar_cnn, or your own: path/file.py:factory, package.module:factory",
    )  # fmt: skip
    p.add_argument("--data-root", default=None, help="folder with the dataset files (default: $ADVBRIDGE_DATA)")
    p.add_argument("--image-size", type=int, default=None, help="resize the images to this side (default: native)")
    p.add_argument("--pretrained", action="store_true", default=None, help="start from timm hub weights (online)")
    p.add_argument("--weights", default=None, help="start from a local checkpoint (.safetensors or state dict)")
    p.add_argument("--finetune", choices=("all", "head"), default=None, help="train the whole network or the head")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--optimizer", default=None, help="adam (default) or sgd (momentum 0.9)")
    p.add_argument("--schedule", default=None, help="learning rate: cosine (default) or cyclic 0 -> lr -> 0")
    p.add_argument("--clip-grad-norm", type=float, default=None, help="clip gradient norms at this value")


def _add_user_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("your own model (evaluated as it is, never trained)")
    g.add_argument(
        "--checkpoint", default=None,
        help="weights loaded strictly into --model (.safetensors or a torch.save state dict), or a cache folder",
    )  # fmt: skip
    g.add_argument("--mean", default=None, help="with --model file.py:factory: its input normalization, e.g. 0.1307")
    g.add_argument(
        "--std", default=None, help="with --model file.py:factory: e.g. 0.3081 (comma-separated per channel)"
    )
    g.add_argument(
        "--num-classes", type=int, default=None,
        help="logits your model returns, when more than the dataset's classes (default: the dataset's)",
    )  # fmt: skip


def _add_device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when there is one, else cpu)")


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
    from advbridge import __version__

    parser = Parser(prog="advbridge", description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"advbridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{compare,defend,audit,train,study,list}")
    real_add_parser = sub.add_parser

    def add_parser(name: str, **kwargs) -> argparse.ArgumentParser:  # every command: defaults in its help
        kwargs.setdefault("description", kwargs.get("help"))
        return real_add_parser(name, formatter_class=HelpFormatter, **kwargs)

    sub.add_parser = add_parser  # type: ignore[method-assign,assignment]  # every command: defaults in its help

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
    _add_user_model_options(p)
    _add_device_option(p)
    _add_common(p)

    p = sub.add_parser("defend", help="evaluate a defense: every implementation, transfer / white-box / adaptive")
    p.add_argument(
        "--defense",
        default=None,
        help="bit-depth, median, resample, squeeze-detect; trained: adv-fgsm, adv-fgsm-rs, adv-pgd, distill; "
        "generative: ae-purify, vae-purify, cvae-label, recon-detect",
    )
    p.add_argument(
        "--defense-module", default=None,
        help="your defended system instead: FILE.py:factory or package.module:factory",
    )  # fmt: skip
    p.add_argument(
        "--surrogate", default=None,
        help="with --defense-module: its undefended twin (FILE.py:factory...; its weights: --checkpoint), on which "
        "the transfer attacks are computed (default: --model)",
    )  # fmt: skip
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
    _add_training_defense_options(g, prefix="--train-")
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
    g.add_argument(
        "--refine-steps", type=int, default=None, help="cvae-label: Adam steps refining each class's code (default 0)"
    )
    g.add_argument("--refine-lr", type=float, default=None, help="cvae-label: their step size (default 0.05)")
    p.add_argument(
        "--out", default=None, help="output prefix (default: results/defend-<dataset>-<defense>-<attack>-<norm>)"
    )
    _add_model_options(p)
    _add_user_model_options(p)
    _add_device_option(p)
    _add_common(p)

    p = sub.add_parser(
        "audit",
        help="trust no number: every attack and library, the indicators of attack failure, their remedies, optimality",
    )  # fmt: skip
    p.add_argument(
        "--defense", default=None,
        help="a squeezer in front of --model (bit-depth, median, resample), the squeezing detector next to it "
        "(squeeze-detect), a defense trained from --model's "
        "recipe (adv-fgsm, adv-fgsm-rs, adv-pgd, distill), or a generative one (ae-purify, vae-purify, cvae-label)",
    )  # fmt: skip
    p.add_argument(
        "--defense-module", default=None, help="your defended system: FILE.py:factory or package.module:factory"
    )
    p.add_argument(
        "--surrogate", default=None,
        help="with --defense-module: its undefended twin (FILE.py:factory...; weights: --checkpoint) (default: --model)",
    )  # fmt: skip
    p.add_argument("--norm", default="Linf", help="threat model: Linf or L2")
    p.add_argument("--eps", default=None, help="budget, e.g. 0.3 or 8/255 (default: the dataset's standard)")
    p.add_argument("--steps", type=int, default=40, help="PGD iterations of the cascade")
    p.add_argument(
        "--budget", type=int, default=None,
        help="forward + backward propagations per sample and row, AttackBench's way (AttackBench: 2000; default: none)",
    )  # fmt: skip
    p.add_argument("--restarts", type=int, default=5, help="random restarts of the remedies' margin PGD")
    p.add_argument("--eot", type=int, default=10, help="draws per gradient of the EOT remedy")
    p.add_argument("--square-queries", type=int, default=1000, help="queries per image of the Square (black-box) row")
    p.add_argument("--no-autoattack", action="store_true", help="skip AutoAttack (standard) in the cascade")
    p.add_argument("--no-minimal", action="store_true", help="skip the minimal-norm attacks (DeepFool, DDN)")
    p.add_argument(
        "--every-point",
        action="store_true",
        help="every row attacks every sample (agreement studies; default: each row only the samples no earlier row "
        "broke, cheap rows first)",
    )
    p.add_argument(
        "--versus-autoattack",
        action="store_true",
        help="also run AutoAttack standard alone on the same images: its robust accuracy and propagations per "
        "sample beside the audit's on the card",
    )
    p.add_argument(
        "--binarization-samples", type=int, default=5,
        help="problems of the binarization test (Zimmermann et al. 2022), on the first clean-correct images; 0: none",
    )  # fmt: skip
    p.add_argument(
        "--binarization-inner", type=int, default=49,
        help="inner points of each binarization problem (the paper's case studies: 49 or 999)",
    )  # fmt: skip
    g = p.add_argument_group("a study's defended models (cli.py study)")
    g.add_argument(
        "--study", default=None, help="audit a cell of this study: cifar10-fs-at, animals10-fs-dd, mnist-cifar10-vae"
    )
    g.add_argument("--cell", default=None, help="with --study: the cell whose defended system is audited")
    g.add_argument(
        "--study-dir", default=None,
        help="with --study: the study's folder, whose budget the audit takes (default: results/study-NAME); the "
        "card goes to <study-dir>/audits/<cell>",
    )  # fmt: skip
    p.add_argument(
        "--logits", default=None, metavar="KEY_OR_INDEX",
        help="for your model or module returning several outputs (a tuple or dict): the index or key of its logits",
    )  # fmt: skip
    p.add_argument("--bits", type=int, default=None, help="--defense bit-depth: bits 1-8")
    p.add_argument("--size", type=int, default=None, help="--defense median: window k (k×k), 2-5")
    p.add_argument("--factor", type=float, default=None, help="--defense resample: factor > 1")
    p.add_argument("--mode", default=None, help="--defense resample: interpolation (default bilinear)")
    p.add_argument("--threshold", type=float, default=None, help="squeeze-detect: threshold (default: calibrated)")
    p.add_argument("--fpr", type=float, default=None, help="squeeze-detect: false-positive rate of the calibration")
    p.add_argument("--calibration-n", type=int, default=500, help="squeeze-detect: held-out clean calibration images")
    p.add_argument("--n", type=int, default=100, help="number of test images")
    p.add_argument("--libraries", default="all", help="comma-separated: own,art,foolbox,torchattacks,advlib")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", default=None,
        help="output prefix: <out>.csv, -samples.csv, -indicators.csv, .json, .md, .png "
        "(default: results/audit-<dataset>-<what>-<norm>)",
    )  # fmt: skip
    _add_model_options(p)
    _add_user_model_options(p)
    _add_device_option(p)
    _add_common(p)

    p = sub.add_parser(
        "bench",
        help="speed: own attacks vs every library and vs the bare passes they need, one row per attack × library",
    )
    p.add_argument(
        "--attacks", default="fgsm,pgd,pgd-l2,deepfool,deepfool-linf,ddn",
        help="comma-separated: fgsm, pgd, pgd-l2, deepfool, deepfool-linf, ddn",
    )  # fmt: skip
    p.add_argument("--libraries", default="all", help="comma-separated: own,art,foolbox,torchattacks,advlib")
    p.add_argument("--n", type=int, default=500, help="number of test images")
    p.add_argument("--repeats", type=int, default=3, help="rounds; the best time of each library is kept")
    p.add_argument("--seed", type=int, default=0, help="which test images")
    p.add_argument(
        "--out", default=None, help="output prefix: <out>.csv, <out>.md (default: results/bench-<dataset>-<model>)"
    )
    _add_model_options(p)
    _add_user_model_options(p)
    _add_device_option(p)
    _add_common(p)

    p = sub.add_parser("train", help="train (or fetch from the cache) a classifier")
    _add_model_options(p)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--defense", default=None, help="training-time defense: adv-fgsm, adv-fgsm-rs, adv-pgd, distill")
    _add_training_defense_options(p, prefix="--")
    p.add_argument("--library", default="own", help="whose trainer runs the defense: own, art")
    p.add_argument("--max-train", type=int, default=None, help="train on at most this many samples")
    p.add_argument("--generator", default=None, help="train a generative model instead: ae, vae, cvae")
    _add_generator_options(p)
    _add_common(p)

    from advbridge.experiments.studies.command import add_parser as add_study_parser

    add_study_parser(sub)

    p = sub.add_parser("list", help="what advbridge has: attacks and defenses × libraries, datasets, model sources")
    _add_common(p)
    return parser

"""Benchmark: an epoch of own adversarial training vs ART's trainer, and vs the floor of the passes it needs.

    python -m advbridge.experiments.bench.training [--dataset mnist-5k] [--n 2048] [--defense adv-pgd] [--steps 10]
        [--batch-size 128] [--epochs 1] [--weights FILE] [--repeats 2] [--eval-n 500] [--threads T]
        [--out results/benchmark-training]

Both libraries train the same model (``advbridge_mnist_cnn``, the same seeded initial weights, or both the
trained ``--weights``) for ``--epochs`` on the same ``--n`` training samples with the same batch size, attack
steps, eps (the dataset's standard, 0.3 on MNIST), Adam learning rate and cosine schedule, without validation
(``val_fraction=0``: ART's trainers do not validate), through :meth:`bridge.adapters.base.Adapter.train_defense`.
The time is the trainer's own ``train_seconds`` (the training loop; the card's test evaluation is outside it)
divided by the epochs. From scratch our trainer ramps eps up (ART's cannot), so the two robust accuracies are
those of two recipes; from ``--weights`` neither ramps, and they are the same algorithm (Madry et al.'s PGD
training), which is the comparison of implementations.

- ``floor_seconds``: the passes adversarial training needs, done as bare batched torch on the same batches:
  per batch, ``steps`` forward + input-backward passes (the attack) and one forward + backward + Adam step,
  in the default memory layout (the model as ART gets it); ``vs_floor`` = seconds ÷ floor (1.0 = no
  overhead beyond those passes; ours runs channels-last, so it can be below 1);
- ``own_speedup`` = the library's seconds ÷ own seconds (ART row > 1: own is faster; 1.0 on the own row);
  target ≥ 2 for ``adv-pgd``;
- ``peak_mb``: peak resident memory above the level before the run, the least of the rounds (as
  :mod:`experiments.bench.attacks`).

Each of ``--repeats`` rounds runs the floor and both trainers once, in a new random order; the best time
of each is kept. Results go to ``<out>.csv`` / ``<out>.md``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import time

import pandas as pd
import torch
import torch.nn.functional as F

from advbridge.bridge.adapters import get_adapter
from advbridge.bridge.defense_spec import TRAINING_DEFENSES, TrainingDefenseSpec
from advbridge.bridge.errors import InvalidParameterError, check_name
from advbridge.experiments.bench.attacks import peak_memory, reset_peak_memory
from advbridge.experiments.bench.report import output_prefix, print_and_save, user_errors_exit_2
from advbridge.zoo.train_config import TrainConfig
from advbridge.zoo.training import initial_model
from advbridge.zoo.training_data import stack, training_data

TARGET_SPEEDUP = 2.0
LIBRARIES = ("own", "art")

#: The defenses this bench times: those that attack while they train (the floor is the attack's passes).
ADVERSARIAL_TRAINING = tuple(d for d in TRAINING_DEFENSES if d != "distill")


def _budget(spec: TrainingDefenseSpec) -> tuple[float, int, float]:
    """``(eps, steps, step_size)`` of a resolved adversarial-training ``spec``: what this bench times."""
    if spec.eps is None or spec.steps is None or spec.step_size is None:
        raise InvalidParameterError(f"expected a resolved adversarial-training defense, got {spec.describe()}")
    return spec.eps, spec.steps, spec.step_size


def floor_seconds(config: TrainConfig, spec: TrainingDefenseSpec) -> float:
    """One epoch of the passes adversarial training needs, as bare torch on the same batches (from the same
    initial weights: the per-step cost does not depend on them)."""
    assert config.lr is not None  # the config is resolved (main)
    _, steps, step_size = _budget(spec)
    data = training_data(config)
    x_all, y_all = stack(data.train_ds, data.train_idx)
    with torch.random.fork_rng(devices=[]):
        model, _ = initial_model(config, data.info)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        start = time.perf_counter()
        for i in range(0, len(x_all), config.batch_size):
            x, y = x_all[i : i + config.batch_size], y_all[i : i + config.batch_size]
            model.eval()
            x_adv = x.clone()
            for _ in range(steps):
                x_adv.requires_grad_(True)
                (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
                x_adv = x_adv.detach() + step_size * grad.sign()
            model.train()
            loss = F.cross_entropy(model(x_adv.detach()), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return time.perf_counter() - start


#: The attack that measures what the trained models resist: PGD at the training eps, random start.
EVAL_STEPS = 20


def robust_accuracy(model: torch.nn.Module, config: TrainConfig, spec: TrainingDefenseSpec, n: int) -> float:
    """Accuracy of ``model`` under own PGD-20 (the training norm and eps, step 2.5·eps/20, random start,
    seed 0) on the first ``n`` test images of the training dataset (Madry et al. 2018's evaluation)."""
    from advbridge.own_attacks import pgd

    eps, _, _ = _budget(spec)
    test_ds = training_data(config).test_ds
    x, y = stack(test_ds, torch.arange(min(n, len(test_ds))))
    model.eval()
    generator = torch.Generator().manual_seed(0)
    x_adv = pgd(model, x, y, eps=eps, norm=spec.norm, steps=EVAL_STEPS, random_start=True, generator=generator)
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).float().mean())


def benchmark(config: TrainConfig, spec: TrainingDefenseSpec, repeats: int, eval_n: int = 500) -> pd.DataFrame:
    device = torch.device("cpu")
    best: dict[str, dict] = {}
    for _ in range(repeats):
        order = ["floor", *LIBRARIES]
        random.shuffle(order)
        for name in order:
            before = reset_peak_memory(device)
            if name == "floor":
                seconds, accuracy, robust = floor_seconds(config, spec), math.nan, math.nan
                peak = peak_memory(device) - before
            else:
                model, card = get_adapter(name).train_defense(config, spec, progress=False)
                peak = peak_memory(device) - before
                seconds, accuracy = card["train_seconds"] / config.epochs, card["accuracy"]
                robust = robust_accuracy(model, config, spec, eval_n)  # after the peak: not the trainer's
            old = best.get(name)
            if old is None or seconds < old["seconds"]:
                best[name] = {
                    "seconds": seconds,
                    "accuracy": accuracy,
                    "robust": robust,
                    "peak_mb": min(peak, (old or {}).get("peak_mb", math.inf)),
                }
            else:
                old["peak_mb"] = min(old["peak_mb"], peak)
    n = min(config.max_train or math.inf, len(training_data(config).train_idx))
    floor = best["floor"]["seconds"]
    rows = []
    for name in LIBRARIES:
        b = best[name]
        rows.append(
            {
                "library": name,
                "trainer": "defenses.trainer" if name == "own" else _art_trainer_name(spec),
                "seconds": b["seconds"],
                "images_per_s": n / b["seconds"],
                "own_speedup": b["seconds"] / best["own"]["seconds"],
                "floor_seconds": floor,
                "vs_floor": b["seconds"] / floor,
                "peak_mb": b["peak_mb"],
                "test_accuracy": b["accuracy"],
                f"robust_accuracy_pgd{EVAL_STEPS}": b["robust"],
            }
        )
    return pd.DataFrame(rows)


def _art_trainer_name(spec: TrainingDefenseSpec) -> str:
    if spec.defense == "adv-pgd":
        return "AdversarialTrainerMadryPGD" if spec.norm == "Linf" else "AdversarialTrainer(PGD L2)"
    return {"adv-fgsm": "AdversarialTrainer(FGM)", "adv-fgsm-rs": "AdversarialTrainerFBFPyTorch"}[spec.defense]


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="mnist-5k")
    parser.add_argument("--model", default="advbridge_mnist_cnn")
    parser.add_argument("--n", type=int, default=2048, help="training samples (one epoch)")
    parser.add_argument("--defense", default="adv-pgd", help="adv-fgsm, adv-fgsm-rs, adv-pgd")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--eval-n", type=int, default=500, help="test images of the robust accuracy (PGD-20)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of each training (the time is per epoch)")
    parser.add_argument(
        "--weights",
        default=None,
        help="start both trainers from these trained weights (a .safetensors file; no eps ramp, as ART has none)",
    )
    parser.add_argument("--out", default="results/benchmark-training")
    args = parser.parse_args(argv)
    # distillation trains with no attack: it has no floor of attack passes to be measured against
    check_name("adversarial-training defense", args.defense, ADVERSARIAL_TRAINING)
    for name in ("n", "steps", "batch_size", "repeats", "eval_n", "epochs"):
        if getattr(args, name) < 1:
            raise InvalidParameterError(f"expected --{name.replace('_', '-')} >= 1, got {getattr(args, name)}")
    out = output_prefix(args.out, "benchmark-training")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.weights is not None and not os.path.isfile(args.weights):
        raise InvalidParameterError(f"expected --weights an existing weights file, got {args.weights!r}")
    config = TrainConfig(
        dataset=args.dataset,
        model=args.model,
        epochs=args.epochs,
        max_train=args.n,
        val_fraction=0.0,
        batch_size=args.batch_size,
        weights=args.weights,
    ).resolved()
    from advbridge.zoo.datasets import dataset_info

    family = dataset_info(config.dataset, config.data_root, config.image_size).family
    steps = args.steps if args.defense == "adv-pgd" else None
    spec = TrainingDefenseSpec(defense=args.defense, steps=steps).resolved(family, warm_start=args.weights is not None)
    random.seed(0)
    table = benchmark(config, spec, args.repeats, args.eval_n)
    start = f"from {args.weights}" if args.weights else "from the same seeded initial weights"
    header = (
        f"{args.epochs} epoch(s) of {spec.describe()} training, {start}, {args.model} on {args.n} samples of "
        f"{args.dataset}, batch size "
        f"{args.batch_size}; best of {args.repeats}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads"
    )
    print_and_save(table, header, out)
    speedup = float(table.loc[table["library"] == "art", "own_speedup"].iloc[0])
    if args.defense == "adv-pgd":
        met = "met" if speedup >= TARGET_SPEEDUP else "NOT met"
        print(f"target own ≥ {TARGET_SPEEDUP:g}× ART: {met} ({speedup:.2f}×)")
        robust = table.set_index("library")[f"robust_accuracy_pgd{EVAL_STEPS}"]
        gap = 100 * abs(robust["own"] - robust["art"])
        print(f"target robust accuracy within 2 points of ART's: {'met' if gap <= 2 else 'NOT met'} ({gap:.1f} points)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

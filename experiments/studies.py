"""The three studies advbridge grew from (``../shared/studies/``), as :class:`~experiments.study.Study` objects.

Each reproduces the study's table (its defenses × its attacks, transfer attacks as it did) and adds the
adaptive and worst-case numbers. Default budgets (:data:`BUDGETS`) are sized to finish in ≤ 30 minutes on a
2-core CPU with an empty model cache; ``scale`` multiplies the images evaluated and the training samples
(for a GPU), and each budget entry can be given directly.

- ``cifar10-fs-at`` (study 002): the 6-conv CNN (``advbridge_cifar_cnn``), trained on the CIFAR-10 training
  images (the JPEG copies, the only complete ones offline) and evaluated on the **exact** test images
  (``cifar10-exact``); defenses none / FGSM adversarial training (eps 0.1, half of each batch, fine-tuned
  from the plain model) / a 2×2 median filter in front of a model trained on median-filtered images;
  attacks FGSM (L∞ 0.1) and DeepFool (L2).
- ``animals10-fs-dd`` (study 003): a timm backbone transfer-learned: pretrained on the CIFAR-10 vehicle
  classes, fine-tuned on the six animal classes (``cifar10-animals``; a real Animals-10 folder with
  ``dataset="animals10"`` and timm's pretrained weights online instead); defenses the feature-squeezing
  detector (bit depth, median, resampling; threshold 1.0 as the study, and calibrated at 5 % FPR) and
  defensive distillation (T = 100); attacks PGD (L∞ 8/255) and DDN (L2).
- ``mnist-cifar10-vae`` (study 001): VAE purification and class-conditional (CVAE) reconstruction
  labelling on MNIST and CIFAR-10 (exact test images), attacks FGSM and PGD.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bridge.defense_spec import DefenseSpec, GenerativeDefenseSpec, TrainingDefenseSpec
from bridge.errors import InvalidParameterError, UnknownNameError, did_you_mean
from bridge.io import OutputPrefix
from bridge.spec import AttackSpec, Norm
from experiments.defend import run_defend
from experiments.study import Study, StudyCell
from experiments.study_budgets import BUDGETS, LIBRARIES, SCALED, STUDIES
from experiments.workload import Workload, default_device
from zoo.checkpoints import CARD_FILE, WEIGHTS_FILE, checkpoint_dir
from zoo.datasets import dataset_info, load_tensors
from zoo.training import TrainConfig, get_or_train


@dataclass(frozen=True)
class StudyOptions:
    """What a user may change in a study: data, scale, budget entries, libraries, the backbone."""

    data_root: str | None = None
    scale: float = 1.0
    budget: dict[str, Any] | None = None  # entries of BUDGETS to override
    libraries: tuple[str, ...] | None = None
    model: str | None = None  # animals10-fs-dd: the timm backbone (default resnet18)
    dataset: str | None = None  # animals10-fs-dd: "cifar10-animals" (default, offline) or "animals10"
    pretrained: bool = False  # animals10-fs-dd with animals10: timm's pretrained weights (online)
    weights: str | None = None  # animals10-fs-dd: start from these weights instead of the vehicle pretraining
    finetune: str = "all"
    attack_batch_size: int | None = None
    progress: bool = True


def resolved_budget(name: str, options: StudyOptions) -> dict[str, Any]:
    """The study's budget: its defaults, ``scale`` applied, then the given entries."""
    if not (isinstance(options.scale, (int, float)) and math.isfinite(options.scale) and options.scale > 0):
        raise InvalidParameterError(f"expected scale > 0, got {options.scale!r}")
    budget = dict(BUDGETS[name])
    for key in SCALED:
        if key in budget:
            budget[key] = max(1, round(budget[key] * options.scale))
    for key, value in (options.budget or {}).items():
        if key not in budget:
            raise InvalidParameterError(f"expected a budget entry of {name} ({', '.join(budget)}), got {key!r}")
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidParameterError(f"expected {key} as an int >= 1, got {value!r}")
            budget[key] = value
    return budget


def attack_libraries(name: str, options: StudyOptions) -> list[str]:
    from experiments.compare import parse_libraries

    return parse_libraries(",".join(options.libraries)) if options.libraries else list(LIBRARIES[name])


def _workload(model, card: dict, dataset: str, n: int, data_root: str | None, offset: int = 0) -> Workload:
    """``n`` seeded test images of ``dataset`` (after the first ``offset``) with a trained model."""
    x, y = load_tensors(dataset, "test", n=offset + n, data_root=data_root, seed=0)
    device = default_device()
    info = dataset_info(dataset, data_root=data_root)
    return Workload(
        model=model.to(device).eval(), x=x[offset:].to(device), y=y[offset:].to(device), info=info, card=card
    )


def cached_cards(models: dict[str, tuple[TrainConfig, dict | None]]) -> dict[str, dict]:
    """The cards of those ``{name: (config, defense key)}`` models that are in the model cache (never trains:
    the report of a study with unfinished cells lists what exists)."""
    cards = {}
    for name, (config, defense) in models.items():
        resolved = config.resolved()
        key = resolved.cache_fields() if defense is None else {**resolved.cache_fields(), "defense": defense}
        card_file = checkpoint_dir(resolved.dataset, resolved.model, key) / CARD_FILE
        if card_file.is_file():
            cards[name] = json.loads(card_file.read_text())
    return cards


def _by_library(none: str, defended: str) -> Callable[[pd.Series], str]:
    """Row label: the undefended twin's rows ``none``, ours ``defended``, another library's ``defended (lib)``."""

    def label(row: pd.Series) -> str:
        library = row["defense_library"]
        if library == "undefended":
            return none
        return defended if library == "own" else f"{defended} ({library})"

    return label


def _trained_cell(name, attack_label, spec, attack, workload, config, libraries, budget, none, defended, options):
    from experiments.defend_trained import run_defend_trained

    def run(prefix: OutputPrefix) -> pd.DataFrame:
        return run_defend_trained(
            spec, attack, workload(), config(), attack_libraries=libraries, defense_libraries=["own"],
            restarts=budget["restarts"], out=prefix, show_progress=options.progress,
            batch_size=options.attack_batch_size,
        )[0]  # fmt: skip

    return StudyCell(name, attack_label, run, _by_library(none, defended))


def _squeezer_run(spec, attack, workload, libraries, options, *, source=None, calibration=None):
    """``run(prefix)`` of a squeezer or detector cell: ``run_defend`` on ``workload()`` (``source()``: the
    transfer attacks' model; ``calibration()``: the detector's held-out clean images), own implementation."""

    def run(prefix: OutputPrefix) -> pd.DataFrame:
        return run_defend(
            spec, attack, workload(), attack_libraries=libraries, defense_libraries=["own"], out=prefix,
            show_progress=options.progress, batch_size=options.attack_batch_size,
            source=None if source is None else source(), calibration=None if calibration is None else calibration(),
        )[0]  # fmt: skip

    return run


# ---------------------------------------------------------------------------------------------- study 002
def cifar10_fs_at(options: StudyOptions) -> Study:
    """Study 002: FGSM adversarial training vs median-filter squeezing on CIFAR-10 (see the module doc)."""
    from defenses.trainer import train_on_squeezed
    from experiments.defend_trained import defended_config

    name = "cifar10-fs-at"
    budget, libraries = resolved_budget(name, options), attack_libraries(name, options)
    twin_config = TrainConfig(
        dataset="cifar10", model="advbridge_cifar_cnn", epochs=budget["epochs"], max_train=budget["max_train"],
        data_root=options.data_root,
    )  # fmt: skip
    median = DefenseSpec(defense="median", size=2).resolved("cifar10")
    adversarial = TrainingDefenseSpec(defense="adv-fgsm", eps=0.1, eps_ramp=0).resolved(
        "cifar10"
    )  # fine-tuned: no ramp
    attacks = {
        "FGSM": AttackSpec(attack="fgsm", norm=Norm.LINF, eps=0.1),
        "DeepFool": AttackSpec(attack="deepfool", norm=Norm.L2, steps=50, overshoot=0.02),
    }

    @functools.cache
    def twin() -> Workload:
        model, card = get_or_train(twin_config, progress=options.progress)
        return _workload(model, card, "cifar10-exact", budget["n"], options.data_root)

    squeezed_key = {"defense": "train-on-squeezed", "squeezer": median.to_dict()}

    @functools.cache
    def squeezed() -> tuple[Workload, dict]:
        model, card = train_on_squeezed(twin_config, median, progress=options.progress)
        return _workload(model, card, "cifar10-exact", budget["n"], options.data_root), card

    def at_config() -> TrainConfig:
        return defended_config(
            twin().card, from_undefended=True, data_root=options.data_root, epochs=budget["defense_epochs"]
        )

    cells = []
    for label, attack in attacks.items():
        cells.append(
            _trained_cell(
                f"adversarial-training-{attack.attack}",
                label,
                adversarial,
                attack,
                twin,
                at_config,
                libraries,
                budget,
                "none",
                "adversarial training",
                options,
            )  # fmt: skip
        )

    for label, attack in attacks.items():
        cells.append(
            StudyCell(
                f"feature-squeezing-{attack.attack}",
                label,
                _squeezer_run(median, attack, lambda: squeezed()[0], libraries, options, source=lambda: twin().model),
                _by_library("none", "feature squeezing"),
            )  # fmt: skip
        )
    bit_depth = DefenseSpec(defense="bit-depth", bits=5).resolved("cifar10")

    extra = "5-bit depth (not in the study)"
    for label, attack in attacks.items():
        cells.append(
            StudyCell(
                f"bit-depth-{attack.attack}",
                label,
                _squeezer_run(bit_depth, attack, twin, libraries, options),
                lambda row: extra,
            )
        )
    return Study(
        name=name,
        title="CIFAR-10: feature squeezing (median 2×2) vs FGSM adversarial training (study 002), corrected",
        cells=cells,
        key={"budget": budget, "libraries": libraries, "data_root_given": options.data_root is not None},
        defenses=["none", "adversarial training", "feature squeezing", extra],
        attacks=list(attacks),
        published={
            ("none", "FGSM"): 0.1,
            ("none", "DeepFool"): 7.4,
            ("adversarial training", "FGSM"): 76.9,
            ("feature squeezing", "FGSM"): 45.3,
            ("feature squeezing", "DeepFool"): 77.5,
        },
        published_clean={"none": 88.5, "adversarial training": 81.5, "feature squeezing": 80.1},
        notes=[
            f"data: trained on {budget['max_train']} CIFAR-10 training images (the JPEG copies of the data root, "
            f"the only complete ones offline), evaluated on the first {budget['n']} of a seeded permutation of the "
            "exact test images (`cifar10-exact`)",
            f"model: advbridge_cifar_cnn (the study's 6-conv net), {budget['epochs']} epochs, Adam, cosine; "
            f"FGSM training: {adversarial.describe()}, fine-tuned {budget['defense_epochs']} epochs from the plain "
            "model; feature squeezing: a 2×2 median in front of the same net trained on median-filtered images",
            f"attacks: FGSM L∞ 0.1; DeepFool L2 (50 steps, overshoot 0.02); attack libraries {', '.join(libraries)}; "
            f"adaptive: margin PGD-40 × {budget['restarts']} restarts and AutoAttack (adversarial training), "
            "BPDA through the median (squeezing)",
            "added to the study's rows: Xu et al.'s CIFAR-10 squeezer (5-bit depth) in front of the plain model, "
            "the defense whose naive white-box gradient is zero",
        ],
        cards=lambda: cached_cards(
            {
                "plain classifier (cifar10)": (twin_config, None),
                "trained on median-filtered images (cifar10)": (twin_config, squeezed_key),
            }
        ),
    )


# ---------------------------------------------------------------------------------------------- study 003
def animals10_fs_dd(options: StudyOptions) -> Study:
    """Study 003: the feature-squeezing detector and defensive distillation on a transfer-learned backbone."""
    from experiments.defend_trained import defended_config

    name = "animals10-fs-dd"
    budget, libraries = resolved_budget(name, options), attack_libraries(name, options)
    model_name = options.model or "resnet18"
    dataset = options.dataset or "cifar10-animals"
    if dataset not in ("cifar10-animals", "animals10"):
        raise UnknownNameError(did_you_mean("study dataset", dataset, ("cifar10-animals", "animals10")))
    info = dataset_info(dataset, data_root=options.data_root)
    common = {"model": model_name, "epochs": budget["epochs"], "max_train": budget["max_train"]}
    source_config = TrainConfig(dataset="cifar10-vehicles", data_root=options.data_root, **common)
    transfer = "given" if options.weights else ("timm" if options.pretrained else "vehicles")

    def source_weights(train: bool = True) -> str | None:
        """The starting weights of the target task: the source task's (trained now if ``train``), or given."""
        if transfer != "vehicles":
            return options.weights
        if train:
            get_or_train(source_config, progress=options.progress)  # pretraining on the source task (cached)
        resolved = source_config.resolved()
        return str(checkpoint_dir(resolved.dataset, resolved.model, resolved.cache_fields()) / WEIGHTS_FILE)

    def target_config(train_source: bool = True) -> TrainConfig:
        return TrainConfig(
            dataset=dataset, data_root=options.data_root, weights=source_weights(train_source),
            pretrained=options.pretrained, finetune=options.finetune, **common,
        )  # fmt: skip

    @functools.cache
    def target() -> tuple[TrainConfig, Any, dict]:
        config = target_config()
        model, card = get_or_train(config, progress=options.progress)
        return config, model, card

    def study_cards() -> dict[str, dict]:
        models = {f"source task ({source_config.dataset})": (source_config, None)}
        weights = source_weights(train=False)
        if weights is None or Path(weights).is_file():
            models[f"target task ({dataset})"] = (target_config(train_source=False), None)
        return cached_cards(models)

    def workload(offset: int = 0, n: int | None = None) -> Workload:
        _, model, card = target()
        return _workload(model, card, dataset, n or budget["n"], options.data_root, offset)

    eps = 8 / 255 if info.family == "cifar10" else 4 / 255
    attacks = {
        "PGD": AttackSpec(attack="pgd", norm=Norm.LINF, eps=eps, steps=budget["steps"]),
        "DDN": AttackSpec(attack="ddn", norm=Norm.L2, steps=100),
    }
    detectors = {
        "squeezing detector (threshold 1.0)": DefenseSpec(defense="squeeze-detect", factor=2.0, threshold=1.0),
        "squeezing detector (5 % FPR)": DefenseSpec(defense="squeeze-detect", factor=2.0, fpr=0.05),
    }
    detectors = {k: v.resolved(info.family) for k, v in detectors.items()}
    distill = TrainingDefenseSpec(defense="distill", temperature=100.0).resolved(info.family)

    def calibration() -> torch.Tensor:  # held-out clean test images after the evaluated ones
        return workload(budget["n"], budget["n_calibration"]).x

    def detector_run(spec: DefenseSpec, attack: AttackSpec):
        held_out = calibration if spec.threshold is None else None
        return _squeezer_run(spec, attack, workload, libraries, options, calibration=held_out)

    cells = []
    for label, spec in detectors.items():
        slug = "detector-threshold-1" if spec.threshold is not None else "detector-fpr-5"
        for attack_label, attack in attacks.items():
            cells.append(
                StudyCell(f"{slug}-{attack.attack}", attack_label, detector_run(spec, attack), lambda r, s=label: s)
            )

    def distill_config() -> TrainConfig:
        config, _, card = target()
        return defended_config(card, data_root=options.data_root, epochs=budget["defense_epochs"])

    for attack_label, attack in attacks.items():
        cells.append(
            _trained_cell(
                f"distillation-{attack.attack}",
                attack_label,
                distill,
                attack,
                workload,
                distill_config,
                libraries,
                budget,
                "none",
                "defensive distillation",
                options,
            )  # fmt: skip
        )
    source = {
        "vehicles": f"pretrained on the CIFAR-10 vehicle classes ({budget['max_train']} images, {budget['epochs']} "
        "epochs), then fine-tuned",
        "timm": "from timm's pretrained weights, fine-tuned",
        "given": f"from the weights {options.weights}, fine-tuned",
    }[transfer]
    return Study(
        name=name,
        title=f"{dataset}: feature-squeezing detector and defensive distillation on {model_name} (study 003), corrected",
        cells=cells,
        key={
            "budget": budget,
            "libraries": libraries,
            "model": model_name,
            "dataset": dataset,
            "transfer": transfer,
            "weights": options.weights,
            "finetune": options.finetune,
        },  # fmt: skip
        defenses=["none", *detectors, "defensive distillation"],
        cards=study_cards,
        attacks=list(attacks),
        notes=[
            f"data: {dataset}"
            + (
                " — the offline stand-in for Animals-10: the six CIFAR-10 animal classes (bird, cat, deer, dog, "
                "frog, horse; JPEG copies), first "
                if dataset == "cifar10-animals"
                else ", first "
            )
            + f"{budget['n']} test images of a seeded permutation",
            f"model: {model_name} (timm), {source} on {dataset} ({budget['max_train']} images, {budget['epochs']} "
            f"epochs, finetune {options.finetune}); distillation: {distill.describe()}, teacher and student "
            f"{budget['defense_epochs']} epochs from the same starting weights",
            f"detector: {next(iter(detectors.values())).describe()}, threshold 1.0 (the study's) or calibrated at 5 % "
            f"FPR on {budget['n_calibration']} other clean test images; robust accuracy counts an example as "
            "broken only if it fools the classifier and passes the detector",
            f"attacks: PGD L∞ {eps:.4g} ({budget['steps']} steps), DDN L2 (100 steps); libraries {', '.join(libraries)}; "
            "adaptive: detector-aware PGD with BPDA (detector: DDN has no detector-aware form, so the detector's "
            f"DDN cells have transfer rows only), margin PGD × {budget['restarts']}, PGD on z/T and DeepFool "
            "(distillation)",
        ],
    )


# ---------------------------------------------------------------------------------------------- study 001
def mnist_cifar10_vae(options: StudyOptions) -> Study:
    """Study 001: VAE purification and CVAE labelling against FGSM and PGD, on MNIST and CIFAR-10."""
    from defenses.generative import GeneratorConfig
    from experiments.defend_generative import run_defend_generative

    name = "mnist-cifar10-vae"
    budget, libraries = resolved_budget(name, options), attack_libraries(name, options)
    tasks = {  # train set, test set, classifier, eps, its max_train and epochs
        "MNIST": ("mnist", "mnist", "advbridge_mnist_cnn", 0.3, budget["max_train"], budget["epochs"]),
        "CIFAR-10": ("cifar10", "cifar10-exact", "advbridge_cifar_cnn", 8 / 255, budget["cifar_max_train"],
                     budget["cifar_epochs"]),
    }  # fmt: skip
    defenses = {"VAE purification": "vae-purify", "CVAE labelling": "cvae-label"}
    cells, classifiers = [], {}
    steps = budget["steps"]
    for task, (train_set, test_set, model_name, eps, max_train, epochs) in tasks.items():
        config = TrainConfig(
            dataset=train_set, model=model_name, epochs=epochs, max_train=max_train, data_root=options.data_root
        )
        classifiers[f"{task} classifier ({train_set})"] = (config, None)

        @functools.cache
        def workload(config=config, test_set=test_set) -> Workload:
            model, card = get_or_train(config, progress=options.progress)
            return _workload(model, card, test_set, budget["n"], options.data_root)

        attacks = {
            "FGSM": AttackSpec(attack="fgsm", norm=Norm.LINF, eps=eps),
            "PGD": AttackSpec(attack="pgd", norm=Norm.LINF, eps=eps, steps=steps),
        }
        for label, defense in defenses.items():
            spec = GenerativeDefenseSpec(defense=defense).resolved(dataset_info(train_set).family)
            generator = GeneratorConfig(
                dataset=train_set, generator=spec.generator, epochs=budget["gen_epochs"],
                max_train=budget["gen_max_train"], data_root=options.data_root,
            )  # fmt: skip
            for attack_label, attack in attacks.items():

                def run(prefix, spec=spec, attack=attack, workload=workload, generator=generator):
                    return run_defend_generative(
                        spec, attack, workload(), generator, attack_libraries=libraries,
                        restarts=budget["restarts"], out=prefix, show_progress=options.progress,
                        batch_size=options.attack_batch_size,
                    )[0]  # fmt: skip

                cells.append(
                    StudyCell(
                        f"{train_set}-{defense}-{attack.attack}",
                        attack_label,
                        run,
                        _by_library(f"{task}: none", f"{task}: {label}"),
                    )  # fmt: skip
                )
    return Study(
        name=name,
        title="VAE purification and CVAE labelling on MNIST and CIFAR-10 (study 001), corrected",
        cells=cells,
        key={"budget": budget, "libraries": libraries},
        defenses=[f"{task}: {label}" for task in tasks for label in ("none", *defenses)],
        attacks=["FGSM", "PGD"],
        cards=lambda: cached_cards(classifiers),
        notes=[
            f"data: MNIST (full, the data root's files) and CIFAR-10 (trained on the JPEG copies, evaluated on the "
            f"exact test images); classifiers trained on {budget['max_train']} MNIST images ({budget['epochs']} "
            f"epochs) and {budget['cifar_max_train']} CIFAR-10 images ({budget['cifar_epochs']} epochs), "
            f"generators (latent 16, β 1) on {budget['gen_max_train']} images for {budget['gen_epochs']} epochs; "
            f"first {budget['n']} test images of a seeded permutation",
            "models: advbridge_mnist_cnn, advbridge_cifar_cnn (the CIFAR-10 one is cifar10-fs-at's plain model "
            "when the budgets match: one cache entry)",
            f"attacks: FGSM, PGD-{budget['steps']} (L∞ 0.3 MNIST, 8/255 CIFAR-10); libraries {', '.join(libraries)}; "
            f"adaptive: end-to-end margin PGD through the generator × {budget['restarts']} restarts (and through the "
            "labeller's K decodes)",
            "the study published its numbers only as figures (not in its README): no published table to compare with",
        ],
    )


BUILDERS: dict[str, Callable[[StudyOptions], Study]] = {
    "cifar10-fs-at": cifar10_fs_at,
    "animals10-fs-dd": animals10_fs_dd,
    "mnist-cifar10-vae": mnist_cifar10_vae,
}


def build_study(name: str, options: StudyOptions | None = None) -> Study:
    """The study ``name`` (one of :data:`STUDIES`) with ``options``."""
    if name not in BUILDERS:
        raise UnknownNameError(did_you_mean("study", name, STUDIES))
    return BUILDERS[name](options or StudyOptions())

"""``animals10-fs-dd`` (study 003): a timm backbone transfer-learned: pretrained on the CIFAR-10 vehicle classes, fine-tuned on the six animal classes (``cifar10-animals``; a real Animals-10 folder with ``dataset="animals10"`` and timm's pretrained weights online instead); defenses the feature-squeezing detector (bit depth, median, resampling; threshold 1.0 as the study, and calibrated at 5 % FPR) and defensive distillation (T = 100); attacks PGD (L∞ 8/255) and DDN (L2)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch

from advbridge.bridge.defense_spec import DefenseSpec, TrainingDefenseSpec
from advbridge.bridge.errors import UnknownNameError, did_you_mean
from advbridge.bridge.spec import AttackSpec, Norm
from advbridge.experiments.studies.common import (
    StudyOptions,
    attack_libraries,
    cached_cards,
    fixed_label,
    make_workload,
    resolved_budget,
    squeezer_run,
    squeezer_system,
    trained_cell,
)
from advbridge.experiments.studies.engine import Study, StudyCell
from advbridge.experiments.workload import Workload
from advbridge.zoo.checkpoints import WEIGHTS_FILE, checkpoint_dir
from advbridge.zoo.datasets import dataset_info
from advbridge.zoo.training import TrainConfig, get_or_train


def animals10_fs_dd(options: StudyOptions) -> Study:
    """Study 003: the feature-squeezing detector and defensive distillation on a transfer-learned backbone."""
    from advbridge.experiments.defend.run_trained import defended_config

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
        return make_workload(model, card, dataset, n or budget["n"], options.data_root, offset)

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
        return squeezer_run(spec, attack, workload, libraries, options, calibration=held_out)

    def detector_system(spec: DefenseSpec, attack: AttackSpec):
        return squeezer_system(spec, attack, workload, calibration=calibration if spec.threshold is None else None)

    cells = []
    for label, spec in detectors.items():
        slug = "detector-threshold-1" if spec.threshold is not None else "detector-fpr-5"
        for attack_label, attack in attacks.items():
            cells.append(
                StudyCell(
                    f"{slug}-{attack.attack}",
                    attack_label,
                    detector_run(spec, attack),
                    fixed_label(label),
                    detector_system(spec, attack),
                )  # fmt: skip
            )

    def distill_config() -> TrainConfig:
        config, _, card = target()
        return defended_config(card, data_root=options.data_root, epochs=budget["defense_epochs"])

    for attack_label, attack in attacks.items():
        cells.append(
            trained_cell(
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

"""``cifar10-fs-at`` (study 002): the 6-conv CNN (``advbridge_cifar_cnn``), trained on the CIFAR-10 training images (the JPEG copies, the only complete ones offline) and evaluated on the **exact** test images (``cifar10-exact``); defenses none / FGSM adversarial training (eps 0.1, half of each batch, fine-tuned from the plain model) / a 2×2 median filter in front of a model trained on median-filtered images; attacks FGSM (L∞ 0.1) and DeepFool (L2)."""

from __future__ import annotations

import functools

from advbridge.bridge.defense_spec import DefenseSpec, TrainingDefenseSpec
from advbridge.bridge.spec import AttackSpec, Norm
from advbridge.experiments.studies.common import (
    StudyOptions,
    attack_libraries,
    by_library,
    cached_cards,
    make_workload,
    resolved_budget,
    squeezer_run,
    squeezer_system,
    trained_cell,
)
from advbridge.experiments.studies.engine import Study, StudyCell
from advbridge.experiments.workload import Workload
from advbridge.zoo.training import TrainConfig, get_or_train


def cifar10_fs_at(options: StudyOptions) -> Study:
    """Study 002: FGSM adversarial training vs median-filter squeezing on CIFAR-10 (see the module doc)."""
    from advbridge.defenses.trainer import train_on_squeezed
    from advbridge.experiments.defend.run_trained import defended_config

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
        return make_workload(model, card, "cifar10-exact", budget["n"], options.data_root)

    squeezed_key = {"defense": "train-on-squeezed", "squeezer": median.to_dict()}

    @functools.cache
    def squeezed() -> tuple[Workload, dict]:
        model, card = train_on_squeezed(twin_config, median, progress=options.progress)
        return make_workload(model, card, "cifar10-exact", budget["n"], options.data_root), card

    def at_config() -> TrainConfig:
        return defended_config(
            twin().card, from_undefended=True, data_root=options.data_root, epochs=budget["defense_epochs"]
        )

    cells = []
    for label, attack in attacks.items():
        cells.append(
            trained_cell(
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
                squeezer_run(median, attack, lambda: squeezed()[0], libraries, options, source=lambda: twin().model),
                by_library("none", "feature squeezing"),
                squeezer_system(median, attack, lambda: squeezed()[0]),
            )  # fmt: skip
        )
    bit_depth = DefenseSpec(defense="bit-depth", bits=5).resolved("cifar10")

    extra = "5-bit depth (not in the study)"
    for label, attack in attacks.items():
        cells.append(
            StudyCell(
                f"bit-depth-{attack.attack}",
                label,
                squeezer_run(bit_depth, attack, twin, libraries, options),
                lambda row: extra,
                squeezer_system(bit_depth, attack, twin),
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

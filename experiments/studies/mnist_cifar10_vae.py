"""``mnist-cifar10-vae`` (study 001): VAE purification and class-conditional (CVAE) reconstruction labelling on MNIST and CIFAR-10 (exact test images), attacks FGSM and PGD."""

from __future__ import annotations

import functools

from advbridge.bridge.defense_spec import GenerativeDefenseSpec
from advbridge.bridge.spec import AttackSpec, Norm
from advbridge.experiments.studies.common import (
    StudyOptions,
    attack_libraries,
    by_library,
    cached_cards,
    evaluation_options,
    make_workload,
    resolved_budget,
)
from advbridge.experiments.studies.engine import CellSystem, Study, StudyCell
from advbridge.experiments.workload import Workload
from advbridge.zoo.datasets import dataset_info
from advbridge.zoo.training import TrainConfig, get_or_train


def mnist_cifar10_vae(options: StudyOptions) -> Study:
    """Study 001: VAE purification and CVAE labelling against FGSM and PGD, on MNIST and CIFAR-10."""
    from advbridge.defenses.generative import GeneratorConfig
    from advbridge.experiments.defend.run_generative import run_defend_generative

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
            return make_workload(model, card, test_set, budget["n"], options.data_root)

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
                    evaluation = evaluation_options(libraries, options, restarts=budget["restarts"])
                    return run_defend_generative(spec, attack, workload(), generator, evaluation, out=prefix)[0]

                def system(spec=spec, attack=attack, workload=workload, generator=generator) -> CellSystem:
                    from advbridge.experiments.audit.command import generative_system

                    cell = workload()
                    module = generative_system(spec, generator, cell, progress=options.progress)
                    model = cell.card.get("model", "the classifier")
                    name = f"{spec.defense} ({generator.generator})"
                    label = f"{name} with {model}" if spec.defense == "cvae-label" else f"{name} in front of {model}"
                    return CellSystem(module, cell.model, cell, attack, label)

                cells.append(
                    StudyCell(
                        f"{train_set}-{defense}-{attack.attack}",
                        attack_label,
                        run,
                        by_library(f"{task}: none", f"{task}: {label}"),
                        system,
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

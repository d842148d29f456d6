"""AttackBench's local optimality: how close each attack's robustness curve comes to the per-sample best of all.

A minimal-norm attack ``a`` yields, for each of ``n`` samples, the smallest perturbation size ``d_i`` it found
(``d_i = 0`` when the sample is already misclassified, ``d_i = ∞`` when the attack never succeeded). Its
robustness evaluation curve is the robust accuracy as a function of the budget,

    ρ_a(ε) = 1 − |{i : d_i ≤ ε}| / n,

a right-continuous step function that starts at 1 and drops by ``1/n`` at every finite distance. Across attacks,
the lower envelope ``d*_i = min_a d_i^a`` is the empirical best attack ``a*``. AttackBench scores an attack by
the area under its curve up to ``ε₀`` (Eq. 4),

    AUREC_a(ε₀) = ∫_0^ε₀ ρ_a(ε) dε,

and its local optimality (Eq. 5) compares that area with the envelope's,

    LO(a) = (ρ·ε₀ − AUREC_a(ε₀)) / (ρ·ε₀ − AUREC_a*(ε₀)),

where ``ρ`` is the model's clean accuracy: 1 for the envelope itself, 0 for an attack that never beats the model.
``ε₀`` is where the envelope's robust accuracy reaches 0, i.e. its largest distance; when the envelope leaves
samples unbroken its curve never reaches 0 and ``ε₀`` is the largest *finite* envelope distance (the convention
of the reference implementation, which keeps scores comparable between attacks).

The functions take the per-sample distances as a :class:`pandas.DataFrame` (index: samples, one column per
attack, library or stage) and write them long (:func:`samples_table`, the ``<out>-samples.csv`` of a run).

References:
    Cinà, A. E., Rony, J., Pintor, M., Demetrio, L., Demontis, A., Biggio, B., Ben Ayed, I., Roli, F. (2025).
    "AttackBench: Evaluating Gradient-based Attacks for Adversarial Examples", AAAI 2025, Sec. 3 (Eq. 4, AUREC;
    Eq. 5, local optimality). Reference implementation: ``attackbench/metrics/distances.py`` (``_aurec``,
    ``eval_optimality``) of the ``attackbenchlib`` package, against which ``tests/audit/test_optimality.py``
    checks this module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

#: Name of the :class:`pandas.Series` returned by :func:`optimality_table`.
OPTIMALITY = "optimality"


def _frame(distances: pd.DataFrame | Mapping[str, ArrayLike]) -> pd.DataFrame:
    """``distances`` as a float DataFrame, NaN (no result) read as ∞ (never succeeded)."""
    frame = distances if isinstance(distances, pd.DataFrame) else pd.DataFrame(dict(distances))
    return frame.astype(float).fillna(math.inf)


def envelope(distances: pd.DataFrame | Mapping[str, ArrayLike]) -> np.ndarray:
    """Per-sample lower envelope ``d*_i = min_a d_i^a`` over the columns (attacks) of ``distances``.

    ``distances`` has one column per attack and one row per sample (a mapping of column name to per-sample
    distances is read the same way). The envelope is ``∞`` where no column succeeded (NaN counts as ``∞``).
    """
    values = _frame(distances).to_numpy(dtype=float)
    return values.min(axis=1, initial=math.inf)


def aurec(distances: ArrayLike, eps_0: float, n_total: int | None = None) -> float:
    """Area under the robustness evaluation curve, ``AUREC(ε₀) = ∫_0^ε₀ ρ(ε) dε`` (AttackBench Eq. 4).

    ``ρ(ε) = 1 − |{i : d_i ≤ ε}| / n_total`` is the right-continuous step curve that starts at 1 and drops by
    ``1/n_total`` at every finite distance ``d_i ≤ ε₀`` (``n_total`` defaults to ``len(distances)``). Samples
    already misclassified have ``d_i = 0`` and drop the curve at ``ε = 0``; distances above ``ε₀`` and ``∞``
    (never broken) do not lower it inside the window but stay in ``n_total``. The integral is the exact sum of
    rectangles between consecutive distances (no trapezoid, which would bias a step curve).
    """
    d = np.sort(np.asarray(distances, dtype=float).ravel())
    n = d.size if n_total is None else n_total
    d = d[np.isfinite(d) & (d <= eps_0)]
    heights = 1.0 - np.arange(d.size + 1) / n  # ρ on [0, d_1), [d_1, d_2), ..., [d_k, ε₀)
    widths = np.diff(np.concatenate(([0.0], d, [eps_0])))
    return float(np.sum(heights * widths))


def local_optimality(distances: ArrayLike, envelope_distances: ArrayLike, clean_accuracy: float | None = None) -> float:
    """Local optimality of one attack against the lower envelope (AttackBench Eq. 5).

    ``LO = (ρ·ε₀ − AUREC_attack(ε₀)) / (ρ·ε₀ − AUREC_envelope(ε₀))``, clipped to ``[0, 1]``: 1 for an attack as
    good as the envelope, 0 for one that never beats the model. ``ρ`` is ``clean_accuracy``; ``None`` estimates
    it as the share of non-zero envelope distances (misclassified samples have distance 0). ``ε₀`` is the largest
    finite envelope distance: where the envelope's robust accuracy reaches 0, or, when the envelope leaves
    samples unbroken (``∞``), the last drop of its curve (the reference implementation's convention).

    Returns NaN when either input is empty, the envelope has no finite distance, or the denominator is ``≤ 0``
    (an envelope with no spread: every distance 0, or a clean accuracy below what it already reaches at 0).
    """
    d = np.asarray(distances, dtype=float).ravel()
    best = np.asarray(envelope_distances, dtype=float).ravel()
    if d.size == 0 or best.size == 0:
        return math.nan
    finite = best[np.isfinite(best)]
    if finite.size == 0:
        return math.nan
    rho = np.count_nonzero(best) / best.size if clean_accuracy is None else clean_accuracy
    eps_0 = float(finite.max())
    denominator = rho * eps_0 - aurec(best, eps_0)
    if denominator <= 0:
        return math.nan
    return float(np.clip((rho * eps_0 - aurec(d, eps_0)) / denominator, 0.0, 1.0))


def optimality_table(distances: pd.DataFrame, clean_accuracy: float | None = None) -> pd.Series:
    """Local optimality (:func:`local_optimality`) of every column of ``distances`` against their envelope."""
    frame = _frame(distances)
    best = envelope(frame)
    scores = [local_optimality(frame[column].to_numpy(), best, clean_accuracy) for column in frame.columns]
    return pd.Series(scores, index=frame.columns, name=OPTIMALITY, dtype=float)


def samples_table(distances: pd.DataFrame, labels: Mapping[str, Mapping[str, str]] | None = None) -> pd.DataFrame:
    """``distances`` in long format, one row per (sample, column): the table written to ``<out>-samples.csv``.

    Columns: ``sample`` (the integer index of ``distances``; positions when the index is not integer), then the
    labels of the column (``labels[column]`` maps label name to value, e.g. ``attack``, ``library``, ``stage``;
    label names in order of first appearance, missing ones empty; with ``labels=None`` one column ``row`` holding
    the column name), then ``distance`` (float, ``∞`` where the column never succeeded, empty (NaN) where it did not
    attack the sample: the audit's cascade). Rows are ordered by column, then sample.
    """
    frame = (distances if isinstance(distances, pd.DataFrame) else pd.DataFrame(dict(distances))).astype(float)
    n_samples, n_columns = frame.shape
    index = frame.index
    samples = index.to_numpy(dtype=int) if pd.api.types.is_integer_dtype(index) else np.arange(n_samples)
    columns = list(frame.columns)
    if labels is None:
        label_values: dict[str, list[object]] = {"row": columns}
    else:
        names = list(dict.fromkeys(name for column in columns for name in labels.get(column, {})))
        label_values = {name: [labels.get(column, {}).get(name) for column in columns] for name in names}
    long = {"sample": np.tile(samples, n_columns)}
    long.update({name: np.repeat(np.asarray(values, dtype=object), n_samples) for name, values in label_values.items()})
    long["distance"] = frame.to_numpy(dtype=float).T.ravel()
    return pd.DataFrame(long)

"""AttackBench's local optimality (Eq. 5) and AUREC (Eq. 4): against the reference implementation, by hand, and
its properties; the long per-sample table round-trips.

The reference is ``attackbench/metrics/distances.py`` of ``attackbenchlib==2.0.2`` (``make install`` installs it without its dependencies), loaded
from its file: ``import attackbench`` would import wandb.
"""

from __future__ import annotations

import math
import warnings
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from advbridge.experiments.audit.optimality import (
    aurec,
    envelope,
    local_optimality,
    optimality_table,
    samples_table,
)


def random_distances(seed: int, n: int = 60, rows: int = 4) -> pd.DataFrame:
    """Per-sample distances of ``rows`` attacks: shared zeros (misclassified), per-row ∞ (failed), some ties."""
    rng = np.random.default_rng(seed)
    d = rng.exponential(1.0, size=(n, rows))
    if seed % 2:
        d = np.round(d, 1)  # ties within and across rows
    d[rng.random((n, rows)) < 0.2] = math.inf
    d[rng.random(n) < 0.1] = 0.0
    d[rng.random(n) < 0.05] = math.inf  # never broken by anyone
    return pd.DataFrame(d, columns=[f"attack{j}" for j in range(rows)])


@pytest.mark.parametrize("seed", range(6))
def test_local_optimality_matches_reference(reference: ModuleType, seed: int) -> None:
    frame = random_distances(seed)
    best = envelope(frame)
    assert np.isfinite(best).any() and np.isinf(best).any() and (best == 0).any()
    for clean_accuracy in (None, float(np.count_nonzero(best) / best.size), 0.97):
        ours = optimality_table(frame, clean_accuracy)
        for column in frame.columns:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the reference warns about the envelope's unbroken samples
                expected = reference.eval_optimality(frame[column].to_numpy(), best, clean_accuracy)
            assert not math.isnan(expected)
            assert ours[column] == pytest.approx(expected, abs=1e-6, rel=0)
            assert local_optimality(frame[column], best, clean_accuracy) == ours[column]
    assert ours.between(0, 1).all() and ours.min() < 1


@pytest.mark.parametrize("seed", range(6))
def test_aurec_matches_reference(reference: ModuleType, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    d = random_distances(seed)["attack0"].to_numpy()
    for eps_0 in (0.0, float(rng.uniform(0, 2)), float(d[np.isfinite(d)].max()), 10.0):
        assert aurec(d, eps_0) == pytest.approx(reference._aurec(d, eps_0, d.size), abs=1e-6, rel=0)
        n_total = d.size + 7
        assert aurec(d, eps_0, n_total) == pytest.approx(reference._aurec(d, eps_0, n_total), abs=1e-6, rel=0)


def test_hand_computed_case() -> None:
    # Envelope d* = [0, 1, 2, ∞] over n = 4 samples: ε₀ = 2 (largest finite), ρ = 3/4 (non-zero share).
    # Its curve: 3/4 on [0, 1), 1/2 on [1, 2)  ->  AUREC* = 3/4 + 1/2 = 5/4;  ρ·ε₀ − AUREC* = 3/2 − 5/4 = 1/4.
    # Attack d = [0, 1.5, 2, ∞]: 3/4 on [0, 1.5), 1/2 on [1.5, 2)  ->  AUREC = 9/8 + 1/4 = 11/8;
    # LO = (3/2 − 11/8) / (1/4) = 1/2.
    best = np.array([0.0, 1.0, 2.0, math.inf])
    attack = np.array([0.0, 1.5, 2.0, math.inf])
    assert aurec(best, 2.0) == 1.25
    assert aurec(attack, 2.0) == 1.375
    assert local_optimality(attack, best) == 0.5
    # Given ρ = 1: (2 − 11/8) / (2 − 5/4) = (5/8) / (3/4) = 5/6.
    assert local_optimality(attack, best, clean_accuracy=1.0) == pytest.approx(5 / 6, abs=1e-12)
    # The envelope of the two rows is the first one; AUREC past ε₀ keeps the last level: 5/4 + 1/4 · 1 = 3/2.
    np.testing.assert_array_equal(envelope({"best": best, "attack": attack}), best)
    assert aurec(best, 3.0) == 1.5


def test_envelope_scores_one_and_a_failed_row_zero() -> None:
    frame = random_distances(11)
    frame["envelope"] = envelope(frame)
    frame["never"] = math.inf
    for clean_accuracy in (None, 0.9):
        scores = optimality_table(frame, clean_accuracy)
        assert scores.name == "optimality" and list(scores.index) == list(frame.columns)
        assert scores["envelope"] == 1.0
        assert scores["never"] == 0.0
        assert ((scores > 0) & (scores < 1)).any()


def test_clipped_to_unit_interval() -> None:
    best = np.array([0.0, 1.0, 2.0, math.inf])  # ρ·ε₀ − AUREC* = 1/4 (test_hand_computed_case)
    # Better than the envelope: [1, 1, 1, 1] gives AUREC = 1, LO = (3/2 − 1) / (1/4) = 2  ->  1.
    assert local_optimality([1.0, 1.0, 1.0, 1.0], best) == 1.0
    # Worse than never succeeding on the misclassified sample: AUREC = 2, LO = (3/2 − 2) / (1/4) = −2  ->  0.
    assert local_optimality([math.inf, math.inf, math.inf, 2.0], best) == 0.0


def test_nan_when_the_envelope_is_degenerate() -> None:
    assert math.isnan(local_optimality([1.0, math.inf], [math.inf, math.inf]))  # no finite envelope distance
    assert math.isnan(local_optimality([0.0, 0.0], [0.0, 0.0]))  # ε₀ = 0: denominator 0
    assert math.isnan(local_optimality([1.0, 2.0], [1.0, 2.0], clean_accuracy=0.5))  # 1 − 3/2 < 0
    assert math.isnan(local_optimality([], []))
    scores = optimality_table(pd.DataFrame({"a": [math.inf, math.inf], "b": [math.inf, math.inf]}))
    assert scores.isna().all()


def test_no_warning_when_the_envelope_leaves_samples_unbroken() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert local_optimality([0.0, 1.5, 2.0, math.inf], [0.0, 1.0, 2.0, math.inf]) == 0.5


def test_envelope_of_mapping_and_frame() -> None:
    rows = {"a": [0.5, math.inf, 3.0, math.inf], "b": [1.0, 2.0, math.nan, math.inf]}
    expected = np.array([0.5, 2.0, 3.0, math.inf])
    np.testing.assert_array_equal(envelope(rows), expected)
    np.testing.assert_array_equal(envelope(pd.DataFrame(rows)), expected)
    np.testing.assert_array_equal(envelope(pd.DataFrame(index=range(3))), np.full(3, math.inf))


def test_samples_table_round_trip() -> None:
    frame = random_distances(3, n=10, rows=3)
    long = samples_table(frame)
    assert list(long.columns) == ["sample", "row", "distance"]
    assert len(long) == frame.size
    assert list(long["row"][:10]) == ["attack0"] * 10 and list(long["sample"][:10]) == list(range(10))
    assert np.isinf(long["distance"]).any()
    back = long.pivot(index="sample", columns="row", values="distance")[frame.columns]
    pd.testing.assert_frame_equal(back, frame, check_names=False, check_index_type=False)

    labels = {
        column: {"attack": f"A{j}", "library": "ours" if j else "art", "stage": "final"}
        for j, column in enumerate(frame.columns)
    }
    long = samples_table(frame, labels)
    assert list(long.columns) == ["sample", "attack", "library", "stage", "distance"]
    assert long["sample"].dtype.kind == "i" and long["distance"].dtype == float
    assert set(long["library"]) == {"art", "ours"} and set(long["stage"]) == {"final"}
    back = long.pivot(index="sample", columns="attack", values="distance")[["A0", "A1", "A2"]]
    np.testing.assert_array_equal(back.to_numpy(), frame.to_numpy())

"""The feature-squeezing detector: the threshold rule, its false-positive rate on other clean images,
an AUC that is 0.5 when there is nothing to detect, and scores that separate real adversarial examples."""

from __future__ import annotations

import math

import pytest
import torch

from advbridge.bridge.errors import InvalidParameterError
from advbridge.defenses.detector import SqueezeDetector, calibrate_threshold, detection_metrics
from advbridge.defenses.preprocessor import BitDepth, MedianFilter
from advbridge.own_attacks import deepfool


def test_threshold_is_the_ceil_n_times_one_minus_fpr_th_smallest():
    scores = torch.arange(1, 101, dtype=torch.float32).flip(0)  # 100 .. 1, unsorted input
    assert calibrate_threshold(scores, 0.05) == 95.0  # ceil(100 · 0.95) = 95th smallest
    assert calibrate_threshold(scores[:7], 0.05) == 100.0  # ceil(7 · 0.95) = 7th of 7: the largest
    assert calibrate_threshold(scores, 0.5) == 50.0
    for bad in (0, 1, -0.1, 1.5, math.nan):
        with pytest.raises(InvalidParameterError, match="expected fpr strictly between 0 and 1"):
            calibrate_threshold(scores, bad)


@pytest.fixture(scope="module")
def mnist_test_digits():
    from advbridge.zoo.datasets import load_tensors

    return load_tensors("mnist-5k", split="test", n=1000, seed=0)


@pytest.fixture(scope="module")
def joint_detector(mnist_model):
    """Xu et al.'s joint MNIST configuration: 1-bit depth and a 2×2 median."""
    return SqueezeDetector(mnist_model, [BitDepth(1), MedianFilter(2)])


def test_calibrated_fpr_holds_on_other_clean_images(joint_detector, mnist_test_digits):
    x, _ = mnist_test_digits
    threshold = joint_detector.calibrate(x[:500], fpr=0.05)
    held_out = float(joint_detector(x[500:]).double().mean())
    assert abs(held_out - 0.05) <= 0.03, held_out
    assert float(joint_detector(x[:500]).double().mean()) <= 0.05  # on the calibration set: at most fpr
    assert 0 < threshold < 2


def test_auc_is_one_half_when_clean_and_adversarial_are_the_same(joint_detector, mnist_test_digits):
    x, _ = mnist_test_digits
    scores = joint_detector.scores(x[:200])
    metrics = detection_metrics(scores, scores, torch.ones(200, dtype=torch.bool), threshold=0.5)
    assert metrics["roc_auc"] == pytest.approx(0.5, abs=1e-12)  # every pair a tie: exactly 1/2 up to summation
    assert metrics["detection_rate"] == metrics["fpr"]


def test_scores_separate_deepfool_examples(joint_detector, mnist_batch):
    """Minimal DeepFool perturbations sit just past the boundary: squeezing moves them back, so the
    softmax changes a lot, while clean digits barely change (Xu et al.: AUC > 0.99 on MNIST)."""
    x, y = mnist_batch
    adv = deepfool(joint_detector.classifier, x, y)
    with torch.no_grad():
        fooled = joint_detector.classifier(adv).argmax(1) != y
    metrics = detection_metrics(joint_detector.scores(x), joint_detector.scores(adv), fooled, threshold=0.5)
    assert metrics["n_adversarial"] >= 60 and metrics["roc_auc"] >= 0.95, metrics


def test_score_is_differentiable_through_bpda_squeezers(mnist_model, mnist_batch):
    x = mnist_batch[0][:8].clone().requires_grad_(True)
    detector = SqueezeDetector(mnist_model, [BitDepth(1, backward="bpda"), MedianFilter(2, backward="bpda")])
    (grad,) = torch.autograd.grad(detector.score(x).sum(), x)
    assert float(grad.abs().sum()) > 0
    with pytest.raises(InvalidParameterError, match="no threshold"):
        detector(x)

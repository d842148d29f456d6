"""The feature-squeezing detector (Xu, Evans, Qi 2018).

    score(x) = max over squeezers s of ‖softmax(f(x)) − softmax(f(s(x)))‖₁          (Sec. IV-A, eq. 1)

An input is flagged as adversarial when score(x) > threshold. The threshold is either fixed (the
Animals-10 study used 1.0) or calibrated on clean images for a target false-positive rate: their rule
(EvadeML-Zoo, ``detections/feature_squeezing.py``) takes the ⌈N·(1 − fpr)⌉-th smallest of N clean scores.

The score is differentiable wherever the squeezers are (or through their BPDA backward), so an adaptive
attacker can lower it together with the classification margin.

References:
    Xu, Evans, Qi. Feature Squeezing: Detecting Adversarial Examples in Deep Neural Networks. NDSS 2018.
    https://arxiv.org/abs/1704.01155
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from advbridge.bridge.defense_spec import check_fpr
from advbridge.bridge.errors import InvalidParameterError
from advbridge.defenses.preprocessor.squeezing import Squeezer


def calibrate_threshold(clean_scores: Tensor, fpr: float = 0.05) -> float:
    """The ⌈N·(1 − fpr)⌉-th smallest clean score: at most a share ``fpr`` of these clean inputs score above it."""
    fpr = check_fpr(fpr)
    n = len(clean_scores)
    if n == 0:
        raise InvalidParameterError("expected clean scores to calibrate on, got none")
    rank = math.ceil(n * (1 - fpr))
    return float(clean_scores.sort().values[rank - 1])


class SqueezeDetector(nn.Module):
    """Score inputs by how much squeezing changes a classifier's softmax output (see module docstring).

    Args:
        classifier: maps inputs in [0, 1] to logits.
        squeezers: one or more :class:`~defenses.preprocessor.Squeezer` (their ``backward`` decides the
            gradient of the score).
        threshold: flag inputs scoring above it; ``None`` until :meth:`calibrate` is called.

    Shape:
        inputs ``(N, C, H, W)``; :meth:`score` returns ``(N,)``, :meth:`forward` the flags ``(N,)`` (bool).
    """

    def __init__(self, classifier: nn.Module, squeezers: Sequence[Squeezer], threshold: float | None = None):
        super().__init__()
        if not squeezers:
            raise InvalidParameterError("expected at least one squeezer for the detector, got none")
        self.classifier = classifier
        self.squeezers = nn.ModuleList(squeezers)
        self.threshold = threshold

    def score(self, x: Tensor) -> Tensor:
        """max_s ‖softmax(f(x)) − softmax(f(s(x)))‖₁ per sample, in [0, 2]."""
        reference = self.classifier(x).softmax(1)
        distances = [(reference - self.classifier(s(x)).softmax(1)).abs().sum(1) for s in self.squeezers]
        return torch.stack(distances).amax(0)

    @torch.no_grad()
    def scores(self, x: Tensor, batch_size: int = 500) -> Tensor:
        """:meth:`score` in batches, without gradients."""
        return torch.cat([self.score(chunk) for chunk in x.split(batch_size)])

    def calibrate(self, clean: Tensor, fpr: float = 0.05) -> float:
        """Set and return the threshold at ``fpr`` on the clean inputs ``clean`` (see :func:`calibrate_threshold`)."""
        self.threshold = calibrate_threshold(self.scores(clean), fpr)
        return self.threshold

    def forward(self, x: Tensor) -> Tensor:
        if self.threshold is None:
            raise InvalidParameterError("the detector has no threshold: give one or call calibrate() first")
        return self.scores(x) > self.threshold


def detection_metrics(
    clean_scores: Tensor, adv_scores: Tensor, adv_success: Tensor, threshold: float
) -> dict[str, float]:
    """Detection rate on the successful adversarial examples, false-positive rate on the clean inputs, and
    ROC AUC (scikit-learn) of clean (negative) vs successful adversarial (positive) scores.

    ``adv_success`` marks the adversarial examples that fool the classifier; the others are not
    adversarial and are left out (Xu et al. report detection on successful examples only).
    """
    from sklearn.metrics import roc_auc_score

    positives = adv_scores[adv_success]
    labels = torch.cat([torch.zeros(len(clean_scores)), torch.ones(len(positives))])
    both = torch.cat([clean_scores, positives]).double()
    auc = float(roc_auc_score(labels.numpy(), both.numpy())) if len(positives) and len(clean_scores) else math.nan
    return {
        "detection_rate": float((positives > threshold).double().mean()) if len(positives) else math.nan,
        "fpr": float((clean_scores > threshold).double().mean()),
        "roc_auc": auc,
        "threshold": threshold,
        "n_adversarial": len(positives),
    }

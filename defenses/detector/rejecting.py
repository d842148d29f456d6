"""A detector and its classifier as one classifier with a reject class, so that every library attacks it as is.

Given a classifier f (K logits) and a detector with a differentiable ``score(x)`` and a threshold τ, the system's
logits are those of f plus a (K+1)-th, the *reject* logit

    z_K(x) = max_j f_j(x) + s · (score(x) − τ),

so its prediction is the reject class exactly when score(x) > τ (the input is detected) and f's class otherwise.
An attack succeeds when the prediction is neither the true class nor the reject class: it fooled the classifier
*and* evaded the detector (Carlini & Wagner 2017, "Adversarial examples are not easily detected", Sec. 3: a
detector is a classifier with one more class). The margin loss of the audit, ``max(z_y, z_K) − max_{j∉{y,K}} z_j``,
is then the detection-aware objective; ``s`` (``sharpness``) only scales the score's share of its gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


class RejectingClassifier(nn.Module):
    """``classifier`` with a reject class driven by ``score`` and ``threshold`` (module docstring).

    Args:
        classifier: images in [0, 1] → K logits.
        score: images → (N,) detection scores (higher: more suspicious), differentiable where the detector is.
        threshold: τ: inputs scoring above it are rejected.
        sharpness: s, logits per unit of score above or below τ.
        bpda: the same system with its non-differentiable parts' backward replaced (the audit's BPDA remedy).

    Attributes:
        reject_class: K, the index of the reject logit.
    """

    def __init__(
        self, classifier: nn.Module, score: Callable[[Tensor], Tensor], threshold: float, *, sharpness: float = 100.0,
        num_classes: int, bpda: nn.Module | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.classifier, self.score, self.threshold, self.sharpness = classifier, score, float(threshold), sharpness
        self.reject_class = num_classes
        self.bpda = bpda

    def forward(self, x: Tensor) -> Tensor:
        logits = self.classifier(x)
        reject = logits.amax(1) + self.sharpness * (self.score(x) - self.threshold)
        return torch.cat([logits, reject[:, None]], 1)

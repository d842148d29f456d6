"""Adaptive attacks: attacks that know the defense (Athalye et al. 2018; Carlini et al. 2019, Sec. 4).

A purifier in front of the classifier needs no special attack: the defended model is an ``nn.Module``,
and every library attacks it through the squeezer's backward pass (``"bpda"``: the identity, Athalye et
al. 2018, Sec. 4.1). A detector next to the classifier does: the attacker must fool the classifier *and*
stay under the detection threshold. :func:`detector_aware_pgd` ascends, with BPDA through the squeezers
(He et al. 2017; Carlini & Wagner 2017, "Adversarial examples are not easily detected", Sec. 5),

    J(x') = min(m(x'), κ) − c · max(0, score(x') − (1 − ρ)·τ),     m(x') = −L(z(x'), y) = max_{j≠y} z_j(x') − z_y(x'),

a margin loss capped at a confidence κ (a confident mistake also survives squeezing) minus a hinge on the
detection score below a slightly lowered threshold. Each sample keeps its last iterate that fools the
classifier with a score ≤ τ.

References:
    Athalye, Carlini, Wagner. Obfuscated Gradients Give a False Sense of Security. ICML 2018.
    https://arxiv.org/abs/1802.00420
    He, Wei, Chen, Carlini, Song. Adversarial Example Defenses: Ensembles of Weak Defenses are not
    Strong. WOOT 2017. https://arxiv.org/abs/1706.04701
    Carlini, Wagner. Adversarial Examples Are Not Easily Detected. AISec 2017. https://arxiv.org/abs/1705.07263
"""

from __future__ import annotations

import torch
from torch import Tensor

from advbridge.defenses.detector import SqueezeDetector
from advbridge.experiments.core.losses import margin_loss
from advbridge.own_attacks import pgd

#: Confidence cap κ of the margin term (logits), weight c of the detection hinge, and the share ρ by which
#: the attack aims below the threshold. Chosen on MNIST and CIFAR-10 (see the README's defense tables).
KAPPA = 5.0
DETECTION_WEIGHT = 1.0
THRESHOLD_MARGIN = 0.2


def detector_aware_pgd(
    detector: SqueezeDetector,
    inputs: Tensor,
    labels: Tensor,
    *,
    eps: float,
    steps: int = 40,
    norm: str = "Linf",
    step_size: float | None = None,
    random_start: bool = False,
    kappa: float = KAPPA,
    weight: float = DETECTION_WEIGHT,
    threshold_margin: float = THRESHOLD_MARGIN,
) -> Tensor:
    """PGD on J (module docstring) against ``detector.classifier`` and ``detector`` together.

    The detector's squeezers decide the gradient of the score: ``"bpda"`` gives the adaptive attack,
    ``"exact"`` what a naive attacker who differentiates the squeezers as they are gets.

    Shape:
        inputs ``(N, C, H, W)`` in [0, 1], labels ``(N,)``; returns adversarial images of the same shape.
    """
    if detector.threshold is None:
        raise ValueError("the detector needs a threshold before it can be attacked")
    tau = detector.threshold
    target = (1 - threshold_margin) * tau

    def objective(x: Tensor, y: Tensor) -> Tensor:
        logits = detector.classifier(x)
        reference = logits.softmax(1)
        squeezed = [(reference - detector.classifier(s(x)).softmax(1)).abs().sum(1) for s in detector.squeezers]
        score = torch.stack(squeezed).amax(0)
        return (-margin_loss(logits, y)).clamp_max(kappa) - weight * (score - target).clamp_min(0)

    def fools_both(x: Tensor, y: Tensor) -> Tensor:
        return (detector.classifier(x).argmax(1) != y) & (detector.score(x) <= tau)

    return pgd(
        detector.classifier,  # unused: the objective calls the classifier and the squeezers itself
        inputs,
        labels,
        eps=eps,
        norm=norm,
        steps=steps,
        step_size=step_size,
        random_start=random_start,
        loss=objective,
        success=fools_both,
    )

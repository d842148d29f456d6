"""FGSM, the fast gradient sign method (Goodfellow et al. 2015).

    x_adv = clip_[0,1]( x + eps · sign(∇_x L(f(x), y)) )          (untargeted, L = cross-entropy)
    x_adv = clip_[0,1]( x − eps · sign(∇_x L(f(x), t)) )          (targeted towards t)

References:
    Goodfellow, Shlens, Szegedy. Explaining and Harnessing Adversarial Examples. ICLR 2015, eq. (3).
    https://arxiv.org/abs/1412.6572
"""

from __future__ import annotations

from torch import Tensor, nn

from advbridge.bridge.validation import check_inputs, check_labels
from advbridge.own_attacks._common import check_positive, loss_input_gradient


def fgsm(model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: float, targeted: bool = False) -> Tensor:
    """One signed-gradient step of size ``eps`` on the cross-entropy, then clipping to [0, 1].

    Args:
        model: maps images in [0, 1] to logits (normalization inside).
        inputs: clean images.
        labels: true labels, or target labels when ``targeted``.
        eps: L∞ budget (and step).
        targeted: descend the loss of ``labels`` instead of ascending it.

    Shape:
        inputs ``(N, ...)`` (any shape with a batch dimension: ``(N, D)``, ``(N, C, L)``, ``(N, C, H, W)``...),
        labels ``(N,)``; returns the shape of ``inputs``, same dtype and device.

    References:
        Goodfellow et al. 2015, https://arxiv.org/abs/1412.6572
    """
    check_inputs(inputs)
    labels = check_labels(labels, len(inputs))
    check_positive("eps", eps)
    grad = loss_input_gradient(model, inputs, labels)
    step = grad.sign()
    if targeted:
        step = -step
    return (inputs + eps * step).clamp(0, 1).detach()

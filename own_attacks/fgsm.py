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
from advbridge.own_attacks._common import (
    check_positive,
    in_default_layout_if_needed,
    in_layout_of,
    loss_input_gradient,
    working_layout,
)


def fgsm(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    *,
    eps: float,
    targeted: bool = False,
    channels_last: bool = True,
) -> Tensor:
    """One signed-gradient step of size ``eps`` on the cross-entropy, then clipping to [0, 1].

    Args:
        model: maps images in [0, 1] to logits (normalization inside).
        inputs: clean images.
        labels: true labels, or target labels when ``targeted``.
        eps: L∞ budget (and step).
        targeted: descend the loss of ``labels`` instead of ascending it.
        channels_last: run the model on a channels-last copy of a 4-D batch (oneDNN's NHWC convolutions:
            the one forward and backward pass 1.3-2.5× faster on the MNIST CNN on CPU). The gradient's
            rounding differs from the default layout, so a pixel whose gradient is within rounding of 0 can
            take the other sign; ``channels_last=False`` does the references' arithmetic (bitwise equal
            to torchattacks, foolbox and ART). A model that cannot take such a batch runs in the default one.

    Shape:
        inputs ``(N, ...)`` (any shape with a batch dimension: ``(N, D)``, ``(N, C, L)``, ``(N, C, H, W)``...),
        labels ``(N,)``; returns the shape of ``inputs``, same dtype and device.

    References:
        Goodfellow et al. 2015, https://arxiv.org/abs/1412.6572
    """
    check_inputs(inputs)
    labels = check_labels(labels, len(inputs))
    check_positive("eps", eps)
    signed_eps = -eps if targeted else eps

    def attack(channels_last: bool) -> Tensor:
        grad = loss_input_gradient(model, working_layout(inputs.detach(), channels_last), labels)
        return in_layout_of((inputs + signed_eps * grad.sign()).clamp(0, 1).detach(), inputs)

    return in_default_layout_if_needed(attack, channels_last)

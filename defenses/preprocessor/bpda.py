"""BPDA with the identity (Athalye, Carlini, Wagner 2018, Sec. 4.1): a non-differentiable transformation g
applied in the forward pass, its backward pass replaced by that of the identity, ∇_x f(g(x)) ≈ ∇f(g(x)),
which is right when g(x) ≈ x. The same backward the squeezers take with ``backward="bpda"``, for any module.

Reference:
    Athalye, Carlini, Wagner. Obfuscated Gradients Give a False Sense of Security. ICML 2018.
    https://arxiv.org/abs/1802.00420
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advbridge.defenses.preprocessor.squeezing import _SqueezedWithGivenBackward


class BPDA(nn.Module):
    """``forward(x) = transform(x)`` (computed without a graph); backward: the incoming gradient unchanged."""

    def __init__(self, transform: nn.Module) -> None:
        super().__init__()
        self.transform = transform

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            out = self.transform(x)
        if not x.requires_grad:
            return out
        return _SqueezedWithGivenBackward.apply(x, out, False)

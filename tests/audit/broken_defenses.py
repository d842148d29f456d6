"""Defenses the literature broke, as a user would hand them to the audit: ``nn.Module`` s around a classifier that
declare nothing (no ``preprocess``, no ``randomized``), each built to trip one indicator of attack failure.

- :class:`Quantized`: input quantization through ``torch.round`` (zero gradient; Athalye et al. 2018, Sec. 5.2,
  thermometer / bit-depth encodings);
- :class:`NumpyPreprocess`: a preprocessing computed outside autograd (the gradient call raises);
- :class:`RandomResizePad`: Xie et al. 2018's random resize-and-pad (randomized; broken with EOT);
- :class:`GaussianNoise`: Gaussian input noise (randomized);
- :class:`SaturatedLogits`: logits scaled until the float32 softmax is one-hot (defensive distillation's cause);
- :class:`Probabilities`: softmax probabilities instead of logits.

A factory of each (``quantized``, ``numpy_preprocess``, ``resize_pad``, ``noise``, ``saturated``, ``probabilities``)
builds it around the committed test classifier (``fixture_classifier``), for ``--defense-module FILE.py:NAME``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Quantized(nn.Module):
    """``classifier(round(x · levels) / levels)``: ``torch.round`` has zero gradient everywhere."""

    def __init__(self, classifier: nn.Module, levels: int = 8) -> None:
        super().__init__()
        self.net, self.levels = classifier, levels

    def forward(self, x: Tensor) -> Tensor:
        return self.net(torch.round(x * self.levels) / self.levels)


class NumpyPreprocess(nn.Module):
    """A smoothing computed in numpy: the graph from the input to the logits is cut."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.net = classifier

    def forward(self, x: Tensor) -> Tensor:
        array = x.detach().cpu().numpy()
        smoothed = np.clip(0.9 * array + 0.1 * array.mean(axis=(2, 3), keepdims=True), 0, 1)
        return self.net(torch.from_numpy(smoothed).to(x.device, x.dtype))


class RandomResizePad(nn.Module):
    """Xie et al. 2018: each image shrunk by a random factor in [1 − shrink, 1) and placed at a random offset on a
    zero canvas of its own size, drawn per image at every call (one affine resampling of the batch)."""

    def __init__(self, classifier: nn.Module, shrink: float = 0.2) -> None:
        super().__init__()
        self.net, self.shrink = classifier, shrink

    def forward(self, x: Tensor) -> Tensor:
        n = len(x)
        scale = 1 - self.shrink * torch.rand(n, device=x.device)
        center = (1 - scale)[:, None] * (2 * torch.rand(n, 2, device=x.device) - 1)
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
        theta[:, :, 2] = -center / scale[:, None]
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return self.net(F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False))


class GaussianNoise(nn.Module):
    """``classifier(x + σ·n)``, n ~ N(0, I) drawn at every call."""

    def __init__(self, classifier: nn.Module, sigma: float = 0.3) -> None:
        super().__init__()
        self.net, self.sigma = classifier, sigma

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x + self.sigma * torch.randn_like(x)).clamp(0, 1))


class SaturatedLogits(nn.Module):
    """``scale · logits``: the float32 softmax is one-hot, the cross-entropy's gradient zero."""

    def __init__(self, classifier: nn.Module, scale: float = 1000.0) -> None:
        super().__init__()
        self.net, self.scale = classifier, scale

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * self.net(x)


class Probabilities(nn.Module):
    """``softmax(logits)``: probability outputs."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.net = classifier

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).softmax(1)


BROKEN = {
    "quantized": Quantized, "numpy": NumpyPreprocess, "resize_pad": RandomResizePad, "noise": GaussianNoise,
    "saturated": SaturatedLogits, "probabilities": Probabilities,
}  # fmt: skip


def fixture_classifier() -> nn.Module:
    """The committed test classifier (``advbridge_mnist_cnn`` on mnist-5k), loaded strictly."""
    from safetensors.torch import load_file

    from advbridge.zoo.models import create_classifier

    folder = Path(__file__).resolve().parents[1] / "fixtures" / "mnist_cnn"
    model = create_classifier("advbridge_mnist_cnn", num_classes=10, in_chans=1, mean=(0.1307,), std=(0.3081,))
    model.load_state_dict(load_file(folder / "model.safetensors"), strict=True)
    return model.eval()


def quantized() -> nn.Module:
    """``--defense-module tests/audit/broken_defenses.py:quantized`` (and so on for each of :data:`BROKEN`)."""
    return Quantized(fixture_classifier())


def numpy_preprocess() -> nn.Module:
    return NumpyPreprocess(fixture_classifier())


def resize_pad() -> nn.Module:
    return RandomResizePad(fixture_classifier())


def noise() -> nn.Module:
    return GaussianNoise(fixture_classifier())


def saturated() -> nn.Module:
    return SaturatedLogits(fixture_classifier())


def probabilities() -> nn.Module:
    return Probabilities(fixture_classifier())

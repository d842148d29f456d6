"""Convolutional generative models on [0, 1] images of any channel count and size: an autoencoder, a VAE
and a class-conditional VAE.

Encoder: two stride-2 4×4 convolutions (32, 64 channels; 64, 128 for 3 channels), ReLU, then a linear
map to the code: ``z`` (autoencoder) or the posterior's mean and log-variance (VAE). Decoder: the mirror,
two stride-2 transposed convolutions back to ``4·⌈H/4⌉ × 4·⌈W/4⌉``, cropped to ``H × W``, and a sigmoid.
The class-conditional VAE appends the one-hot class to the encoder's features and to the code.

Losses (per sample, summed over pixels and latent dimensions, averaged over the batch):

    autoencoder:  ‖x − D(E(x))‖²
    VAE:          ‖x − D(z)‖² + β · KL(q(z|x) ‖ N(0, I)),   z = μ + σ·ε        (Kingma & Welling 2014, eq. 10;
                                                                              β: Higgins et al. 2017)
    CVAE:         the same with q(z|x, c) and D(z, c)                        (Sohn et al. 2015)

References:
    Kingma, Welling. Auto-Encoding Variational Bayes. ICLR 2014. https://arxiv.org/abs/1312.6114
    Sohn, Lee, Yan. Learning Structured Output Representation using Deep Conditional Generative Models.
    NeurIPS 2015.
    Higgins et al. beta-VAE. ICLR 2017.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advbridge.bridge.errors import InvalidParameterError

GENERATORS = ("ae", "vae", "cvae")


class ConvGenerator(nn.Module):
    """An autoencoder (``kind="ae"``), VAE (``"vae"``) or class-conditional VAE (``"cvae"``).

    Args:
        kind: one of :data:`GENERATORS`.
        in_chans: image channels.
        image_size: image side (square images), at least 4.
        latent_dim: size of the code, ≥ 1.
        num_classes: classes of the condition (``"cvae"`` only).

    Shape:
        ``encode(x[, y])``: ``(N, C, H, W)`` → ``(μ, log σ²)``, each ``(N, latent_dim)`` (log σ² is ``None``
        for the autoencoder); ``decode(z[, y])`` → ``(N, C, H, W)`` in (0, 1); ``forward(x[, y])`` →
        the reconstruction from the posterior mean (deterministic), or from a sample with ``sample=True``.
    """

    def __init__(self, kind: str, in_chans: int, image_size: int, latent_dim: int = 16, num_classes: int = 0) -> None:
        super().__init__()
        if kind not in GENERATORS:
            raise InvalidParameterError(f"expected a generator in {', '.join(GENERATORS)}, got {kind!r}")
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise InvalidParameterError(f"expected latent_dim >= 1 (an integer), got {latent_dim!r}")
        if image_size < 4:
            raise InvalidParameterError(f"expected an image side >= 4, got {image_size}")
        if kind == "cvae" and num_classes < 2:
            raise InvalidParameterError(f"expected num_classes >= 2 for a class-conditional VAE, got {num_classes}")
        self.kind, self.in_chans, self.image_size, self.latent_dim = kind, in_chans, image_size, latent_dim
        self.num_classes = num_classes if kind == "cvae" else 0
        width = (32, 64) if in_chans == 1 else (64, 128)
        self.side = math.ceil(image_size / 4)
        features = width[1] * self.side * self.side
        self.encoder = nn.Sequential(
            nn.Conv2d(in_chans, width[0], 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width[0], width[1], 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        self._pad = 4 * self.side - image_size  # the input is padded to a multiple of 4
        outputs = latent_dim if kind == "ae" else 2 * latent_dim
        self.to_code = nn.Linear(features + self.num_classes, outputs)
        self.from_code = nn.Linear(latent_dim + self.num_classes, features)
        self.decoder = nn.Sequential(
            nn.ReLU(),
            nn.Unflatten(1, (width[1], self.side, self.side)),
            nn.ConvTranspose2d(width[1], width[0], 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(width[0], in_chans, 4, stride=2, padding=1),
        )

    @property
    def conditional(self) -> bool:
        return self.kind == "cvae"

    def _condition(self, h: Tensor, y: Tensor | None) -> Tensor:
        if not self.conditional:
            return h
        if y is None:
            raise InvalidParameterError("a class-conditional VAE needs the class of every input")
        return torch.cat([h, F.one_hot(y, self.num_classes).to(h.dtype)], 1)

    def encode(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        if self._pad:
            x = F.pad(x, (0, self._pad, 0, self._pad))
        code = self.to_code(self._condition(self.encoder(x), y))
        if self.kind == "ae":
            return code, None
        mu, logvar = code.chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def encode_every_class(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``encode(x, c)`` for every sample and every class c, sample-major ``(N·K, latent_dim)`` each.

        The convolutions do not see the class (it joins at the linear map to the code), so they run once
        per sample, not once per (sample, class): W·[h; e_c] + b = (W_h·h + b) + W_c[:, c].
        """
        if not self.conditional:
            raise InvalidParameterError(f"expected a cvae to encode under every class, got a {self.kind}")
        if self._pad:
            x = F.pad(x, (0, self._pad, 0, self._pad))
        h = self.encoder(x)
        weight, features = self.to_code.weight, h.shape[1]
        base = F.linear(h, weight[:, :features], self.to_code.bias)  # (N, out)
        code = (base[:, None, :] + weight[:, features:].t()[None]).flatten(0, 1)  # (N·K, out)
        mu, logvar = code.chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        out = self.decoder(self.from_code(self._condition(z, y)))
        return torch.sigmoid(out[..., : self.image_size, : self.image_size])

    def forward(self, x: Tensor, y: Tensor | None = None, *, sample: bool = False) -> Tensor:
        mu, logvar = self.encode(x, y)
        if sample and logvar is not None:
            mu = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        return self.decode(mu, y)

    def loss(self, x: Tensor, y: Tensor | None = None, beta: float = 1.0) -> tuple[Tensor, dict[str, float]]:
        """The training loss of a batch (module docstring), and its two terms."""
        mu, logvar = self.encode(x, y)
        z = mu if logvar is None else mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        reconstruction = (self.decode(z, y) - x).pow(2).flatten(1).sum(1).mean()
        if logvar is None:
            return reconstruction, {"reconstruction": float(reconstruction.detach())}
        kl = (0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)).sum(1).mean()
        return reconstruction + beta * kl, {"reconstruction": float(reconstruction.detach()), "kl": float(kl.detach())}

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind!r}, in_chans={self.in_chans}, image_size={self.image_size}, "
            f"latent_dim={self.latent_dim}, num_classes={self.num_classes}"
        )

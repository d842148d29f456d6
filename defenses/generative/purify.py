"""Defenses with a generative model: purification, labelling by the closest class-conditional
reconstruction, and detection by reconstruction error.

- :class:`Purifier` (MagNet's reformer, Meng & Chen 2017; Defense-VAE, Li & Ji 2019): x ↦ D(E(x)), the
  posterior mean by default (deterministic); with ``sample=True`` a draw z ~ q(z|x), a random defense that
  must be evaluated with EOT (Athalye et al. 2018, Sec. 4.3). ``PreprocessedClassifier(Purifier(g), f)``
  is the defended model, differentiable end to end.
- :class:`ReconstructionLabeller` (the study's "defense by generating images that are as close as
  possible to the input"; Schott et al. 2019's analysis by synthesis): for every class c, x̂_c = D(z_c, c)
  with z_c = μ(x, c) (the encoder's convolutions run once per sample), optionally refined by ``refine_steps`` Adam steps on ‖D(z, c) − x‖²; the logits are
  −‖x̂_c − x‖² / (C·H·W) · ``scale``, so argmax = the class whose reconstruction is closest. All N·K codes
  are decoded in one batch per step (no loop over classes or samples). The refinement is unrolled:
  gradients flow through it (``detach_refinement=True`` stops them there: BPDA over the optimization).
- :class:`ReconstructionDetector` (MagNet's detector): score = ‖x − D(E(x))‖² / (C·H·W), flagged above a
  threshold calibrated at a target FPR (:func:`defenses.detector.calibrate_threshold`).

References:
    Meng, Chen. MagNet: a Two-Pronged Defense against Adversarial Examples. CCS 2017.
    https://arxiv.org/abs/1705.09064
    Schott, Rauber, Bethge, Brendel. Towards the first adversarially robust neural network model on MNIST.
    ICLR 2019. https://arxiv.org/abs/1805.09190
    Carlini, Wagner. MagNet and "Efficient Defenses Against Adversarial Attacks" are Not Robust to
    Adversarial Examples. 2017. https://arxiv.org/abs/1711.08478
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advbridge.bridge.errors import InvalidParameterError
from advbridge.defenses.generative.models import ConvGenerator


class Purifier(nn.Module):
    """x ↦ the generator's reconstruction of x (unconditional generators only)."""

    def __init__(self, generator: ConvGenerator, *, sample: bool = False) -> None:
        super().__init__()
        if generator.conditional:
            raise InvalidParameterError("expected an ae or vae to purify with, got a cvae (it labels: cvae-label)")
        self.generator, self.sample = generator, sample

    @property
    def random(self) -> bool:
        return self.sample and self.generator.kind != "ae"

    def forward(self, x: Tensor) -> Tensor:
        return self.generator(x, sample=self.sample)


class ReconstructionLabeller(nn.Module):
    """Logits −scale·MSE(x, x̂_c) for every class c (see the module docstring).

    Shape:
        x ``(N, C, H, W)``; returns ``(N, K)``; :meth:`reconstructions` returns ``(N, K, C, H, W)``.
    """

    def __init__(
        self,
        generator: ConvGenerator,
        *,
        refine_steps: int = 0,
        refine_lr: float = 0.05,
        scale: float = 100.0,
        detach_refinement: bool = False,
    ) -> None:
        super().__init__()
        if not generator.conditional:
            raise InvalidParameterError(f"expected a cvae to label with, got a {generator.kind}")
        if refine_steps < 0:
            raise InvalidParameterError(f"expected refine_steps >= 0, got {refine_steps}")
        self.generator, self.refine_steps, self.refine_lr = generator, refine_steps, refine_lr
        self.scale, self.detach_refinement = scale, detach_refinement
        self.num_classes = generator.num_classes
        self.in_chans = generator.in_chans

    def reconstructions(self, x: Tensor) -> Tensor:
        n, k = len(x), self.num_classes
        classes = torch.arange(k, device=x.device).repeat(n)  # sample-major: (x0,c0) (x0,c1) ...
        z, _ = self.generator.encode_every_class(x)  # the convolutions once per sample
        if self.refine_steps:
            z = self._refine(z, x.repeat_interleave(k, dim=0), classes)
        return self.generator.decode(z, classes).view(n, k, *x.shape[1:])

    def _refine(self, z0: Tensor, xs: Tensor, classes: Tensor) -> Tensor:
        """``refine_steps`` Adam steps on Σ‖D(z, c) − x‖² per code, unrolled (the graph kept when gradients
        are on), or with ``detach_refinement`` the refined code with the gradient of ``z0`` (BPDA)."""
        unrolled = not self.detach_refinement and torch.is_grad_enabled()
        target = xs if unrolled else xs.detach()
        z, m, v = (z0 if unrolled else z0.detach()), torch.zeros_like(z0), torch.zeros_like(z0)
        beta1, beta2 = 0.9, 0.999
        for t in range(1, self.refine_steps + 1):
            with torch.enable_grad():
                zr = z if z.requires_grad else z.detach().requires_grad_(True)
                error = (self.generator.decode(zr, classes) - target).pow(2).flatten(1).sum(1).sum()
                (grad,) = torch.autograd.grad(error, zr, create_graph=unrolled)
            m = beta1 * m + (1 - beta1) * grad
            v = beta2 * v + (1 - beta2) * grad * grad
            z = zr - self.refine_lr * (m / (1 - beta1**t)) / ((v / (1 - beta2**t)).sqrt() + 1e-8)
            z = z if unrolled else z.detach()
        return z if unrolled else z0 + (z - z0).detach()

    def errors(self, x: Tensor) -> Tensor:
        """Per-class mean squared reconstruction error, ``(N, K)``."""
        recon = self.reconstructions(x)
        return (recon - x[:, None]).pow(2).flatten(2).mean(2)

    def forward(self, x: Tensor) -> Tensor:
        return -self.scale * self.errors(x)


class ReconstructionDetector(nn.Module):
    """score(x) = mean squared error of the reconstruction; flagged when above ``threshold``."""

    def __init__(self, generator: ConvGenerator, threshold: float | None = None) -> None:
        super().__init__()
        if generator.conditional:
            raise InvalidParameterError("expected an ae or vae for the reconstruction detector, got a cvae")
        self.generator, self.threshold = generator, threshold

    def score(self, x: Tensor) -> Tensor:
        return (self.generator(x) - x).pow(2).flatten(1).mean(1)

    @torch.no_grad()
    def scores(self, x: Tensor, batch_size: int = 500) -> Tensor:
        return torch.cat([self.score(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])

    def forward(self, x: Tensor) -> Tensor:
        return self.score(x)

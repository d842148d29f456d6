"""Defenses from the case studies of Zimmermann et al. 2022 (the binarization test), small ``nn.Module`` s around
the committed test classifier (``fixture_classifier``), none trained: each keeps the classifier's weights and
changes its forward pass the way the defense does. The binarization test finds the classifier's last layer
inside each (timm's ``get_classifier()``) and puts its readout there; everything else of the defense stays.

- :class:`KWinnersTakeAll`: every ReLU replaced by k-WTA, which keeps the k largest activations of a layer per
  sample and zeros the others, and a k-WTA layer on the input pixels (Xiao et al. 2020; the case study
  ``kwta``): a discontinuous function whose gradients mislead PGD.
- :class:`Thermometer`: the image as a thermometer code τ_l(x) = [x > l/L] (Buckman et al. 2018; the case study
  ``thermometer``), read by the classifier as the code's mean over levels: a step function of the input, zero
  gradient everywhere.
- :class:`LowPrecision`: an ensemble of the classifier with low-precision (uniformly quantized) activations at
  two precisions, its logits averaged (Sen et al. 2020, EMPIR; the case study ``empir``): zero gradients inside
  the network.
- :class:`MaxMahalanobis`: logits −(s/2)·‖φ − μ_k‖² to class centers μ_k of the features φ (Pang et al. 2018,
  Max-Mahalanobis training; the case study ``mmt``): the softmax saturates, and so does the binarized model's,
  whose logits the test rescales to the model's range.
- :class:`MixupInference` (Pang et al. 2020; the case study ``mixup``) and :class:`StochasticFrontEnd` (VOneNet's
  stochastic layer, Dapello et al. 2020; the case study ``vonenet``): randomized; on this classifier the naive
  PGD passes their tests (measured: docs/audit.md), so they are not among :data:`FAILING`.

Not the input quantization, numpy preprocessing, random resize-and-pad, input noise, saturated logits or
probabilities of :mod:`broken_defenses`.

``python tests/audit/binarization_defenses.py`` prints the table of docs/audit.md (the binarization test of each,
naive PGD vs the audit's remedied attack, propagations).
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
from collections.abc import Callable, Sequence

import torch
from broken_defenses import BROKEN, fixture_classifier
from torch import Tensor, nn

from advbridge.zoo.models import NormalizedClassifier


class KWinners(nn.Module):
    """k-WTA: per sample, the ``ratio`` largest values of the layer kept, every other one set to 0."""

    def __init__(self, ratio: float) -> None:
        super().__init__()
        self.ratio = ratio

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(1)
        k = max(1, int(self.ratio * flat.shape[1]))
        threshold = flat.topk(k, dim=1).values[:, -1:]
        return (flat * (flat >= threshold)).view_as(x)


def _replace_relus(classifier: nn.Module, make: Callable[[], nn.Module]) -> nn.Module:
    """A copy of ``classifier`` with every ``nn.ReLU`` replaced by ``make()``."""
    net = copy.deepcopy(classifier)
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(module, name, make())
    return net


class KWinnersTakeAll(nn.Module):
    """k-WTA on the input (``input_ratio`` of the pixels kept) and in place of every ReLU (``ratio``)."""

    def __init__(self, classifier: nn.Module, ratio: float = 0.2, input_ratio: float = 0.1) -> None:
        super().__init__()
        self.inputs = KWinners(input_ratio)
        self.net = _replace_relus(classifier, lambda: KWinners(ratio))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.inputs(x))


class Thermometer(nn.Module):
    """``levels``-level thermometer code of the image, its mean over levels read by the classifier."""

    thresholds: Tensor

    def __init__(self, classifier: nn.Module, levels: int = 16) -> None:
        super().__init__()
        self.net = classifier
        self.register_buffer("thresholds", torch.arange(levels, dtype=torch.float32) / levels)

    def encode(self, x: Tensor) -> Tensor:
        """τ(x): ``(N, C, H, W)`` → ``(N, C, levels, H, W)`` in {0, 1} (½ exactly at a threshold), through
        ``torch.sign``: its gradient is 0 everywhere."""
        return (torch.sign(x.unsqueeze(2) - self.thresholds.view(1, 1, -1, 1, 1)) + 1) / 2

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.encode(x).mean(2))


class Quantize(nn.Module):
    """A low-precision activation: ReLU, then rounded to a multiple of ``step`` (``torch.round``: zero gradient)."""

    def __init__(self, step: float) -> None:
        super().__init__()
        self.step = step

    def forward(self, x: Tensor) -> Tensor:
        return torch.round(torch.relu(x) / self.step) * self.step


class LowPrecision(nn.Module):
    """The mean logits of copies of the classifier whose activations are quantized with each of ``steps`` (the
    classifier's activations average 0.4 to 6 where positive); the copies share the last layer."""

    def __init__(self, classifier: NormalizedClassifier, steps: Sequence[float] = (0.25, 0.5)) -> None:
        super().__init__()
        self.members = nn.ModuleList()
        for step in steps:
            member = _replace_relus(classifier, lambda step=step: Quantize(step))
            member.backbone.fc = classifier.backbone.fc  # type: ignore[union-attr]
            self.members.append(member)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([member(x) for member in self.members]).mean(0)


class MixupInference(nn.Module):
    """log of the mean softmax over ``draws`` mixups λx + (1 − λ)x_s, x_s drawn from ``pool`` at every call (Pang
    et al. 2020), the draws stacked in one batch."""

    pool: Tensor

    def __init__(self, classifier: nn.Module, pool: Tensor, lam: float = 0.6, draws: int = 4) -> None:
        super().__init__()
        self.net, self.lam, self.draws = classifier, lam, draws
        self.register_buffer("pool", pool.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        picks = torch.randint(0, len(self.pool), (self.draws, len(x)), device=x.device)
        mixed = self.lam * x.unsqueeze(0) + (1 - self.lam) * self.pool[picks]
        logits = self.net(mixed.flatten(0, 1)).view(self.draws, len(x), -1)
        return logits.log_softmax(2).logsumexp(0) - torch.log(torch.tensor(float(self.draws)))


class StochasticFrontEnd(nn.Module):
    """Gaussian noise of std ``sigma`` on the first convolution's responses, drawn at every call."""

    def __init__(self, classifier: NormalizedClassifier, sigma: float = 0.5) -> None:
        super().__init__()
        self.net, self.sigma = classifier, sigma

    def forward(self, x: Tensor) -> Tensor:
        backbone = self.net.backbone
        h = backbone.features[0]((x - self.net.mean) / self.net.std)
        h = backbone.features[1:](h + self.sigma * torch.randn_like(h))
        return backbone.forward_head(h)


class MahalanobisHead(nn.Module):
    """−(s/2)·‖φ − μ_k‖² for each class center μ_k."""

    centers: Tensor

    def __init__(self, centers: Tensor, scale: float) -> None:
        super().__init__()
        self.register_buffer("centers", centers.detach().clone())
        self.scale = scale
        self.in_features, self.out_features = centers.shape[1], centers.shape[0]

    def forward(self, phi: Tensor) -> Tensor:
        return -self.scale / 2 * torch.cdist(phi, self.centers).square()


class MaxMahalanobis(nn.Module):
    """The classifier's features φ read by a :class:`MahalanobisHead` whose centers are the class means of φ on
    ``images`` (the centers Max-Mahalanobis training would pull the features to)."""

    def __init__(self, classifier: NormalizedClassifier, images: Tensor, labels: Tensor, scale: float = 1.0) -> None:
        super().__init__()
        self.net = classifier
        with torch.no_grad():
            phi = self.features(images)
        centers = torch.stack([phi[labels == k].mean(0) for k in range(int(labels.max()) + 1)])
        self.head = MahalanobisHead(centers, scale)

    def features(self, x: Tensor) -> Tensor:
        backbone = self.net.backbone
        return backbone.forward_head(backbone.forward_features((x - self.net.mean) / self.net.std), pre_logits=True)

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def training_digits(n: int = 500) -> tuple[Tensor, Tensor]:
    """Clean mnist-5k training digits (the mixup pool, the Mahalanobis centers)."""
    from advbridge.zoo.datasets import load_tensors

    return load_tensors("mnist-5k", "train", n=n)


def empir() -> nn.Module:
    return LowPrecision(fixture_classifier())


def kwta() -> nn.Module:
    return KWinnersTakeAll(fixture_classifier())


def thermometer() -> nn.Module:
    return Thermometer(fixture_classifier())


def mixup() -> nn.Module:
    return MixupInference(fixture_classifier(), training_digits(64)[0])


def front_end() -> nn.Module:
    return StochasticFrontEnd(fixture_classifier())


def mahalanobis() -> nn.Module:
    return MaxMahalanobis(fixture_classifier(), *training_digits())


#: The defenses whose binarization test the naive PGD fails and the audit's remedied attack passes.
FAILING = {"kwta": kwta, "thermometer": thermometer, "empir": empir, "mahalanobis": mahalanobis}
DEFENSES = {**FAILING, "mixup": mixup, "front_end": front_end}


def table(names: Sequence[str], n: int, inner: int, steps: int, restarts: int, eot: int) -> str:
    """The binarization test of each defense (``none``: the plain classifier; a name of :data:`DEFENSES`, or of
    :data:`broken_defenses.BROKEN` around the plain classifier) on its first ``n`` clean-correct mnist-5k test
    digits of 64, L∞ eps 0.3, surrogate the plain classifier: a Markdown table."""
    from advbridge.bridge.runner import predict
    from advbridge.experiments.audit.binarization import BinarizationTest
    from advbridge.experiments.audit.results import AuditConfig
    from advbridge.zoo.datasets import load_tensors

    x, y = load_tensors("mnist-5k", "test", n=64)
    plain = fixture_classifier()
    config = AuditConfig(norm="Linf", eps=0.3, steps=steps, libraries=("own",), restarts=restarts, eot=eot)
    lines = ["| defense | clean | problems | features | naive PGD | remedied | rows (success) | propagations / problem |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name in names:
        torch.manual_seed(0)
        model = plain if name == "none" else BROKEN[name](plain).eval() if name in BROKEN else DEFENSES[name]().eval()
        correct = predict(model, x) == y
        test = BinarizationTest(model, x[correct][:n], y[correct][:n], config, surrogate=plain, inner=inner)
        naive, remedied = test.naive(), test.remedied()
        rows = ", ".join(f"{row} {rate:.2f}" for row, rate in remedied.rows.items())
        spent = test.propagations() / max(1, len(test.x))
        lines.append(f"| {name} | {float(correct.double().mean()):.3f} | {test.problems}/{len(test.x)} | "
                     f"{test.head.where} | {naive.rate:.2f} | {remedied.rate:.2f} | {rows} | {spent:.0f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the binarization test of each defense (docs/audit.md)")
    parser.add_argument("--defenses", default="none," + ",".join(DEFENSES))
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--inner", type=int, default=999)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--eot", type=int, default=10)
    args = parser.parse_args(argv)
    print(table(args.defenses.split(","), args.n, args.inner, args.steps, args.restarts, args.eot))
    print(f"\nmnist-5k test digits, advbridge_mnist_cnn (tests/fixtures/mnist_cnn), L∞ eps 0.3, {args.inner} inner points, "
          f"steps {args.steps}, restarts {args.restarts}, EOT {args.eot}; {platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, Python {sys.version.split()[0]}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Adversarial training: each batch (or a share ``ratio`` of it) replaced by adversarial examples of the
model being trained, computed by our own attacks.

    min_θ E_(x,y) [ max_{‖δ‖ ≤ ε} L(f_θ(x + δ), y) ]                     (Madry et al. 2018, eq. 2.1)

with the inner maximum approximated by

- ``adv-fgsm``: one FGSM step on a share ``ratio`` of each batch, the rest clean (Goodfellow et al. 2015,
  Sec. 6; the CIFAR-10 study's recipe; ART's ``AdversarialTrainer(ratio=0.5)``);
- ``adv-fgsm-rs``: Wong, Rice, Kolter 2020, Alg. 3 ("fast" training), as written there and in their MNIST
  code: δ ~ U(−ε, ε)^d, δ ← clip(δ + α·sign(∇_δ L(f(x + δ), y)), −ε, ε), x_adv = clip(x + δ, 0, 1), α = 1.25·ε.
  The random start is *not* clipped into the image range before the gradient (PGD's start is); on MNIST's
  black background that matters: clipped, every background pixel starts in [0, ε] and one step of 1.25·ε
  always ends on the ball's corner (plain FGSM there), unclipped a third of them end inside it. Measured on
  mnist-5k: clipping the start cost 20 points of AutoAttack accuracy against ART's FBF (which does not clip);
- ``adv-pgd``: PGD from a random start, ``steps`` steps of ``step_size`` (Madry et al. 2018, Sec. 5).

From scratch, the budget ramps up: over the first share ``eps_ramp`` of the training steps eps (and the step
size with it) grows linearly from 0 to its value, ε_t = ε · min(1, t / (eps_ramp · T)) at step t = 1…T — the
curriculum of Gowal et al. 2018 (Sec. 4, "ramp-up" of ε; also Wong & Kolter 2018, Sec. 4) and Cai et al. 2018
(curriculum adversarial training). Without it our MNIST CNN at the standard L∞ 0.3 (PGD-40, Adam 3e-3) never
leaves chance (measured on mnist-5k: loss at ln 10 from the first epoch): at random initialization PGD at full
ε turns every digit into a point where no feature predicts the label, the loss is minimized by the constant
output, whose input gradient is zero, so PGD degenerates into the random start and nothing pulls the net out.
A small ε first lets it learn features, then robustness to larger ε.

The model is attacked in eval mode (batch norm uses its running statistics, dropout is off, as at test
time) and every module's train/eval state is put back afterwards, so a head-only fine-tuning stays so.

References:
    Madry et al. Towards Deep Learning Models Resistant to Adversarial Attacks. ICLR 2018.
    https://arxiv.org/abs/1706.06083
    Wong, Rice, Kolter. Fast is better than free: Revisiting adversarial training. ICLR 2020.
    https://arxiv.org/abs/2001.03994
    Goodfellow, Shlens, Szegedy. Explaining and Harnessing Adversarial Examples. ICLR 2015.
    https://arxiv.org/abs/1412.6572
    Gowal et al. On the Effectiveness of Interval Bound Propagation for Training Verifiably Robust Models.
    2018. https://arxiv.org/abs/1810.12715
    Cai, Liu, Song. Curriculum Adversarial Training. IJCAI 2018. https://arxiv.org/abs/1805.04807
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advbridge.bridge.defense_spec import TrainingDefenseSpec
from advbridge.bridge.distributed import unwrap
from advbridge.bridge.errors import check_resolved
from advbridge.own_attacks import fgsm, pgd
from advbridge.zoo.train_config import FAST_RECIPE

#: Bumped when our trainer's algorithm for a defense changes, so that its cached models are retrained: enters
#: our cache key and card as ``revision`` from 2 on. adv-fgsm-rs 2: the random start no longer clipped into
#: [0, 1] before the gradient (Wong et al.'s Alg. 3 as written).
REVISIONS: dict[str, int] = {"adv-fgsm-rs": 2}
#: Validation samples attacked per epoch for early stopping on adversarial accuracy, and PGD's steps there.
VALIDATION_SAMPLES = 512
VALIDATION_STEPS = 10


def recipe_defaults(spec: TrainingDefenseSpec) -> dict[str, Any]:
    """The training options a defense defaults to: for ``adv-fgsm-rs`` Wong et al.'s fast recipe
    (:data:`zoo.train_config.FAST_RECIPE`: SGD, cyclic rate to 0.21, gradient clipping at 0.5; without it our
    MNIST net overfits catastrophically within an epoch, measured), which ART's FBF trainer imposes; none
    for the others."""
    return dict(FAST_RECIPE) if spec.defense == "adv-fgsm-rs" else {}


@contextmanager
def attacking(model: nn.Module) -> Iterator[nn.Module]:
    """Every module of ``model`` in eval mode for the block; each module's own mode restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, mode in modes:
            module.train(mode)


def adversarial_examples(model: nn.Module, x: Tensor, y: Tensor, spec: TrainingDefenseSpec) -> Tensor:
    """The training attack of a resolved ``spec`` on ``(x, y)``, the model in eval mode meanwhile."""
    what = f"{spec.defense} spec"
    with attacking(model):
        if spec.defense == "adv-fgsm":
            return fgsm(model, x, y, eps=check_resolved(spec.eps, "eps", what))
        if spec.defense == "adv-fgsm-rs":
            return fast_fgsm(
                model,
                x,
                y,
                eps=check_resolved(spec.eps, "eps", what),
                step_size=check_resolved(spec.step_size, "step_size", what),
            )
        return pgd(
            model,
            x,
            y,
            eps=check_resolved(spec.eps, "eps", what),
            norm=spec.norm,
            steps=check_resolved(spec.steps, "steps", what),
            step_size=spec.step_size,
            random_start=True,
        )


def fast_fgsm(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, step_size: float) -> Tensor:
    """Wong, Rice, Kolter 2020, Alg. 3: one signed-gradient step of ``step_size`` from a uniform start in the
    L∞ ball of radius ``eps`` (the start not clipped into [0, 1]), projected onto the ball, then into [0, 1]."""
    delta = torch.empty_like(x).uniform_(-eps, eps).requires_grad_(True)
    loss = F.cross_entropy(model(x + delta), y)
    (grad,) = torch.autograd.grad(loss, delta)
    delta = (delta.detach() + step_size * grad.sign()).clamp(-eps, eps)
    return (x + delta).clamp(0, 1)


class AdversarialObjective:
    """The training loss of a resolved adversarial ``spec`` (a :data:`zoo.training.Objective`): the first
    ⌈ratio·B⌉ samples of each (shuffled) batch replaced by adversarial examples, cross-entropy over the batch.
    Counts: clean accuracy of the batch (eval mode, no gradient) and accuracy on the adversarial part. Under
    ``torchrun`` ``model`` is the ``DistributedDataParallel`` wrapper and ``x`` this rank's part of the batch.

    :func:`zoo.training.train` calls :meth:`at` before each step with the share of training done, which sets
    the ramped budget (see the module docstring)."""

    def __init__(self, spec: TrainingDefenseSpec) -> None:
        self.spec, self.done = spec, 1.0

    def at(self, done: float) -> None:
        """The next step brings training to the share ``done`` in (0, 1] of its steps."""
        self.done = done

    def budget(self) -> TrainingDefenseSpec:
        """The spec with eps and step size scaled by the ramp at the current step."""
        ramp = self.spec.eps_ramp or 0.0
        scale = 1.0 if ramp <= 0 or self.done >= ramp else self.done / ramp
        if scale == 1.0:
            return self.spec
        what = f"{self.spec.defense} spec"
        eps = check_resolved(self.spec.eps, "eps", what)
        step_size = check_resolved(self.spec.step_size, "step_size", what)
        return replace(self.spec, eps=eps * scale, step_size=step_size * scale)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, tuple[int, int]]]:
        k = math.ceil(check_resolved(self.spec.ratio, "ratio", f"{self.spec.defense} spec") * len(x))
        net = unwrap(model)  # under torchrun: each rank attacks its own part of the batch, outside DDP
        x_adv = adversarial_examples(net, x[:k], y[:k], self.budget())
        with attacking(net), torch.no_grad():
            clean_correct = int((net(x).argmax(1) == y).sum())
        logits = model(torch.cat([x_adv, x[k:]]))
        adv_correct = int((logits[:k].argmax(1) == y[:k]).sum())
        return F.cross_entropy(logits, y), {"clean": (clean_correct, len(y)), "adv": (adv_correct, k)}


def adversarial_validation(spec: TrainingDefenseSpec):
    """``validate(model, x, y)`` for early stopping: accuracy under PGD at the training budget."""

    def validate(model: nn.Module, x: Tensor, y: Tensor) -> float:
        x, y = x[:VALIDATION_SAMPLES], y[:VALIDATION_SAMPLES]
        eps = check_resolved(spec.eps, "eps", f"{spec.defense} spec")
        x_adv = pgd(
            model, x, y, eps=eps, norm=spec.norm, steps=VALIDATION_STEPS, step_size=2.5 * eps / VALIDATION_STEPS
        )
        with torch.no_grad():
            return float((model(x_adv).argmax(1) == y).double().mean())

    validate.__doc__ = f"PGD-{VALIDATION_STEPS} accuracy at {spec.norm} eps {spec.eps:g} on up to {VALIDATION_SAMPLES} validation samples"
    return validate

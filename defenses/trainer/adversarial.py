"""Adversarial training: each batch (or a share ``ratio`` of it) replaced by adversarial examples of the
model being trained, computed by our own attacks.

    min_θ E_(x,y) [ max_{‖δ‖ ≤ ε} L(f_θ(x + δ), y) ]                     (Madry et al. 2018, eq. 2.1)

with the inner maximum approximated by

- ``adv-fgsm``: one FGSM step on a share ``ratio`` of each batch, the rest clean (Goodfellow et al. 2015,
  Sec. 6; the CIFAR-10 study's recipe; ART's ``AdversarialTrainer(ratio=0.5)``);
- ``adv-fgsm-rs``: FGSM from a uniform random start in the ball, step 1.25·ε, projected (Wong, Rice, Kolter
  2020, Alg. 3, "fast" training);
- ``adv-pgd``: PGD from a random start, ``steps`` steps of ``step_size`` (Madry et al. 2018, Sec. 5).

The model is attacked in eval mode (batch norm uses its running statistics, dropout is off, as at test
time) and every module's train/eval state is put back afterwards, so a head-only fine-tuning stays so.

References:
    Madry et al. Towards Deep Learning Models Resistant to Adversarial Attacks. ICLR 2018.
    https://arxiv.org/abs/1706.06083
    Wong, Rice, Kolter. Fast is better than free: Revisiting adversarial training. ICLR 2020.
    https://arxiv.org/abs/2001.03994
    Goodfellow, Shlens, Szegedy. Explaining and Harnessing Adversarial Examples. ICLR 2015.
    https://arxiv.org/abs/1412.6572
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bridge.defense_spec import TrainingDefenseSpec
from bridge.distributed import unwrap
from own_attacks import fgsm, pgd
from zoo.training import FAST_RECIPE

#: Validation samples attacked per epoch for early stopping on adversarial accuracy, and PGD's steps there.
VALIDATION_SAMPLES = 512
VALIDATION_STEPS = 10


def recipe_defaults(spec: TrainingDefenseSpec) -> dict[str, Any]:
    """The training options a defense defaults to: for ``adv-fgsm-rs`` Wong et al.'s fast recipe
    (:data:`zoo.training.FAST_RECIPE`: SGD, cyclic rate to 0.21, gradient clipping at 0.5; without it our
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
    with attacking(model):
        if spec.defense == "adv-fgsm":
            return fgsm(model, x, y, eps=spec.eps)
        return pgd(
            model,
            x,
            y,
            eps=spec.eps,
            norm=spec.norm,
            steps=spec.steps,
            step_size=spec.step_size,
            random_start=True,
        )


def adversarial_objective(spec: TrainingDefenseSpec):
    """The training loss of a resolved adversarial ``spec`` (a :data:`zoo.training.Objective`): the first
    ⌈ratio·B⌉ samples of each (shuffled) batch replaced by adversarial examples, cross-entropy over the batch.
    Counts: clean accuracy of the batch (eval mode, no gradient) and accuracy on the adversarial part. Under
    ``torchrun`` ``model`` is the ``DistributedDataParallel`` wrapper and ``x`` this rank's part of the batch."""

    def objective(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, tuple[int, int]]]:
        k = math.ceil(spec.ratio * len(x))
        net = unwrap(model)  # under torchrun: each rank attacks its own part of the batch, outside DDP
        x_adv = adversarial_examples(net, x[:k], y[:k], spec)
        with attacking(net), torch.no_grad():
            clean_correct = int((net(x).argmax(1) == y).sum())
        logits = model(torch.cat([x_adv, x[k:]]))
        adv_correct = int((logits[:k].argmax(1) == y[:k]).sum())
        return F.cross_entropy(logits, y), {"clean": (clean_correct, len(y)), "adv": (adv_correct, k)}

    return objective


def adversarial_validation(spec: TrainingDefenseSpec):
    """``validate(model, x, y)`` for early stopping: accuracy under PGD at the training budget."""

    def validate(model: nn.Module, x: Tensor, y: Tensor) -> float:
        x, y = x[:VALIDATION_SAMPLES], y[:VALIDATION_SAMPLES]
        eps = spec.eps
        x_adv = pgd(
            model, x, y, eps=eps, norm=spec.norm, steps=VALIDATION_STEPS, step_size=2.5 * eps / VALIDATION_STEPS
        )
        with torch.no_grad():
            return float((model(x_adv).argmax(1) == y).double().mean())

    validate.__doc__ = f"PGD-{VALIDATION_STEPS} accuracy at {spec.norm} eps {spec.eps:g} on up to {VALIDATION_SAMPLES} validation samples"
    return validate

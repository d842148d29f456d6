"""adversarial-robustness-toolbox (ART) 1.20.1 adapter.

| advbridge      | ART                                                      |
|----------------|----------------------------------------------------------|
| eps            | ``eps``                                                  |
| step_size      | ``eps_step`` (ignored by FGM unless ``minimal=True``)    |
| steps          | ``max_iter``                                             |
| random_start   | ``num_random_init=1`` (0 = none)                         |
| targeted       | ``targeted=True``, ``y=targets``                         |
| norm           | ``norm=np.inf`` / ``norm=2``                             |

Semantic differences:
- numpy in and out (float32); ``clip_values=(0, 1)`` must be set or ART does not clip;
- ``y`` is always passed: with ``y=None`` ART attacks its own predictions;
- PGD-L2 clips to [0, 1] *before* projecting onto the ball (others project, then clip): once clipping
  is active the iterates differ (``own_attacks.pgd(clip_before_projection=True)`` reproduces ART);
- random starts use numpy's RNG (seeded by the runner), not torch's, so they cannot match torch draws;
- ``predict``/``loss_gradient`` force eval mode and do not restore it (the runner restores it);
- ``batch_size`` is set to the whole batch so that gradients are computed on the same batches as ours.
- DeepFool (L2 only; overshoot is called ``epsilon``, default 1e-6; candidates ``nb_grads``, default
  10, taken as the *union over the whole batch* of each sample's top-k): **ignores y** and moves away
  from the clean prediction; computes one ``class_gradient`` per candidate class plus a ``predict``
  per step with a numpy round-trip, also for finished samples; r = |f|/(‖w‖²+tol)·w without the 1e-4
  term; applies the overshoot once at the end (x0 + (1+ε)(x_T − x0), then clip), scaled by
  (clip_max − clip_min);
- no DDN.

Defences (``art.defences.preprocessor``, ``art.preprocessing.image``):

| advbridge                     | ART                                                                     |
|-------------------------------|-------------------------------------------------------------------------|
| ``bit-depth``, ``bits``       | ``FeatureSqueezing(clip_values=(0, 1), bit_depth=bits)``                |
| ``median``, ``size``          | ``SpatialSmoothing(window_size=size, channels_first=True)``             |
| ``resample``, ``factor``, ``mode`` | two ``ImageResizePyTorch(height, width, interpolation=mode)``: down to ⌊H/factor⌋×⌊W/factor⌋, back up to H×W; ``clip_values=(0, 1)`` for bicubic only |
| ``squeeze-detect``            | none (ART's detectors are ``BinaryInputDetector``, ``BinaryActivationDetector``, ``SubsetScanningDetector``, ``BeyondDetectorPyTorch``) |

Semantic differences and traps, all handled here:
- ``FeatureSqueezing`` returns float64 under numpy ≥ 2 (``np.rint(2**b - 1)`` promotes the batch, NEP 50),
  which ``PyTorchClassifier`` then refuses; the output is cast back to the input's dtype;
- ``SpatialSmoothing`` defaults to ``channels_first=False``, which filters across the channel axis of an
  NCHW batch: it is always built with ``channels_first=True``;
- both are numpy: their only gradient is ``estimate_gradient``, the identity (BPDA), so they offer the
  ``"bpda"`` backward and not the ``"exact"`` one;
- ``ImageResizePyTorch`` resizes one image at a time and ``.squeeze()``s it, which drops the channel axis of
  one-channel images (and any side of length 1): the batch is reshaped back to ``(N, C, h, w)``. It is torch,
  so its gradient is autograd's (``"exact"``); it has no BPDA backward. Its ``clip_values`` clamp passes no
  gradient to outputs exactly at 0 or 1 (measured: all-zero gradients on a black MNIST image), so it is set
  only for bicubic, the one mode that overshoots [0, 1] (ours clamps there too, the same way). Importing
  ``art.preprocessing.image`` needs OpenCV (``opencv-python-headless``).

Training-time defences (``art.defences.trainer``, ``art.defences.transformer.evasion``), run on the same
training split, initial weights (the config's seed), epochs, batch size, optimizer, learning-rate schedule
and weight decay as ours; the arrays go to ART as float32 numpy in [0, 1] (its clip values), labels one-hot
(``AdversarialTrainerFBFPyTorch`` fails on integer labels):

| advbridge                             | ART                                                                |
|---------------------------------------|--------------------------------------------------------------------|
| ``adv-pgd`` L∞ (eps, steps, step_size) | ``AdversarialTrainerMadryPGD(eps=eps, eps_step=step_size, max_iter=steps, num_random_init=1)`` — on the **0–1 scale** (its defaults, eps=8, eps_step=2, are 0–255) |
| ``adv-pgd`` L2                         | ``AdversarialTrainer(ProjectedGradientDescent(norm=2, ...), ratio=1.0)`` (Madry's trainer is L∞ only) |
| ``adv-fgsm`` (eps, ratio)              | ``AdversarialTrainer(FastGradientMethod(eps=eps), ratio=ratio)``   |
| ``adv-fgsm-rs`` (eps)                  | ``AdversarialTrainerFBFPyTorch(eps=eps)`` (step 1.25·eps fixed)    |
| ``distill`` (temperature T)            | teacher ``fit`` + ``DefensiveDistillation``, on temperature-scaled probability models |

Traps, all handled here:
- Madry's PGD is built with ART's default ``batch_size=32`` and ``verbose=True``: set to the training batch
  size (the same gradients, fewer calls) and quiet, so the speed comparison is not ART's worst case;
- ``AdversarialTrainerFBFPyTorch`` imposes Wong et al.'s recipe: its own learning rate on
  ``param_groups[0]``, cyclic 0 → 0.21 → 0 peaking at epoch ``2E // 5`` (their CIFAR-10 SGD values), and
  gradient norms clipped at 0.5. At 0.21 Adam diverges, so it is refused unless the config is
  :data:`zoo.train_config.FAST_RECIPE` (SGD momentum 0.9, cyclic, lr 0.21, clip 0.5), which ours then trains
  with too: the same schedule step for step when E is a multiple of 5;
- ``AdversarialTrainerFBFPyTorch`` takes its weight steps with the model as ``loss_gradient`` left it, in
  eval mode: dropout off, batch norm on running statistics (ours trains in train mode). Not changed here:
  it is ART's algorithm, and ``advbridge_mnist_cnn`` has neither dropout (rate 0) nor batch norm;
- ``DefensiveDistillation`` has no temperature and insists (``is_probability``) that teacher and student
  output probabilities: both are wrapped as softmax(z/T), and their loss is the cross-entropy on those
  probabilities, −Σ y·log p (``nn.CrossEntropyLoss`` would apply a second softmax). The deployed student is
  the bare network: logits, T = 1;
- ART's trainers have no eps ramp (they attack at the full budget from the first step): a spec's
  ``eps_ramp`` becomes 0 in their key and card (:meth:`ArtAdapter.training_spec`);
- ART's trainers have no validation split or early stopping (all epochs run) and no augmentation (a config
  with augmentation is refused), nor gradient clipping (refused but for FBF). Our optimizer and schedule
  (:func:`zoo.optim.make_optimizer`, :func:`~zoo.optim.make_schedule`) reach them through
  ``fit(scheduler=)``: the adversarial trainers call ``classifier.fit`` once per batch, so it steps per
  batch as ours; the
  distillation teacher's ``fit`` steps it per epoch; ``DefensiveDistillation`` passes no scheduler, so the
  student trains at the constant rate;
- ``PyTorchClassifier.fit`` puts the whole model in train mode (a frozen body's batch norm drifts in
  head-only fine-tuning), and shuffles with torch's RNG, the adversarial trainers with numpy's: both are
  seeded with the config's seed.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from advbridge.bridge.adapters.base import Adapter
from advbridge.bridge.defense_spec import DefenseSpec, TrainingDefenseSpec
from advbridge.bridge.errors import check_resolved
from advbridge.bridge.spec import AttackSpec, Norm

if TYPE_CHECKING:
    from advbridge.zoo.models import NormalizedClassifier


def art_classifier(model: nn.Module, x: Tensor, num_classes: int):
    """Wrap ``model`` (images in [0, 1] → logits) as an ART ``PyTorchClassifier``."""
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=num_classes,
        clip_values=(0.0, 1.0),
        device_type="gpu" if x.is_cuda else "cpu",
    )


class ArtAdapter(Adapter):
    name = "art"
    distribution = "adversarial-robustness-toolbox"

    def unsupported_reason(self, spec: AttackSpec) -> str | None:
        if spec.attack in ("fgsm", "pgd"):
            return None
        if spec.attack == "deepfool":
            return "ART's DeepFool is L2 only" if spec.norm is Norm.LINF else None
        return f"ART has no {spec.attack.upper()}"

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, spec: AttackSpec, num_classes: int) -> Tensor:
        from art.attacks.evasion import DeepFool, FastGradientMethod, ProjectedGradientDescent

        classifier = art_classifier(model, x, num_classes)
        norm = np.inf if spec.norm is Norm.LINF else 2
        if spec.attack == "deepfool":
            attack = DeepFool(
                classifier,
                max_iter=spec.steps,
                epsilon=spec.overshoot,
                nb_grads=spec.candidates or num_classes,
                batch_size=len(x),
                verbose=False,
            )
        elif spec.attack == "fgsm":
            attack = FastGradientMethod(
                classifier, norm=norm, eps=spec.eps, targeted=spec.targeted, num_random_init=0, batch_size=len(x)
            )
        else:
            attack = ProjectedGradientDescent(
                classifier,
                norm=norm,
                eps=spec.eps,
                eps_step=spec.effective_step_size,
                max_iter=spec.steps,
                targeted=spec.targeted,
                num_random_init=int(spec.random_start),
                batch_size=len(x),
                verbose=False,
            )
        x_adv = attack.generate(x.detach().cpu().numpy(), y=y.detach().cpu().numpy())
        return torch.from_numpy(x_adv)

    def training_unsupported_reason(self, spec: TrainingDefenseSpec, config) -> str | None:
        return _art_training_reason(spec, config)

    def training_spec(self, spec: TrainingDefenseSpec) -> TrainingDefenseSpec:
        return replace(spec, eps_ramp=0.0) if spec.adversarial else spec

    def _train_defense(
        self, config, spec: TrainingDefenseSpec, *, progress: bool, device
    ) -> tuple[NormalizedClassifier, dict[str, Any]]:
        return _train_with_art(config, spec, progress=progress, device=device)

    def defense_unsupported_reason(self, spec: DefenseSpec, backward: str = "exact") -> str | None:
        if spec.detector:
            return (
                "ART has no feature-squeezing detector (its detectors: BinaryInputDetector, "
                "BinaryActivationDetector, SubsetScanningDetector, BeyondDetectorPyTorch)"
            )
        if spec.defense in ("bit-depth", "median") and backward != "bpda":
            return f"ART's {_ART_NAMES[spec.defense]} is numpy: its only gradient is the identity (BPDA)"
        if spec.defense == "resample" and backward != "exact":
            return "ART's ImageResizePyTorch is torch: its gradient is autograd's, it has no BPDA backward"
        return None

    def _build_defense(self, spec: DefenseSpec, backward: str) -> nn.Module:
        if spec.defense == "resample":
            return _ArtResample(check_resolved(spec.factor, "factor", "resample spec"), spec.mode)
        from art.defences.preprocessor import FeatureSqueezing, SpatialSmoothing

        if spec.defense == "bit-depth":
            return _ArtNumpyPreprocessor(FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=spec.bits))
        return _ArtNumpyPreprocessor(SpatialSmoothing(window_size=spec.size, channels_first=True))


_ART_NAMES = {"bit-depth": "FeatureSqueezing", "median": "SpatialSmoothing"}


class _NumpyWithIdentityGradient(torch.autograd.Function):
    """Forward: an ART numpy preprocessor, output cast back to the input's dtype (its float64 under numpy 2).
    Backward: the preprocessor's ``estimate_gradient`` (the identity for these two)."""

    @staticmethod
    def forward(ctx, x: Tensor, preprocessor) -> Tensor:
        x_np = x.detach().cpu().numpy()
        out, _ = preprocessor(x_np)
        ctx.preprocessor, ctx.x_np = preprocessor, x_np
        return torch.from_numpy(np.ascontiguousarray(out, dtype=x_np.dtype)).to(x.device)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        estimate = ctx.preprocessor.estimate_gradient(ctx.x_np, grad.detach().cpu().numpy())
        return torch.from_numpy(np.ascontiguousarray(estimate, dtype=ctx.x_np.dtype)).to(grad.device), None


class _ArtNumpyPreprocessor(nn.Module):
    """An ART numpy preprocessor as a module on [0, 1] tensors, with ART's gradient estimate."""

    def __init__(self, preprocessor) -> None:
        super().__init__()
        self.preprocessor = preprocessor

    def forward(self, x: Tensor) -> Tensor:
        return _NumpyWithIdentityGradient.apply(x, self.preprocessor)

    def extra_repr(self) -> str:
        return repr(self.preprocessor)


class _ArtResample(nn.Module):
    """Down by ``factor`` and back up with two ART ``ImageResizePyTorch``; the channel axis their
    ``.squeeze()`` drops is put back."""

    def __init__(self, factor: float, mode: str) -> None:
        super().__init__()
        self.factor, self.mode = factor, mode

    def forward(self, x: Tensor) -> Tensor:
        from art.preprocessing.image import ImageResizePyTorch

        n, c, h, w = x.shape
        small = (max(1, int(h / self.factor)), max(1, int(w / self.factor)))
        clip = (0.0, 1.0) if self.mode == "bicubic" else None  # elsewhere a no-op whose gradient is 0 at 0 and 1
        down, _ = ImageResizePyTorch(*small, interpolation=self.mode, clip_values=clip).forward(x)
        down = down.reshape(n, c, *small)
        up, _ = ImageResizePyTorch(h, w, interpolation=self.mode, clip_values=clip).forward(down)
        return up.reshape(n, c, h, w)


class _Probabilities(nn.Module):
    """softmax(model(x) / T): the probability model ART's ``DefensiveDistillation`` insists on."""

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        self.model, self.temperature = model, temperature

    def forward(self, x: Tensor) -> Tensor:
        return (self.model(x) / self.temperature).softmax(1)


class _ProbabilityCrossEntropy(nn.Module):
    """−Σ_j y_j · log p_j on probability outputs, soft (distillation) or one-hot labels."""

    def forward(self, probabilities: Tensor, labels: Tensor) -> Tensor:
        return -(labels.to(probabilities.dtype) * probabilities.clamp_min(1e-30).log()).sum(1).mean()


def _training_classifier(model: nn.Module, config, info, *, loss: nn.Module | None = None):
    """ART's ``PyTorchClassifier`` around ``model`` with the config's optimizer, for ART's trainers."""
    from art.estimators.classification import PyTorchClassifier

    from advbridge.zoo.optim import make_optimizer

    optimizer = make_optimizer(config, [p for p in model.parameters() if p.requires_grad])
    device = next(model.parameters()).device
    return PyTorchClassifier(
        model=model,
        loss=loss if loss is not None else nn.CrossEntropyLoss(),
        optimizer=optimizer,
        input_shape=(info.in_chans, info.image_size, info.image_size),
        nb_classes=info.num_classes,
        clip_values=(0.0, 1.0),
        device_type="gpu" if device.type == "cuda" else "cpu",
    )


def _adversarial_trainer(spec: TrainingDefenseSpec, classifier, batch_size: int):
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
    from art.defences.trainer import (
        AdversarialTrainer,
        AdversarialTrainerFBFPyTorch,
        AdversarialTrainerMadryPGD,
    )

    if spec.defense == "adv-fgsm-rs":
        return AdversarialTrainerFBFPyTorch(classifier, eps=spec.eps)
    if spec.defense == "adv-fgsm":
        attack = FastGradientMethod(classifier, eps=spec.eps, batch_size=batch_size)
        return AdversarialTrainer(classifier, attack, ratio=spec.ratio)
    if spec.norm == "Linf":
        trainer = AdversarialTrainerMadryPGD(
            classifier,
            nb_epochs=None,
            batch_size=batch_size,
            eps=spec.eps,
            eps_step=spec.step_size,
            max_iter=spec.steps,
            num_random_init=1,
        )
        trainer.attack.set_params(batch_size=batch_size, verbose=False)
        return trainer
    attack = ProjectedGradientDescent(
        classifier,
        norm=2,
        eps=spec.eps,
        eps_step=spec.step_size,
        max_iter=spec.steps,
        num_random_init=1,
        batch_size=batch_size,
        verbose=False,
    )
    return AdversarialTrainer(classifier, attack, ratio=1.0)


def _art_training_reason(spec: TrainingDefenseSpec, config) -> str | None:
    from advbridge.zoo.train_config import FAST_RECIPE

    if config.augment:
        return "ART's trainers take arrays: no augmentation (train without it)"
    if spec.defense == "adv-fgsm-rs":
        eps = check_resolved(spec.eps, "eps", "adv-fgsm-rs spec")
        step_size = check_resolved(spec.step_size, "step_size", "adv-fgsm-rs spec")
        if not math.isclose(step_size, 1.25 * eps):
            return f"AdversarialTrainerFBFPyTorch's step is 1.25·eps ({1.25 * eps:g}), got {step_size:g}"
        if spec.ratio != 1:
            return "AdversarialTrainerFBFPyTorch attacks every sample (ratio 1)"
        recipe = {k: getattr(config, k) for k in FAST_RECIPE}
        if recipe != FAST_RECIPE:
            wanted = ", ".join(f"{k} {v}" for k, v in FAST_RECIPE.items())
            got = ", ".join(f"{k} {v}" for k, v in recipe.items())
            return f"AdversarialTrainerFBFPyTorch imposes Wong et al.'s recipe ({wanted}), got {got}"
        return None
    if config.clip_grad_norm is not None:
        return f"ART's PyTorchClassifier.fit does not clip gradients, got clip_grad_norm {config.clip_grad_norm:g}"
    if not spec.adversarial and config.schedule != "cosine":
        return f"ART's distillation steps the teacher's schedule per epoch: cosine only, got {config.schedule}"
    return None


def _train_with_art(
    config, spec: TrainingDefenseSpec, *, progress: bool, device
) -> tuple[NormalizedClassifier, dict[str, Any]]:
    from advbridge.zoo.cards import trained_card
    from advbridge.zoo.optim import make_schedule
    from advbridge.zoo.training import initial_model
    from advbridge.zoo.training_data import stack, training_data

    data = training_data(config)
    x, y = stack(data.train_ds, data.train_idx)
    x_np = x.numpy().astype(np.float32)
    y_np = np.eye(data.info.num_classes, dtype=np.float32)[y.numpy()]  # one-hot: FBF's loss_gradient needs it
    epochs, batch_size = config.epochs, config.batch_size
    fields: dict[str, Any] = {}
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        np_state = np.random.get_state()
        try:
            model, _ = initial_model(config, data.info, device)
            np.random.seed(config.seed)
            if spec.adversarial:
                classifier = _training_classifier(model, config, data.info)
                trainer = _adversarial_trainer(spec, classifier, batch_size)
                fields["art_trainer"] = type(trainer).__name__
                options = {}
                if spec.defense != "adv-fgsm-rs":  # one classifier.fit per batch: the scheduler steps per batch
                    options["scheduler"] = make_schedule(config, classifier.optimizer, -(-len(x_np) // batch_size))
                trainer.fit(x_np, y_np, batch_size=batch_size, nb_epochs=epochs, **options)
            else:
                from art.defences.transformer.evasion import DefensiveDistillation

                temperature = check_resolved(spec.temperature, "temperature", "distill spec")
                loss = _ProbabilityCrossEntropy()
                probabilities = _Probabilities(model, temperature)
                teacher = _training_classifier(probabilities, config, data.info, loss=loss)
                schedule = torch.optim.lr_scheduler.CosineAnnealingLR(teacher.optimizer, epochs)  # per epoch
                teacher.fit(x_np, y_np, batch_size=batch_size, nb_epochs=epochs, verbose=progress, scheduler=schedule)
                model.eval()
                fields["teacher_accuracy"] = trained_card(config, data, model)["accuracy"]
                student, _ = initial_model(config, data.info, device)
                student_classifier = _training_classifier(
                    _Probabilities(student, temperature), config, data.info, loss=loss
                )
                DefensiveDistillation(teacher, batch_size=batch_size, nb_epochs=epochs)(
                    x_np, transformed_classifier=student_classifier
                )
                model, fields["art_trainer"] = student, "DefensiveDistillation"
        finally:
            np.random.set_state(np_state)
    seconds = time.perf_counter() - start
    model.eval()
    card = trained_card(
        config,
        data,
        model,
        epochs_run=epochs,
        best_epoch=epochs,
        train_seconds=round(seconds, 2),
        validation="none: ART's trainers neither validate nor stop early",
        history=[],
        **fields,
    )
    return model, card

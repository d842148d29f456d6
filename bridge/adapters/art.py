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
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from bridge.adapters.base import Adapter
from bridge.defense_spec import DefenseSpec
from bridge.spec import AttackSpec, Norm


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
            return _ArtResample(spec.factor, spec.mode)
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

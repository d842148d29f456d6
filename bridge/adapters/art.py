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
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from bridge.adapters.base import Adapter
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

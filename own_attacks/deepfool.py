"""DeepFool (Moosavi-Dezfooli et al. 2016), L2 and L∞, batched over samples and candidate classes.

At each step, for the active (not yet misclassified) samples, with source class s and candidates k:

    f'_k = z_k(x) − z_s(x),   w'_k = ∇_x f'_k                       (Alg. 2, lines 5-6)
    l̂   = argmin_k |f'_k| / ‖w'_k‖_q                                (line 8; q = 2 for L2, q = 1 for L∞)
    r   = (|f'_l̂| / ‖w'_l̂‖_q + min_step) · w'_l̂ / ‖w'_l̂‖_2         (L2, eq. 9)
    r   = (|f'_l̂| / ‖w'_l̂‖_1 + min_step) · sign(w'_l̂)              (L∞, Sec. 3.3 with p = ∞)

``min_step`` (1e-4) is the constant the reference code adds "for numerical stability"; it makes every
step land just past the linearized boundary. The Jacobian rows of all candidates come from one
forward pass and one input-gradient backward pass per candidate, only on the samples still running:
when enough samples finished at this step's forward pass that their candidate backwards would cost
more than a second forward pass on the rest (finished × (k−1) > running), the running samples are
passed forward again without them. The working batch is channels-last by default (faster convolutions on CPU).

Samples are attacked ``batch_size`` (128) at a time: each forward graph is held through k−1 backward passes,
so memory grows with the batch, while every sample's iterates are independent of the others'. Measured on
the MNIST CNN, 500 digits, L2, the 2-core AVX-512 CPU (best of 2, own alone): all 500 at once 6.75 s and
281-377 MB peak; 128 at a time 5.15-5.57 s and 146-207 MB (docs/speed.md has the bench tables). A big
batch's large tensors (conv1's output over 500 digits is 50 MB) are above glibc's 32 MB mmap threshold,
so every pass maps and page-faults them afresh: with ``MALLOC_MMAP_THRESHOLD_=1000000000`` all 500 at once
took 4.70 s.

Conventions (the references differ; ``bridge.adapters`` maps each library onto these options):

- ``source="label"``: move away from the true label (torchattacks, adv-lib; foolbox in effect, since
  it stops at once on misclassified inputs); ``"prediction"``: away from the clean prediction (ART).
- ``overshoot_mode="total"`` (default; the authors' code and foolbox): x = clip(x0 + (1+η)·Σ r);
  ``"step"`` (torchattacks, adv-lib): x ← clip(x + (1+η)·r); ``"end"`` (ART): x ← clip(x + r) in the
  loop, then x = clip(x0 + (1+η)(x_T − x0)). Without clipping "total" and "step" give the same iterates.
- ``candidates``: the top-k classes of the clean logits (foolbox, ART), or all classes (``None``).

Failed samples come back as the last iterate (never silently as the clean input); the runner
recomputes success. Targeted DeepFool does not exist (the attack seeks the closest boundary of any
class) and is refused.

References:
    Moosavi-Dezfooli, Fawzi, Frossard. DeepFool: a simple and accurate method to fool deep neural
    networks. CVPR 2016, Alg. 2 and eq. (9). https://arxiv.org/abs/1511.04599
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from advbridge.bridge.errors import InvalidParameterError
from advbridge.bridge.validation import check_inputs, check_labels
from advbridge.own_attacks._common import (
    batch_view,
    check_steps,
    in_default_layout_if_needed,
    in_layout_of,
    working_layout,
)

OVERSHOOT_MODES = ("total", "step", "end")
SOURCES = ("label", "prediction")


def _candidate_classes(logits: Tensor, source: Tensor, candidates: int | None) -> Tensor:
    """The k−1 classes to test per sample: top-k of the clean logits (or all), without the source."""
    num_classes = logits.shape[1]
    k = num_classes if candidates is None else min(candidates, num_classes)
    order = logits.argsort(dim=1, descending=True)
    others = order[order != source[:, None]].view(len(logits), num_classes - 1)
    return others[:, : k - 1]


def _closest_boundary(
    logits: Tensor, x: Tensor, source: Tensor, classes: Tensor, q: int, keep: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Linearized distance |f'_l̂| / ‖w'_l̂‖_q to the closest candidate boundary and its gradient w'_l̂.

    One input-gradient backward pass per candidate c through the same forward graph gives
    w'_c = ∇_x (z_c − z_s) (on CPU this beat one vmap-batched backward; measured); the running minimum
    keeps the first of equal distances, as ``argmin``. ``keep`` selects the rows still running.
    """
    rows = torch.arange(len(x), device=x.device)
    source_logit = logits[rows, source]
    m = classes.shape[1]
    for j in range(m):
        f = logits[rows, classes[:, j]] - source_logit
        (w,) = torch.autograd.grad(f.sum(), x, retain_graph=j < m - 1)
        f = f.detach()
        if keep is not None:
            f, w = f[keep], w[keep]
        dist = f.abs() / (w.flatten(1).norm(p=q, dim=1) + 1e-8)
        if j == 0:
            best_dist, best_w = dist, w
        else:
            closer = dist < best_dist
            best_dist = torch.where(closer, dist, best_dist)
            best_w = torch.where(batch_view(closer, w), w, best_w)
    return best_dist, best_w


def deepfool(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    *,
    norm: str = "L2",
    steps: int = 50,
    overshoot: float = 0.02,
    candidates: int | None = None,
    min_step: float = 1e-4,
    source: Literal["label", "prediction"] = "label",
    overshoot_mode: Literal["total", "step", "end"] = "total",
    targeted: bool = False,
    channels_last: bool = True,
    batch_size: int | None = 128,
) -> Tensor:
    """Minimal-norm untargeted attack by iterative linearization of the decision boundaries.

    Args:
        model: maps images in [0, 1] to logits.
        inputs: clean images.
        labels: true labels (stop criterion, and the source class when ``source="label"``).
        norm: ``"L2"`` or ``"Linf"``.
        steps: maximum iterations; each sample stops as soon as it is misclassified.
        overshoot: η, how far past the estimated boundary to go.
        candidates: number of classes considered (top-k of the clean logits, source included);
            ``None`` = all classes.
        min_step: constant added to each step's distance (1e-4 in the reference code; 0 for
            torchattacks' and ART's update).
        source: ``"label"`` or ``"prediction"`` (see module docstring).
        overshoot_mode: ``"total"``, ``"step"`` or ``"end"`` (see module docstring).
        targeted: must be False; targeted DeepFool is refused.
        channels_last: run the model on a channels-last copy (faster on CPU; rounding differs from
            the default layout, see ``own_attacks._common.working_layout``).
        batch_size: samples attacked at once (``None``: all); results agree to float rounding whatever
            it is (batch-size-dependent kernels), peak memory grows with it.

    Shape:
        inputs ``(N, ...)`` (any shape with a batch dimension: ``(N, D)``, ``(N, C, L)``, ``(N, C, H, W)``...),
        labels ``(N,)``; returns the shape of ``inputs``.

    References:
        Moosavi-Dezfooli et al. 2016, https://arxiv.org/abs/1511.04599
    """
    if targeted:
        raise InvalidParameterError("targeted DeepFool is not supported: it moves to the closest boundary of any class")
    check_inputs(inputs)
    labels = check_labels(labels, len(inputs))
    steps = check_steps(steps)
    if norm not in ("L2", "Linf"):
        raise InvalidParameterError(f"expected norm 'L2' or 'Linf', got {norm!r}")
    if overshoot_mode not in OVERSHOOT_MODES:
        raise InvalidParameterError(f"expected overshoot_mode in {OVERSHOOT_MODES}, got {overshoot_mode!r}")
    if source not in SOURCES:
        raise InvalidParameterError(f"expected source in {SOURCES}, got {source!r}")
    if candidates is not None and candidates < 2:
        raise InvalidParameterError(f"expected candidates >= 2 or None, got {candidates!r}")
    if overshoot < 0 or min_step < 0:
        raise InvalidParameterError(f"expected overshoot >= 0 and min_step >= 0, got {overshoot!r}, {min_step!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise InvalidParameterError(f"expected batch_size >= 1 (an integer) or None, got {batch_size!r}")

    def attack(inputs: Tensor, labels: Tensor, channels_last: bool) -> Tensor:
        x0 = working_layout(inputs.detach(), channels_last)
        step_scale = 1.0 + overshoot if overshoot_mode in ("total", "step") else 1.0
        x_adv = x0.clone()
        total = torch.zeros_like(x0)  # Σ r, unclipped ("total" mode)
        active = torch.arange(len(x0), device=x0.device)
        q = 2 if norm == "L2" else 1
        for step in range(steps):
            x = x_adv[active].requires_grad_(True)
            logits = model(x)
            if step == 0:  # the first forward pass is on the clean inputs: source and candidates come from it
                src = labels if source == "label" else logits.detach().argmax(1)
                classes = _candidate_classes(logits.detach(), src, candidates)
            running = logits.argmax(1) == src[active]  # per-sample early stop
            in_graph, keep = active, None  # the samples in this forward graph; the rows of them still running
            if not running.all():
                if not running.any():
                    break
                active, keep = active[running], running
                finished = len(running) - len(active)
                if finished * classes.shape[1] > len(active):
                    # the candidate backwards saved on finished rows outweigh one more forward on the rest;
                    # the old graph is freed first, so that two graphs are never held at once
                    logits = None
                    x, in_graph, keep = x_adv[active].requires_grad_(True), active, None
                    logits = model(x)
            dist, w = _closest_boundary(logits, x, src[in_graph], classes[in_graph], q, keep)
            dist = dist + min_step
            if norm == "L2":
                r = batch_view(dist / (w.flatten(1).norm(p=2, dim=1) + 1e-8), w) * w
            else:
                r = batch_view(dist, w) * w.sign()
            if overshoot_mode == "total":
                total[active] += r
                x_adv[active] = (x0[active] + step_scale * total[active]).clamp(0, 1)
            else:
                x_adv[active] = (x_adv[active] + step_scale * r).clamp(0, 1)
        if overshoot_mode == "end":
            x_adv = (x0 + (1.0 + overshoot) * (x_adv - x0)).clamp(0, 1)
        return in_layout_of(x_adv.detach(), inputs)

    def attack_part(inputs: Tensor, labels: Tensor) -> Tensor:
        return in_default_layout_if_needed(lambda layout: attack(inputs, labels, layout), channels_last)

    if batch_size is None or len(inputs) <= batch_size:
        return attack_part(inputs, labels)
    out = torch.empty_like(inputs)  # the caller's layout
    for start in range(0, len(inputs), batch_size):
        part = slice(start, start + batch_size)
        out[part] = attack_part(inputs[part], labels[part])
    return out

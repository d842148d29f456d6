"""The modules the audit attacks besides the model itself: BPDA through a surrogate (:class:`StraightThrough`),
log-probabilities of a probability-output model (:class:`LogOutputs`), the BPDA variant a system declares
(:func:`declared_bpda`), and the radius of an unbounded attack (:func:`unbounded_eps`); what the audit runs on a
model with too few classes for AutoAttack (:func:`few_classes_rows`), and whether a model seems to expect
normalized inputs (:func:`normalization_hint`). A model with several outputs is wrapped in
:class:`~advbridge.bridge.logits.LogitsOf` before it gets here."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from advbridge.bridge.adapters.torchattacks import TorchattacksAdapter
from advbridge.defenses.preprocessor.bpda import BPDA
from advbridge.experiments.audit.results import NAIVE, AuditRow

if TYPE_CHECKING:
    from advbridge.experiments.audit.cascade import Cascade

#: AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square) needs this many classes: its APGD-T's targeted DLR loss
#: divides by z_π1 − (z_π3 + z_π4)/2 (Croce & Hein 2020, eq. 7; AutoAttack's ``check_n_classes``).
AUTOATTACK_CLASSES = 4
#: The untargeted DLR loss divides by z_π1 − z_π3: 3 classes.
DLR_CLASSES = 3


class StraightThrough(nn.Module):
    """BPDA with the surrogate as the differentiable approximation of the whole system (Athalye et al. 2018,
    Sec. 4.1, generalized): forward, the system's outputs; backward, the surrogate's gradient."""

    def __init__(self, system: nn.Module, surrogate: nn.Module) -> None:
        super().__init__()
        self.system, self.surrogate = system, surrogate

    def forward(self, x: Tensor) -> Tensor:
        approx = self.surrogate(x)
        with torch.no_grad():
            exact = self.system(x.detach()).to(approx.dtype)
        if exact.shape[1] > approx.shape[1]:  # a detector's reject logit: no gradient from the surrogate
            approx = torch.nn.functional.pad(approx, (0, exact.shape[1] - approx.shape[1]))
        return approx + (exact - approx).detach()


class LogOutputs(nn.Module):
    """log of a model's probability outputs (clamped at 1e-30): logits up to a constant per row."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).clamp_min(1e-30).log()


def unbounded_eps(norm: str, x: Tensor) -> float:
    """An eps no perturbation inside [0, 1] exceeds: 1 (L∞) or √d (L2)."""
    return 1.0 if norm == "Linf" else math.sqrt(x[0].numel())


def declared_bpda(model: nn.Module) -> nn.Module | None:
    """The BPDA variant a system declares: its own ``bpda`` module (a detector's), or ``classifier(BPDA(preprocess))``
    for a system that declares ``preprocess`` and ``classifier``; ``None`` when it declares neither."""
    own = getattr(model, "bpda", None)
    if isinstance(own, nn.Module):
        return own.eval()
    preprocess, classifier = getattr(model, "preprocess", None), getattr(model, "classifier", None)
    if isinstance(preprocess, nn.Module) and isinstance(classifier, nn.Module):
        return nn.Sequential(BPDA(preprocess), classifier).eval()
    return None


def autoattack_unsupported(num_classes: int) -> str:
    """Why AutoAttack standard is a row with ``status=unsupported`` on a model with ``num_classes`` < 4, and what runs
    instead."""
    instead = "APGD-CE" + (" and APGD-DLR (untargeted DLR needs >= 3)" if num_classes >= DLR_CLASSES else "")
    return (
        f"AutoAttack standard needs >= {AUTOATTACK_CLASSES} classes, got {num_classes}: its APGD-T's targeted DLR "
        f"loss divides by z_π1 - (z_π3 + z_π4)/2 (AutoAttack check_n_classes); {instead} of its ensemble run instead"
    )


def few_classes_rows(cascade: Cascade) -> list[AuditRow]:
    """The naive rows of AutoAttack on a model with fewer than 4 classes: AutoAttack standard itself as an
    ``unsupported`` row with the reason, then what AutoAttack's own practice keeps (``check_n_classes`` warns and the
    ensemble goes on without the DLR attacks): its first attack, APGD-CE (cross-entropy, any number of classes),
    as that ensemble runs it, and with 3 classes the untargeted APGD-DLR of its ``plus`` version."""
    config, classes = cascade.config, cascade.num_classes
    rows = [AuditRow("autoattack", "torchattacks", NAIVE, status="unsupported", reason=autoattack_unsupported(classes))]
    for loss in ("ce", "dlr") if classes >= DLR_CLASSES else ("ce",):

        def run(tracked: nn.Module, loss: str = loss) -> Tensor:
            return TorchattacksAdapter().apgd(
                tracked, cascade.x, cascade.y, norm=config.norm, eps=config.eps, loss=loss, seed=config.seed
            )

        rows.append(cascade.own_row(f"apgd-{loss}", "torchattacks", NAIVE, run))
    return rows


def normalization_hint(model: nn.Module, x: Tensor, y: Tensor, num_classes: int) -> str | None:
    """One line when ``model`` seems to expect normalized inputs, else ``None``.

    The model is run on the images as they are ([0, 1]) and on the same images standardized per channel (the batch's
    mean and standard deviation, what a ``Normalize`` transform in front of a model does). The line is given only on
    strong evidence: the standardized images are classified correctly much more often — a paired count (McNemar) of
    ``b`` samples right only when standardized against ``c`` right only as they are, ``b - c`` at least 3 standard
    deviations of its null distribution (``sqrt(b + c)``) and at least a fifth of the images. A model whose
    normalization is inside it (every model of advbridge's zoo) classifies both alike and gets no line; a model that
    did not learn gets none either (it fails on both). Costs two forward passes of the images, outside every row.
    """
    if len(x) < 10:
        return None
    dims = [d for d in range(x.dim()) if d != 1]
    try:
        with torch.no_grad():
            raw = model(x).argmax(1) == y
            standardized = model((x - x.mean(dims, keepdim=True)) / x.std(dims, keepdim=True).clamp_min(1e-6))
            standardized = standardized.argmax(1) == y
    except Exception:  # a model that refuses inputs outside [0, 1]: no evidence either way
        return None
    only_standardized, only_raw = int((standardized & ~raw).sum()), int((raw & ~standardized).sum())
    gain = only_standardized - only_raw
    if gain < max(3 * math.sqrt(only_standardized + only_raw), 0.2 * len(x)):
        return None
    acc_raw, acc_std = float(raw.double().mean()), float(standardized.double().mean())
    return (
        f"the model seems to expect normalized inputs: clean accuracy {acc_raw:.2f} on the images in [0, 1] "
        f"(chance {1 / num_classes:.2f}) but {acc_std:.2f} on the same images standardized per channel; put its "
        "normalization inside the model (--mean/--std, advbridge.zoo.models.NormalizedClassifier)"
    )

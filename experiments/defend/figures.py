"""Figures of a ``defend`` run: the images (clean, adversarial, squeezed) and the detector's ROC curves and scores."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from advbridge.bridge.adapters import get_adapter
from advbridge.bridge.io import atomic_write
from advbridge.bridge.runner import predict

if TYPE_CHECKING:
    from advbridge.experiments.defend.generative import GenerativeEvaluation
    from advbridge.experiments.defend.squeezers import Evaluation
    from advbridge.experiments.engine import Cell


def save_images(evaluation: Evaluation, path: Path, n_images: int = 4) -> Path:
    """Clean, squeezed clean, and for the own transfer and adaptive examples the adversarial image and
    its squeezed version: under each image the true class and the undefended classifier's, under each
    squeezed one the defended system's (purifier) or the classifier's (detector, whose score and
    verdict are under the unsqueezed image)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = evaluation.spec
    squeeze = get_adapter("own").build_defense(spec.squeezer_specs()[0], "exact")
    name = spec.squeezer_specs()[0].describe()
    x = evaluation.x.cpu()
    k = min(n_images, len(x))
    shown: list[tuple[str, Tensor, Cell | None]] = [("clean", x, None)]
    for mode in ("transfer", "adaptive"):
        cell = next(
            (c for c in evaluation.cells if c.mode == mode and c.attack_library == "own" and c.x_adv is not None), None
        )
        if cell is not None and cell.defense_library == "own" and cell.x_adv is not None:
            shown.append((f"{mode} adv", cell.x_adv, cell))
    detector = evaluation.detector("exact") if spec.detector else None
    classifier = evaluation.classifier
    fig, axes = plt.subplots(2 * len(shown), k, figsize=(1.9 * k, 2.0 * 2 * len(shown)), squeeze=False)

    def show(ax, img: Tensor, title: str, label: str) -> None:
        ax.imshow(img[0] if img.shape[0] == 1 else img.permute(1, 2, 0), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=7)
        ax.set_xlabel(label, fontsize=7)

    device = evaluation.x.device
    for i, (title, images, _cell) in enumerate(shown):
        with torch.no_grad():
            squeezed = squeeze(images[:k].to(device)).cpu()
            pred = predict(classifier, images[:k].to(device)).cpu()
            pred_squeezed = predict(classifier, squeezed.to(device)).cpu()
            scores = detector.scores(images[:k].to(device)).cpu() if detector is not None else None
        for j in range(k):
            truth = int(evaluation.y[j])
            label = f"true {truth}, classifier {int(pred[j])}"
            if scores is not None:
                # the scores are the detector's, its threshold set by evaluation.detector
                assert detector is not None and detector.threshold is not None
                flag = "flagged" if float(scores[j]) > detector.threshold else "passes"
                label += f"\nscore {float(scores[j]):.2f} ({flag})"
            elif title != "clean":
                label += f"\nL∞ {float((images[j] - x[j]).abs().max()):.3g}"
            show(axes[2 * i, j], images[j], title, label)
            squeezed_label = (
                f"classifier on it {int(pred_squeezed[j])}"
                if scores is not None
                else f"defended {int(pred_squeezed[j])}"
            )
            show(axes[2 * i + 1, j], squeezed[j], f"{name} of {title}", squeezed_label)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path


def save_detector_figures(
    evaluation: Evaluation | GenerativeEvaluation, roc_path: Path, scores_path: Path
) -> list[Path]:
    """ROC curves (scikit-learn) of clean vs successful adversarial scores per mode, and score histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    assert evaluation.clean_scores is not None  # a detector's evaluation, run: its subject's clean scores
    clean = evaluation.clean_scores.numpy()
    tau = evaluation.threshold()
    cells = [c for c in evaluation.cells if c.adv_scores is not None]
    # the squeeze detector's score is an L1 distance of two softmax outputs, in [0, 2]; others scale with the data
    score_label = getattr(evaluation, "score_label", None)
    top = (
        2.0
        if score_label is None
        else max([float(clean.max()), tau, *(float(c.adv_scores.max()) for c in cells if c.adv_scores is not None)])
        * 1.05
    )
    fig, ax = plt.subplots(figsize=(4.5, 4))
    fig2, ax2 = plt.subplots(figsize=(5.5, 3.5))
    ax2.hist(clean, bins=30, range=(0, top), alpha=0.6, label=f"clean (n={len(clean)})")
    for cell in cells:
        # judge set them together, for every cell with detector scores
        assert cell.adv_scores is not None and cell.fooled_classifier is not None and cell.detection is not None
        positives = cell.adv_scores[cell.fooled_classifier].numpy()  # the successful examples, as in the AUC
        label = f"{cell.mode} {cell.attack_library}"
        if len(positives) and len(clean):
            fpr, tpr, _ = roc_curve([0] * len(clean) + [1] * len(positives), list(clean) + list(positives))
            auc = cell.detection.get("roc_auc", math.nan)
            ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
        ax2.hist(cell.adv_scores.numpy(), bins=30, range=(0, top), histtype="step", lw=1.2, label=label)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false-positive rate (clean)")
    ax.set_ylabel("detection rate (successful adversarial)")
    ax.set_title(evaluation.spec.describe(), fontsize=8)
    ax.legend(fontsize=6)
    ax2.axvline(tau, color="k", ls="--", lw=0.8, label=f"threshold {tau:.3g}")
    ax2.set_xlabel(f"detection score: {score_label or 'max L1 change of the softmax'}")
    ax2.set_ylabel("images")
    ax2.legend(fontsize=6)
    paths = []
    for figure, path in ((fig, roc_path), (fig2, scores_path)):
        figure.tight_layout()
        atomic_write(path, partial(figure.savefig, format="png", dpi=110))
        plt.close(figure)
        paths.append(path)
    return paths

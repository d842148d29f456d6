"""``defend`` for the generative defenses: train (or take from the cache) the generator, evaluate the
defended system next to the undefended classifier (:mod:`experiments.defend.generative`), and write
the tables, the JSON and the figures: accuracy bars, and the images (clean, adversarial, reconstructed; for
labelling, the K class-conditional reconstructions of a few inputs).
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from advbridge.bridge import distributed
from advbridge.bridge.defense_spec import GenerativeDefenseSpec
from advbridge.bridge.io import OutputPrefix, atomic_write
from advbridge.bridge.runner import predict
from advbridge.bridge.spec import AttackSpec
from advbridge.defenses.generative import (
    GeneratorConfig,
    ReconstructionLabeller,
    check_generator_for,
    get_or_train_generator,
)
from advbridge.experiments.defend.figures import save_detector_figures
from advbridge.experiments.defend.generative import GenerativeEvaluation
from advbridge.experiments.defend.report import results_table, write_defend
from advbridge.experiments.defend.run_trained import save_accuracy_figure
from advbridge.experiments.engine import EvaluationOptions
from advbridge.experiments.flags import training_checks

log = logging.getLogger(__name__)


def run_defend_generative(
    spec: GenerativeDefenseSpec,
    attack: AttackSpec,
    workload,
    generator_config: GeneratorConfig,
    options: EvaluationOptions,
    *,
    out: str | Path | OutputPrefix | None = None,
) -> tuple[pd.DataFrame, dict, list[Path]]:
    """Evaluate a resolved generative ``spec`` with the generator of ``generator_config`` (trained or from
    the cache) on a workload; returns (results, checks, paths written)."""
    prefix = OutputPrefix.writable(out)
    info = workload.info
    generator, card = get_or_train_generator(generator_config, progress=options.show_progress, device=workload.x.device)
    check_generator_for(card, info.name, info.in_chans, info.image_size)
    evaluation = GenerativeEvaluation(
        spec, attack, workload.model, generator, workload.x, workload.y, num_classes=info.num_classes,
        options=options,
    )  # fmt: skip
    cells = evaluation.run()
    training = training_checks(workload.card, card)
    table = results_table(cells, spec, attack, workload.context, training)
    paths: list[Path] = []
    if prefix is not None and distributed.world().main:  # under torchrun rank 0 writes
        subtitle = "the undefended classifier and the defense"
        figures: dict = {
            "figure": lambda path: save_accuracy_figure(table, spec, path, subtitle),
            "images": partial(save_generative_images, evaluation),
        }
        if spec.detector:
            figures["roc"] = partial(save_detector_figures, evaluation)
        generator_text = (
            f"Generator: {card['generator']}, latent {card['latent_dim']}, test reconstruction error "
            f"{card['test_reconstruction']:.3f} (squared L2 per image), {card['train_samples']} training images, "
            f"{card['epochs_run']} epochs"
        )
        paths = write_defend(
            prefix, spec, attack, workload, cells, table, training,
            sections=[generator_text],
            figures=figures,
            **options.metadata("restarts", "n_calibration"),
            generator_card={k: v for k, v in card.items() if k != "history"},
            checks=evaluation.checks,
        )  # fmt: skip
    return table, evaluation.checks, paths


def _examples(evaluation: GenerativeEvaluation) -> list[tuple[str, Tensor]]:
    shown: list[tuple[str, Tensor]] = [("clean", evaluation.x.cpu())]
    for mode in ("transfer", "adaptive"):
        cell = next(
            (c for c in evaluation.cells if c.mode == mode and c.defense_library == "own" and c.x_adv is not None), None
        )
        if cell is not None and cell.x_adv is not None:
            shown.append((f"{mode} adv", cell.x_adv))
    return shown


def save_generative_images(evaluation: GenerativeEvaluation, path: Path, n_images: int = 4) -> Path:
    """Clean and adversarial inputs (own transfer and adaptive examples) with what the defense makes of
    them: the reconstruction and the system's label (purifier, detector: with its score), or for labelling
    the input and its K class-conditional reconstructions, the chosen one marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec, device = evaluation.spec, evaluation.x.device
    shown = _examples(evaluation)
    k = min(n_images, len(evaluation.x))
    labelling = spec.defense == "cvae-label"
    columns = 1 + evaluation.num_classes if labelling else k
    rows = len(shown) * (k if labelling else 2)
    fig, axes = plt.subplots(rows, columns, figsize=(1.5 * columns, 1.7 * rows), squeeze=False)

    def show(ax, img: Tensor, title: str, label: str = "", color: str = "black") -> None:
        ax.imshow(img[0] if img.shape[0] == 1 else img.permute(1, 2, 0), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=7, color=color)
        ax.set_xlabel(label, fontsize=7)

    # the defended system (labeller, classifier ∘ purifier; the classifier next to a detector), built once
    system = evaluation.classifier if spec.detector else evaluation.defended()
    detector = evaluation.detector() if spec.detector else None
    for i, (title, images) in enumerate(shown):
        batch = images[:k].to(device)
        with torch.no_grad():
            pred = predict(evaluation.classifier, batch).cpu()
            if labelling:
                assert isinstance(system, ReconstructionLabeller)  # cvae-label's defended(): not a detector
                recon = system.reconstructions(batch).cpu()
                errors = (recon - batch.cpu()[:, None]).pow(2).flatten(2).mean(2)
            else:
                recon = evaluation.generator(batch).cpu()
                pred_system = predict(system, batch).cpu()
                scores = detector.scores(batch).cpu() if detector is not None else None
        for j in range(k):
            truth = int(evaluation.y[j])
            if labelling:
                row = i * k + j
                show(axes[row, 0], images[j], title, f"true {truth}, classifier {int(pred[j])}")
                chosen = int(errors[j].argmin())
                for c in range(evaluation.num_classes):
                    color = "red" if c == chosen else "black"
                    show(axes[row, 1 + c], recon[j, c], f"given {c}", f"MSE {float(errors[j, c]):.4f}", color)
                continue
            show(axes[2 * i, j], images[j], title, f"true {truth}, classifier {int(pred[j])}")
            label = f"defended {int(pred_system[j])}"
            if scores is not None:
                flag = "flagged" if float(scores[j]) > evaluation.threshold() else "passes"
                label = f"score {float(scores[j]):.4f} ({flag})"
            show(axes[2 * i + 1, j], recon[j], f"reconstruction of {title}", label)
    fig.suptitle(spec.describe(), fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return path

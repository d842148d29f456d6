"""Did a model learn? A model that did not is never evaluated as a defense.

A classifier failed to learn when its clean accuracy (on the validation split where training had one, else
on the test split) is within :data:`CHANCE_MARGIN` of chance, 1/K for K classes, or when its training loss
from scratch never fell below its starting value (the first batch's loss; a loss that became nan or inf
never fell, from scratch or not):
adversarial training at a budget too large for its start sits at the constant output, loss ln K, accuracy
1/K (Madry et al. 2018 note the capacity and schedule it needs; Gowal et al. 2018 ramp eps for this reason).
Such a model has "robust accuracy" near 1/K under every attack, which is no robustness: a defense
evaluation must say so instead of reporting it.

A generator failed when its reconstructions are no better than the mean training image: the share of the
mean image's squared error that its test reconstructions remove, 1 − MSE(G) / MSE(mean), is below
:data:`RECONSTRUCTION_MARGIN`.

The check reads only a model's card (:func:`zoo.cards.trained_card`, the generators' card), so a cached
model is checked as a freshly trained one is.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

#: A classifier whose clean accuracy is less than this above chance (1/K) did not learn.
CHANCE_MARGIN = 0.05
#: A generator that removes less than this share of the mean image's reconstruction error did not learn.
RECONSTRUCTION_MARGIN = 0.05


@dataclass(frozen=True)
class TrainingCheck:
    """The verdict on one trained model.

    Attributes:
        value: classifiers: clean accuracy − 1/K; generators: 1 − MSE(G) / MSE(mean image).
        failed: whether the model did not learn.
        reasons: why, one phrase each (empty when it learned).
        kind: ``"classifier"`` or ``"generator"``.
    """

    value: float
    failed: bool
    reasons: tuple[str, ...] = ()
    kind: str = "classifier"  # or "generator"

    def warning(self, what: str) -> str:
        """One line naming the model and the numbers."""
        return (
            f"{what} did not learn ({'; '.join(self.reasons)}): no robustness number of it means anything; "
            "rows using it are flagged failed_training"
        )


def _loss_never_fell(card: dict[str, Any]) -> str | None:
    """Why the loss of a training from scratch never fell, or ``None`` (a warm start, from trained weights,
    may rightly keep its loss: only a loss that became nan or inf counts there)."""
    initial = card.get("initial_loss")
    losses = [h["loss"] for h in card.get("history") or [] if "loss" in h]
    if initial is None or not losses:
        return None
    config = card.get("config") or {}
    warm = config.get("weights") is not None or bool(config.get("pretrained"))
    if not all(math.isfinite(v) for v in [initial, *losses]):
        return f"training loss became {[v for v in [initial, *losses] if not math.isfinite(v)][0]}"
    if not warm and min(losses) >= initial:
        return f"training loss never fell below its start {initial:.4f} (lowest epoch mean {min(losses):.4f})"
    return None


def classifier_check(card: dict[str, Any]) -> TrainingCheck:
    """The check of a classifier's card (``num_classes``, ``accuracy``; ``val_clean_accuracy``,
    ``initial_loss`` and ``history`` where training recorded them); a card without the first two (a model
    given as it is) gets no verdict (value nan, not failed)."""
    if not card.get("num_classes") or card.get("accuracy") is None:  # not a trained model's card: no verdict
        return TrainingCheck(math.nan, False)
    chance = 1.0 / card["num_classes"]
    accuracy = card.get("val_clean_accuracy")
    where = "validation"
    if accuracy is None:
        accuracy, where = card["accuracy"], "test"
    value = accuracy - chance
    reasons = []
    if not value >= CHANCE_MARGIN:
        reasons.append(f"clean {where} accuracy {accuracy:.4f}, chance {chance:.4f}")
    loss = _loss_never_fell(card)
    if loss is not None:
        reasons.append(loss)
    return TrainingCheck(value, bool(reasons), tuple(reasons))


def generator_check(card: dict[str, Any]) -> TrainingCheck:
    """The check of a generator's card (``test_reconstruction`` and ``mean_image_reconstruction``, squared
    errors per image; a card without the latter, written before it existed, passes)."""
    mse, baseline = card.get("test_reconstruction"), card.get("mean_image_reconstruction")
    if mse is None or not baseline:
        return TrainingCheck(math.nan, False, kind="generator")
    value = 1.0 - mse / baseline
    if value >= RECONSTRUCTION_MARGIN:
        return TrainingCheck(value, False, kind="generator")
    reason = f"test reconstruction error {mse:.3f} vs the mean image's {baseline:.3f} (removes {value:.1%})"
    return TrainingCheck(value, True, (reason,), kind="generator")


def check_card(card: dict[str, Any]) -> TrainingCheck:
    """The check of any card: a generator's or a classifier's."""
    return generator_check(card) if card.get("kind") == "generator" else classifier_check(card)


def warn_if_failed(card: dict[str, Any], what: str) -> TrainingCheck:
    """The check of ``card``; a one-line warning naming ``what`` when the model did not learn."""
    check = check_card(card)
    if check.failed:
        logger.warning(check.warning(what))
    return check

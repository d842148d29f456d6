"""The subjects of a squeezer or squeezing-detector evaluation, run by :func:`experiments.engine.evaluate`.

For each implementation of a squeezer (``defense_library``) the defended system is the squeezer in front of
the classifier, with ``transfer`` / ``white-box`` (the exact backward pass) / ``adaptive`` (BPDA where the
squeezer has no useful gradient) rows for every attack library; the detector has one subject, the classifier
with Xu et al.'s detector beside it, attacked by the detector-aware PGD (see :mod:`experiments.defend.report` for
what each mode means).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import cast

import pandas as pd
import torch
from torch import Tensor, nn

from advbridge.bridge import distributed
from advbridge.bridge.adapters import LIBRARIES, get_adapter
from advbridge.bridge.defense_spec import DefenseSpec
from advbridge.bridge.errors import UnsupportedDefenseError, check_names
from advbridge.bridge.io import OutputPrefix
from advbridge.bridge.spec import AttackSpec
from advbridge.defenses.detector import SqueezeDetector, calibrate_threshold
from advbridge.defenses.preprocessor import PreprocessedClassifier, Squeezer
from advbridge.experiments import flags
from advbridge.experiments.core.losses import cross_entropy_objective
from advbridge.experiments.defend.adaptive import detector_aware_pgd
from advbridge.experiments.defend.figures import save_detector_figures, save_images
from advbridge.experiments.defend.report import format_table, results_table, write_defend
from advbridge.experiments.engine import (
    TRANSFER_REASON,
    Detector,
    EvaluationOptions,
    FamilyEvaluation,
    Row,
    Subject,
)
from advbridge.experiments.flags import training_checks

AGREEMENT_COLUMNS = [
    "squeezer",
    "library",
    "version",
    "status",
    "max_abs_diff_vs_own",
    "seconds",
    "images_per_s",
    "reason",
]


def adaptive_backward(spec: DefenseSpec) -> str:
    """The backward pass an adaptive attacker uses: BPDA for squeezers without a useful gradient (rounding,
    median, nearest-neighbour resampling), the exact gradient where interpolation gives one."""
    if spec.defense == "resample" and spec.mode not in ("nearest", "nearest-exact"):
        return "exact"
    return "bpda"


def own_squeezers(spec: DefenseSpec, backward: str) -> list[Squeezer]:
    """own's squeezers of a detector ``spec`` with ``backward``."""
    # build_defense is typed nn.Module; for a detector it is the nn.ModuleList of its squeezers
    return list(cast("Iterable[Squeezer]", get_adapter("own").build_defense(spec, backward)))


def score_objective(detector: SqueezeDetector) -> Callable[[Tensor, Tensor], Tensor]:
    """The detector's score as an objective ``(x, labels) -> (N,)`` (the labels unused)."""
    return lambda x, labels: detector.score(x)


def agreement_table(spec: DefenseSpec, x: Tensor) -> pd.DataFrame:
    """Every library's implementation of each squeezer of ``spec`` on ``x``, against own (forward only)."""
    rows: list[dict[str, object]] = []
    for squeezer in spec.squeezer_specs():
        reference = None
        for name in LIBRARIES:
            adapter = get_adapter(name)
            row: dict[str, object] = dict.fromkeys(AGREEMENT_COLUMNS, math.nan)
            row.update(squeezer=squeezer.describe(), library=name, version=adapter.version(), reason="")
            backward = next(
                (b for b in ("exact", "bpda") if adapter.defense_unsupported_reason(squeezer, b) is None), None
            )
            if backward is None:
                row.update(status="unsupported", reason=adapter.defense_unsupported_reason(squeezer, "exact"))
                rows.append(row)
                continue
            module = adapter.build_defense(squeezer, backward)
            with torch.no_grad():
                module(x[:2])  # one-time set-up out of the timing
                start = time.perf_counter()
                out = module(x)
                seconds = time.perf_counter() - start
            reference = out if name == "own" else reference
            row.update(status="ok", seconds=seconds, images_per_s=len(x) / seconds if seconds > 0 else math.nan)
            row["max_abs_diff_vs_own"] = float((out - reference).abs().max())
            rows.append(row)
    if spec.detector:
        for name in LIBRARIES:
            adapter = get_adapter(name)
            reason = adapter.defense_unsupported_reason(spec, "bpda")
            rows.append(
                {
                    **dict.fromkeys(AGREEMENT_COLUMNS, math.nan),
                    "squeezer": spec.describe(),
                    "library": name,
                    "version": adapter.version(),
                    "status": "ok" if reason is None else "unsupported",
                    "reason": reason or "the detector itself: no other library has one to compare with",
                }
            )
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)


def check_defense_libraries(spec: DefenseSpec, names: Sequence[str] | str | None = None) -> list[str]:
    """Validated names of the libraries whose implementation of ``spec`` is evaluated (``own`` first);
    ``None`` = every library that has it. A library named that has no implementation at all raises
    :class:`UnsupportedDefenseError`."""

    def has(name: str) -> bool:
        return any(get_adapter(name).defense_unsupported_reason(spec, b) is None for b in ("exact", "bpda"))

    if names is None:
        return [n for n in LIBRARIES if has(n)]
    names = check_names("library", names, LIBRARIES)
    names = ["own"] + [n for n in names if n != "own"]

    for name in names:
        if not has(name):
            reason = get_adapter(name).defense_unsupported_reason(spec, "exact")
            having = ", ".join(n for n in LIBRARIES if has(n))
            raise UnsupportedDefenseError(
                f"{name} has no {spec.describe()}: {reason}; libraries that have it: {having}"
            )
    return names


class Evaluation(FamilyEvaluation):
    """The cells of one ``defend`` run: a defense, its implementations, one attack, several attack libraries.
    ``source``: the transfer attacks' model, the undefended twin when the classifier behind the squeezer was
    itself trained for it (the CIFAR-10 study trains one on median-filtered images; default: ``classifier``)."""

    def __init__(
        self,
        spec: DefenseSpec,
        attack: AttackSpec,
        classifier: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        num_classes: int,
        options: EvaluationOptions,
        defense_libraries: Sequence[str],
        source: nn.Module | None = None,
    ) -> None:
        super().__init__(spec, attack, classifier, x, y, num_classes, options, source)
        self.defense_libraries = list(defense_libraries)
        self._threshold: float | None = None

    # ------------------------------------------------------------------ purifiers
    def purifier(self, library: str, backward: str) -> nn.Module | str:
        """The defended model of ``library`` with ``backward``, or the reason it cannot be built."""
        try:
            return PreprocessedClassifier(get_adapter(library).build_defense(self.spec, backward), self.classifier)
        except UnsupportedDefenseError as exc:
            return str(exc)

    def purifier_subject(self, library: str) -> Subject:
        """``library``'s squeezer in front of the classifier: transfer rows, white-box rows through the exact
        backward pass, adaptive rows through :func:`adaptive_backward`."""
        forward_only = self.purifier(library, "exact")
        if isinstance(forward_only, str):
            forward_only = self.purifier(library, "bpda")

        def rows(clean_ok: Tensor) -> Iterator[Row]:
            for mode in ("transfer", "white-box", "adaptive"):
                backward = {"white-box": "exact", "adaptive": adaptive_backward(self.spec)}.get(mode)
                defended = forward_only if backward is None else self.purifier(library, backward)  # None: transfer
                attacked = self.source if mode == "transfer" else defended
                zero = (
                    math.nan
                    if isinstance(attacked, str)
                    else flags.objective_zero_gradient_share(cross_entropy_objective(attacked), self.x, self.y)
                )
                for attack_library in self.attack_libraries:
                    if isinstance(attacked, str):
                        yield Row(mode, attack_library, zero, unsupported=attacked)
                    elif mode == "transfer":
                        yield Row(mode, attack_library, zero, reason=TRANSFER_REASON, transfer=True)
                    else:
                        yield Row(mode, attack_library, zero, target=attacked)

        return Subject(library, forward_only, rows, n_rows=3 * len(self.attack_libraries))

    # ------------------------------------------------------------------ the detector
    def detector(self, backward: str) -> SqueezeDetector:
        detector = SqueezeDetector(self.classifier, own_squeezers(self.spec, backward))
        detector.threshold = self.threshold()
        return detector

    def threshold(self) -> float:
        """The spec's fixed threshold, or the one calibrated (once) on the held-out clean images."""
        if self._threshold is None:
            if self.spec.threshold is not None:
                self._threshold = self.spec.threshold
            else:
                assert self.calibration is not None  # run_defend requires it for a detector without a threshold
                scores = SqueezeDetector(self.classifier, own_squeezers(self.spec, "exact"))
                self._threshold = calibrate_threshold(scores.scores(self.calibration), self.spec.fpr)
        return self._threshold

    def detector_subject(self) -> Subject:
        """The classifier with the squeezing detector beside it: transfer rows unaware of the detector, and the
        detector-aware PGD with the squeezers' exact gradients (white-box) and with BPDA (adaptive)."""
        detector = self.detector("exact")

        def rows(clean_ok: Tensor) -> Iterator[Row]:
            for mode in ("transfer", "white-box", "adaptive"):
                if mode == "transfer":
                    source = cross_entropy_objective(self.source)
                    attacked, zero = None, flags.objective_zero_gradient_share(source, self.x, self.y)
                else:
                    attacked = self.detector("exact" if mode == "white-box" else "bpda")
                    zero = flags.objective_zero_gradient_share(score_objective(attacked), self.x, self.y)
                gradients = "exact gradients of" if mode == "white-box" else "BPDA through"
                for attack_library in self.attack_libraries:
                    if mode == "transfer":
                        reason = "attack on the classifier alone, unaware of the detector"
                        yield Row(mode, attack_library, zero, reason=reason, transfer=True)
                        continue
                    assert attacked is not None  # the detector of this (not transfer) mode
                    unsupported = self.detector_aware_reason(attack_library)
                    reason = f"detector-aware PGD, {gradients} the squeezers"
                    run = partial(self.detector_aware, attacked)
                    yield Row(mode, attack_library, zero, reason=reason, run=run, unsupported=unsupported)

        assert detector.threshold is not None  # set by self.detector
        subject = Subject("own", self.classifier, rows, Detector(detector.scores, detector.threshold))
        subject.n_rows = 3 * len(self.attack_libraries)
        return subject

    def detector_aware_reason(self, attack_library: str) -> str | None:
        if attack_library != "own":
            return (
                f"the detector-aware attack ascends a joint objective (classifier margin and detection score); "
                f"{attack_library}'s attacks take a classifier's loss only"
            )
        if self.attack.minimal or self.attack.targeted:
            return "the detector-aware attack is an untargeted budget attack: run it with --attack pgd or fgsm"
        return None

    def detector_aware(self, detector: SqueezeDetector, x: Tensor, y: Tensor, seed: int) -> Tensor:
        """The detector-aware PGD (:func:`experiments.defend.adaptive.detector_aware_pgd`) on one batch."""
        a = self.attack
        assert a.eps is not None  # a budget attack (detector_aware_reason): AttackSpec requires its eps
        return detector_aware_pgd(
            detector,
            x,
            y,
            eps=a.eps,
            norm=a.norm.value,
            steps=a.steps,
            step_size=a.effective_step_size,
            random_start=a.random_start,
        )

    # ------------------------------------------------------------------ all of it
    def subjects(self) -> list[Subject]:
        if self.spec.detector:
            return [self.detector_subject()]
        return [self.purifier_subject(library) for library in self.defense_libraries]


def run_defend(
    spec: DefenseSpec,
    attack: AttackSpec,
    workload,
    options: EvaluationOptions,
    *,
    defense_libraries: Sequence[str] | None = None,
    out: str | Path | OutputPrefix | None = None,
    source: nn.Module | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[Path]]:
    """Evaluate a resolved ``spec`` on a workload; returns (results, agreement, paths written).

    ``options.calibration``: held-out clean images for the detector's threshold (required when ``spec`` is a
    detector without a fixed threshold). Libraries in ``defense_libraries`` that lack the defense raise
    :class:`UnsupportedDefenseError`; those that lack one backward pass get ``unsupported`` rows. ``source``:
    the undefended model the transfer attacks are computed on, when the workload's model behind the squeezer
    was trained for it (default: the workload's model).
    """
    if spec.detector and spec.threshold is None and options.calibration is None:
        raise UnsupportedDefenseError("the detector needs held-out clean images to calibrate its threshold")
    defense_libraries = check_defense_libraries(spec, defense_libraries)
    prefix = OutputPrefix.writable(out)
    agreement = agreement_table(spec, workload.x)
    evaluation = Evaluation(
        spec, attack, workload.model, workload.x, workload.y, num_classes=workload.info.num_classes,
        options=options, defense_libraries=defense_libraries, source=source,
    )  # fmt: skip
    cells = evaluation.run()
    training = training_checks(workload.card)
    table = results_table(cells, spec, attack, workload.context, training)
    paths: list[Path] = []
    if prefix is not None and distributed.world().main:  # under torchrun rank 0 writes
        figures: dict = {"figure": partial(save_images, evaluation)}
        if spec.detector:
            figures["roc"] = partial(save_detector_figures, evaluation)
        agreement_md = format_table(agreement, AGREEMENT_COLUMNS, markdown=True)
        paths = write_defend(
            prefix, spec, attack, workload, cells, table, training,
            texts={"agreement": agreement.to_csv(index=False)},
            sections=[f"Agreement of the implementations (squeezed images):\n\n{agreement_md}"],
            figures=figures,
            **options.metadata("n_calibration"),
            defense_libraries=list(defense_libraries),
        )  # fmt: skip
    return table, agreement, paths

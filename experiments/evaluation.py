"""The evaluation engine: one defense, its implementations, one attack, several attack libraries, every mode.

For each implementation of the defense (``defense_library``) it builds the defended system, runs the
``transfer`` / ``white-box`` / ``adaptive`` cells (see :mod:`experiments.defend` for what each means) with
every attack library, and keeps per sample whether the system stayed right, so that the ``worst-case``
cell (per sample, over every cell that ran) and any later table or figure come from the same data.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from bridge.adapters import LIBRARIES, get_adapter
from bridge.defense_spec import DefenseSpec
from bridge.errors import UnsupportedDefenseError, check_name
from bridge.runner import predict, warm_up
from bridge.spec import AttackSpec
from defenses.detector import SqueezeDetector, calibrate_threshold, detection_metrics
from defenses.preprocessor import PreprocessedClassifier
from experiments import flags
from experiments.adaptive import detector_aware_pgd
from experiments.sharding import sharded_adversarial, sharded_run_attack

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


@dataclass
class Cell:
    """One row of the results table, with its per-sample data (CPU tensors)."""

    defense_library: str
    mode: str
    attack_library: str
    status: str = "ok"
    attack: str = ""  # the attack's name when it is not the run's (the adaptive attacks of a trained defense)
    reason: str = ""
    clean_ok: Tensor | None = None  # the system classifies the clean image correctly
    robust: Tensor | None = None  # ... and the attacked one (not fooled, or fooled and flagged)
    fooled: Tensor | None = None  # clean_ok and the attack fooled the classifier (and the detector)
    norms: tuple[Tensor, Tensor] | None = None  # L2, L∞ of x_adv − x
    x_adv: Tensor | None = None
    zero_grad_share: float = math.nan
    adv_scores: Tensor | None = None  # the detector's scores of x_adv
    fooled_classifier: Tensor | None = None  # detector: clean_ok and the classifier fooled, flagged or not
    detection: dict | None = None
    model_flags: dict = field(default_factory=dict)  # the system's output flags (experiments.flags.model_flags)


def attach_model_flags(cells: Sequence[Cell], systems: dict[str, nn.Module], x: Tensor) -> None:
    """Each cell gets the output flags (:func:`experiments.flags.model_flags`) of its defense implementation's
    system (``systems[cell.defense_library]``; implementations without one get none)."""
    measured = {name: flags.model_flags(system, x) for name, system in systems.items()}
    for cell in cells:
        cell.model_flags = measured.get(cell.defense_library, {})


def cross_entropy_objective(model: nn.Module):
    """The per-sample cross-entropy of ``model`` as an objective ``(x, y) -> (N,)``."""
    return lambda x, y: torch.nn.functional.cross_entropy(model(x), y, reduction="none")


def perturbation_norms(x_adv: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample L2 and L∞ norms of ``x_adv − x`` (CPU)."""
    delta = (x_adv - x).flatten(1)
    return delta.norm(dim=1).cpu(), delta.abs().amax(1).cpu()


class TransferAttacks:
    """Each attack library's result on the undefended classifier, computed on first use and shared by every
    row that needs it (the ``transfer`` rows of each defense implementation, the undefended rows)."""

    def __init__(
        self,
        classifier: nn.Module,
        x: Tensor,
        y: Tensor,
        attack: AttackSpec,
        num_classes: int,
        batch_size: int | None = None,
    ) -> None:
        self.classifier, self.x, self.y, self.attack, self.num_classes = classifier, x, y, attack, num_classes
        self.batch_size = batch_size
        self.results: dict = {}

    def __call__(self, library: str):
        if library not in self.results:
            self.results[library] = self.on(library, self.classifier)
        return self.results[library]

    def on(self, library: str, model: nn.Module):
        """The same attack, images and batches by ``library`` on another ``model`` (not kept): the white-box
        rows. By attack batch, each on its rank under torchrun."""
        return sharded_run_attack(
            library, model, self.x, self.y, self.attack, num_classes=self.num_classes, batch_size=self.batch_size
        )


def agreement_table(spec: DefenseSpec, x: Tensor) -> pd.DataFrame:
    """Every library's implementation of each squeezer of ``spec`` on ``x``, against own (forward only)."""
    rows = []
    for squeezer in spec.squeezer_specs():
        reference = None
        for name in LIBRARIES:
            adapter = get_adapter(name)
            row = dict.fromkeys(AGREEMENT_COLUMNS, math.nan)
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
    names = [s.strip() for s in names.split(",")] if isinstance(names, str) else list(names)
    names = [check_name("library", n, LIBRARIES) for n in names if n]
    names = ["own"] + [n for n in names if n != "own"]

    for name in names:
        if not has(name):
            reason = get_adapter(name).defense_unsupported_reason(spec, "exact")
            having = ", ".join(n for n in LIBRARIES if has(n))
            raise UnsupportedDefenseError(
                f"{name} has no {spec.describe()}: {reason}; libraries that have it: {having}"
            )
    return names


class Evaluation:
    """The cells of one ``defend`` run: a defense, its implementations, one attack, several attack libraries."""

    def __init__(
        self,
        spec: DefenseSpec,
        attack: AttackSpec,
        classifier: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        num_classes: int,
        attack_libraries: Sequence[str],
        defense_libraries: Sequence[str],
        calibration: Tensor | None = None,
        show_progress: bool = False,
        batch_size: int | None = None,
        source: nn.Module | None = None,
    ) -> None:
        self.spec, self.attack, self.classifier = spec, attack, classifier
        self.x, self.y, self.num_classes = x, y, num_classes
        self.attack_libraries, self.defense_libraries = list(attack_libraries), list(defense_libraries)
        self.calibration, self.show_progress, self.batch_size = calibration, show_progress, batch_size
        self.cells: list[Cell] = []
        # the transfer attacks' model: the undefended twin (``source``) when the classifier behind the squeezer
        # was itself trained for it (the CIFAR-10 study trains one on median-filtered images)
        self.source = classifier if source is None else source
        self.transfer_result = TransferAttacks(self.source, x, y, attack, num_classes, batch_size)
        self.systems: dict[str, nn.Module] = {}  # each implementation's defended system, for its output flags
        self.clean_scores: Tensor | None = None  # the detector's scores of the clean images
        self._threshold: float | None = None

    # ------------------------------------------------------------------ purifiers
    def purifier(self, library: str, backward: str) -> nn.Module | str:
        """The defended model of ``library`` with ``backward``, or the reason it cannot be built."""
        try:
            return PreprocessedClassifier(get_adapter(library).build_defense(self.spec, backward), self.classifier)
        except UnsupportedDefenseError as exc:
            return str(exc)

    def run_purifier(self, library: str, bar) -> None:
        y = self.y.cpu()
        forward_only = self.purifier(library, "exact")
        if isinstance(forward_only, str):
            forward_only = self.purifier(library, "bpda")
        clean_ok = predict(forward_only, self.x).cpu() == y
        self.systems[library] = forward_only
        self.cells.append(Cell(library, "none", "", clean_ok=clean_ok, robust=clean_ok))
        for mode in ("transfer", "white-box", "adaptive"):
            backward = {"white-box": "exact", "adaptive": adaptive_backward(self.spec)}.get(mode)
            defended = forward_only if mode == "transfer" else self.purifier(library, backward)
            attacked = self.source if mode == "transfer" else defended
            zero = (
                math.nan
                if isinstance(attacked, str)
                else flags.objective_zero_gradient_share(cross_entropy_objective(attacked), self.x, self.y)
            )
            for attack_library in self.attack_libraries:
                bar.update()
                cell = Cell(library, mode, attack_library, zero_grad_share=zero)
                self.cells.append(cell)
                if isinstance(attacked, str):
                    cell.status, cell.reason = "unsupported", attacked
                    continue
                if mode == "transfer":
                    result = self.transfer_result(attack_library)
                else:
                    result = self.transfer_result.on(attack_library, attacked)
                if result.status != "ok":
                    cell.status, cell.reason = result.status, result.reason
                    continue
                adv_ok = predict(forward_only, result.x_adv.to(self.x.device)).cpu() == y
                cell.clean_ok, cell.robust = clean_ok, clean_ok & adv_ok
                cell.fooled = clean_ok & ~adv_ok
                cell.x_adv, cell.norms = result.x_adv, (result.l2, result.linf)  # measured by the runner
                if mode == "transfer":
                    success = float(result.success[result.clean_correct].float().mean())
                    cell.reason = f"attack on the undefended model ({success:.3f} success there)"

    # ------------------------------------------------------------------ the detector
    def detector(self, backward: str) -> SqueezeDetector:
        squeezers = get_adapter("own").build_defense(self.spec, backward)
        detector = SqueezeDetector(self.classifier, list(squeezers))
        detector.threshold = self.threshold()
        return detector

    def threshold(self) -> float:
        """The spec's fixed threshold, or the one calibrated (once) on the held-out clean images."""
        if self._threshold is None:
            if self.spec.threshold is not None:
                self._threshold = self.spec.threshold
            else:
                scores = SqueezeDetector(self.classifier, list(get_adapter("own").build_defense(self.spec, "exact")))
                self._threshold = calibrate_threshold(scores.scores(self.calibration), self.spec.fpr)
        return self._threshold

    def run_detector(self, bar) -> None:
        y = self.y.cpu()
        detector = self.detector("exact")
        tau = detector.threshold
        clean_scores = self.clean_scores = detector.scores(self.x).cpu()
        clean_ok = predict(self.classifier, self.x).cpu() == y
        self.systems["own"] = self.classifier
        none = Cell("own", "none", "", clean_ok=clean_ok, robust=clean_ok)
        none.detection = {"fpr": float((clean_scores > tau).double().mean()), "threshold": tau}
        self.cells.append(none)
        for mode in ("transfer", "white-box", "adaptive"):
            if mode == "transfer":
                source = cross_entropy_objective(self.source)
                attacked, zero = None, flags.objective_zero_gradient_share(source, self.x, self.y)
            else:
                attacked = self.detector("exact" if mode == "white-box" else "bpda")
                zero = flags.objective_zero_gradient_share(lambda x, t, d=attacked: d.score(x), self.x, self.y)
            for attack_library in self.attack_libraries:
                bar.update()
                cell = Cell("own", mode, attack_library, zero_grad_share=zero)
                self.cells.append(cell)
                if mode == "transfer":
                    result = self.transfer_result(attack_library)
                    if result.status != "ok":
                        cell.status, cell.reason = result.status, result.reason
                        continue
                    x_adv, cell.norms = result.x_adv, (result.l2, result.linf)
                    cell.reason = "attack on the classifier alone, unaware of the detector"
                else:
                    reason = self.detector_aware_reason(attack_library)
                    if reason is not None:
                        cell.status, cell.reason = "unsupported", reason
                        continue
                    x_adv = self.detector_aware(attacked).cpu()
                    cell.norms = perturbation_norms(x_adv, self.x.cpu())
                    gradients = "exact gradients of" if mode == "white-box" else "BPDA through"
                    cell.reason = f"detector-aware PGD, {gradients} the squeezers"
                fill_detector_cell(cell, detector, self.classifier, x_adv, self.x.device, y, clean_ok, clean_scores)

    def detector_aware_reason(self, attack_library: str) -> str | None:
        if attack_library != "own":
            return (
                f"the detector-aware attack ascends a joint objective (classifier margin and detection score); "
                f"{attack_library}'s attacks take a classifier's loss only"
            )
        if self.attack.minimal or self.attack.targeted:
            return "the detector-aware attack is an untargeted budget attack: run it with --attack pgd or fgsm"
        return None

    def detector_aware(self, detector: SqueezeDetector) -> Tensor:
        a = self.attack

        def attack(x: Tensor, y: Tensor, seed: int) -> Tensor:
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

        return sharded_adversarial(attack, self.x, self.y, seed=a.seed, batch_size=self.batch_size)

    # ------------------------------------------------------------------ all of it
    def run(self) -> list[Cell]:
        warm_up(self.classifier, self.x, self.y)
        per_library = 3 * len(self.attack_libraries)
        total = per_library * (1 if self.spec.detector else len(self.defense_libraries))
        with tqdm(total=total, disable=not self.show_progress, desc=f"defend {self.spec.defense}", unit="cell") as bar:
            if self.spec.detector:
                self.run_detector(bar)
            else:
                for library in self.defense_libraries:
                    self.run_purifier(library, bar)
        for library in dict.fromkeys(c.defense_library for c in self.cells):
            self.cells.append(worst_case(self.cells, library))
        attach_model_flags(self.cells, self.systems, self.x)
        return self.cells


def fill_detector_cell(
    cell: Cell,
    detector: nn.Module,
    classifier: nn.Module,
    x_adv: Tensor,
    device: torch.device,
    y: Tensor,
    clean_ok: Tensor,
    clean_scores: Tensor,
) -> None:
    """The outcome of ``x_adv`` against classifier + ``detector`` (its ``scores`` and ``threshold``): an example
    fools the system only if it fools the classifier and is not flagged; the detection metrics."""
    tau = detector.threshold
    adv_scores = detector.scores(x_adv.to(device)).cpu()
    fooled_classifier = clean_ok & (predict(classifier, x_adv.to(device)).cpu() != y)
    cell.clean_ok, cell.fooled = clean_ok, fooled_classifier & ~(adv_scores > tau)
    cell.robust = clean_ok & ~cell.fooled
    cell.x_adv, cell.adv_scores, cell.fooled_classifier = x_adv, adv_scores, fooled_classifier
    cell.detection = detection_metrics(clean_scores, adv_scores, fooled_classifier, tau)


def worst_case(cells: Sequence[Cell], library: str) -> Cell:
    """Per sample, over every attacked cell of one defense implementation: robust only if robust in all;
    the norm is the smallest successful one."""
    ran = [c for c in cells if c.defense_library == library and c.mode != "none" and c.robust is not None]
    clean = next(c for c in cells if c.defense_library == library and c.mode == "none")
    cell = Cell(library, "worst-case", "all", clean_ok=clean.clean_ok)
    if not ran:
        cell.status, cell.reason = "unsupported", "no attack ran"
        return cell
    cell.robust = torch.stack([c.robust for c in ran]).all(0)
    cell.fooled = cell.clean_ok & ~cell.robust
    inf = torch.tensor(math.inf)
    cell.norms = tuple(torch.stack([torch.where(c.fooled, c.norms[i], inf) for c in ran]).amin(0) for i in range(2))
    cell.reason = f"per sample, the worst over {len(ran)} attacked rows"
    if ran[0].detection is not None:
        cell.detection = {"threshold": ran[0].detection["threshold"]}
    return cell

"""``defend``: a defense, each library's implementation of it, and attacks that do and do not know it.

Two tables (tidy, one row per cell):

- agreement: one row per (squeezer, library): status, ``max_abs_diff_vs_own`` of the squeezed images
  (for the detector: of each of its squeezers), time;
- results: one row per (``defense``, ``defense_library``, ``mode``, ``attack``, ``attack_library``) with
  ``mode`` one of

  - ``none``: clean images through the defended system;
  - ``transfer``: the attack computed on the undefended classifier, then fed to the defense (what the
    studies did);
  - ``white-box``: the defended system attacked with its exact gradients (for bit depth: zero almost
    everywhere, so a naive attack looks defeated; ``zero_grad_share`` says so);
  - ``adaptive``: the attack that knows the defense (BPDA through non-differentiable squeezers; for the
    detector, :func:`~experiments.adaptive.detector_aware_pgd` with BPDA);
  - ``worst-case``: per sample, robust only if no ran cell of that defense implementation broke it;

  and ``clean_acc``, ``robust_acc`` (the share of samples classified correctly both clean and under attack,
  by the whole system: for a detector, an adversarial example counts only if it fools the classifier and
  is not flagged), ``success_rate`` (over clean-correct samples), median L2/L∞ of the successful
  perturbations, ``zero_grad_share`` (share of samples whose gradient of the attacked objective at the clean
  input is exactly zero: a gradient-masking flag), and for the detector ``detection_rate`` (on successful
  adversarial examples), ``fpr`` (on the clean images), ``roc_auc`` and ``threshold``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from bridge.adapters import LIBRARIES, get_adapter
from bridge.defense_spec import DefenseSpec
from bridge.errors import UnsupportedDefenseError, check_name
from bridge.io import OutputPrefix, atomic_write, atomic_write_text
from bridge.provenance import provenance
from bridge.runner import eval_mode, run_attack, warm_up
from bridge.spec import AttackSpec
from defenses.detector import SqueezeDetector, calibrate_threshold, detection_metrics
from defenses.preprocessor import PreprocessedClassifier
from experiments.adaptive import detector_aware_pgd

log = logging.getLogger(__name__)

MODES = ("none", "transfer", "white-box", "adaptive", "worst-case")
COLUMNS = [
    "defense_library",
    "mode",
    "attack_library",
    "status",
    "n",
    "clean_acc",
    "robust_acc",
    "success_rate",
    "median_l2",
    "median_linf",
    "zero_grad_share",
    "detection_rate",
    "fpr",
    "roc_auc",
    "threshold",
    "reason",
]
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
#: Every file a ``defend`` run writes, as tails of its output prefix.
TAILS = {
    "results": ".csv",
    "agreement": "-agreement.csv",
    "markdown": ".md",
    "metadata": ".json",
    "figure": ".png",
    "roc": "-roc.png",
    "scores": "-scores.png",
}


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


def zero_gradient_share(objective, x: Tensor, y: Tensor) -> float:
    """Share of samples whose gradient of ``objective(x, y)`` (per sample, summed) is exactly zero at x."""
    xg = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(xg, y).sum(), xg)
    return float((grad.flatten(1).abs().amax(1) == 0).double().mean())


def _cross_entropy(model: nn.Module):
    return lambda x, y: torch.nn.functional.cross_entropy(model(x), y, reduction="none")


@torch.no_grad()
def _predict(model: nn.Module, x: Tensor, batch_size: int = 500) -> Tensor:
    with eval_mode(model):
        return torch.cat([model(chunk).argmax(1) for chunk in x.split(batch_size)])


def _norms(x_adv: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    delta = (x_adv - x).flatten(1)
    return delta.norm(dim=1).cpu(), delta.abs().amax(1).cpu()


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
    ) -> None:
        self.spec, self.attack, self.classifier = spec, attack, classifier
        self.x, self.y, self.num_classes = x, y, num_classes
        self.attack_libraries, self.defense_libraries = list(attack_libraries), list(defense_libraries)
        self.calibration, self.show_progress = calibration, show_progress
        self.cells: list[Cell] = []
        self.transfer: dict = {}  # attack library -> its result on the undefended classifier
        self.clean_scores: dict[str, Tensor] = {}
        self.thresholds: dict[str, float] = {}

    # ------------------------------------------------------------------ transfer examples (computed once)
    def transfer_result(self, library: str):
        if library not in self.transfer:
            self.transfer[library] = run_attack(
                library, self.classifier, self.x, self.y, self.attack, num_classes=self.num_classes
            )
        return self.transfer[library]

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
        clean_ok = _predict(forward_only, self.x).cpu() == y
        self.cells.append(Cell(library, "none", "", clean_ok=clean_ok, robust=clean_ok))
        for mode in ("transfer", "white-box", "adaptive"):
            backward = {"white-box": "exact", "adaptive": adaptive_backward(self.spec)}.get(mode)
            defended = forward_only if mode == "transfer" else self.purifier(library, backward)
            attacked = self.classifier if mode == "transfer" else defended
            zero = (
                math.nan if isinstance(attacked, str) else zero_gradient_share(_cross_entropy(attacked), self.x, self.y)
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
                    result = run_attack(
                        attack_library, attacked, self.x, self.y, self.attack, num_classes=self.num_classes
                    )
                if result.status != "ok":
                    cell.status, cell.reason = result.status, result.reason
                    continue
                adv_ok = _predict(forward_only, result.x_adv.to(self.x.device)).cpu() == y
                cell.clean_ok, cell.robust = clean_ok, clean_ok & adv_ok
                cell.fooled = clean_ok & ~adv_ok
                cell.x_adv, cell.norms = result.x_adv, _norms(result.x_adv, self.x.cpu())
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
        if "own" not in self.thresholds:
            if self.spec.threshold is not None:
                self.thresholds["own"] = self.spec.threshold
            else:
                scores = SqueezeDetector(self.classifier, list(get_adapter("own").build_defense(self.spec, "exact")))
                self.thresholds["own"] = calibrate_threshold(scores.scores(self.calibration), self.spec.fpr)
        return self.thresholds["own"]

    def run_detector(self, bar) -> None:
        y = self.y.cpu()
        detector = self.detector("exact")
        tau = detector.threshold
        clean_scores = detector.scores(self.x).cpu()
        self.clean_scores["own"] = clean_scores
        clean_ok = _predict(self.classifier, self.x).cpu() == y
        none = Cell("own", "none", "", clean_ok=clean_ok, robust=clean_ok)
        none.detection = {"fpr": float((clean_scores > tau).double().mean()), "threshold": tau}
        self.cells.append(none)
        for mode in ("transfer", "white-box", "adaptive"):
            if mode == "transfer":
                attacked, zero = None, zero_gradient_share(_cross_entropy(self.classifier), self.x, self.y)
            else:
                attacked = self.detector("exact" if mode == "white-box" else "bpda")
                zero = zero_gradient_share(lambda x, t, d=attacked: d.score(x), self.x, self.y)
            for attack_library in self.attack_libraries:
                bar.update()
                cell = Cell("own", mode, attack_library, zero_grad_share=zero)
                self.cells.append(cell)
                if mode == "transfer":
                    result = self.transfer_result(attack_library)
                    if result.status != "ok":
                        cell.status, cell.reason = result.status, result.reason
                        continue
                    x_adv = result.x_adv
                    cell.reason = "attack on the classifier alone, unaware of the detector"
                else:
                    reason = self.detector_aware_reason(attack_library)
                    if reason is not None:
                        cell.status, cell.reason = "unsupported", reason
                        continue
                    x_adv = self.detector_aware(attacked).cpu()
                    gradients = "exact gradients of" if mode == "white-box" else "BPDA through"
                    cell.reason = f"detector-aware PGD, {gradients} the squeezers"
                adv_scores = detector.scores(x_adv.to(self.x.device)).cpu()
                fooled_classifier = clean_ok & (_predict(self.classifier, x_adv.to(self.x.device)).cpu() != y)
                detected = adv_scores > tau
                cell.clean_ok, cell.fooled = clean_ok, fooled_classifier & ~detected
                cell.robust = clean_ok & ~cell.fooled
                cell.x_adv, cell.norms, cell.adv_scores = x_adv, _norms(x_adv, self.x.cpu()), adv_scores
                cell.fooled_classifier = fooled_classifier
                cell.detection = detection_metrics(clean_scores, adv_scores, fooled_classifier, tau)

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
        return detector_aware_pgd(
            detector,
            self.x,
            self.y,
            eps=a.eps,
            norm=a.norm.value,
            steps=a.steps,
            step_size=a.effective_step_size,
            random_start=a.random_start,
        )

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
        return self.cells


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


def _median(values: Tensor) -> float:
    values = values[torch.isfinite(values)]
    return float(values.median()) if len(values) else math.nan


def cell_row(cell: Cell) -> dict:
    row = dict.fromkeys(COLUMNS, math.nan)
    row.update(
        defense_library=cell.defense_library,
        mode=cell.mode,
        attack_library=cell.attack_library,
        status=cell.status,
        reason=cell.reason,
        zero_grad_share=cell.zero_grad_share if cell.status == "ok" else math.nan,
    )
    if cell.robust is None:
        return row
    n = len(cell.robust)
    row.update(n=n, clean_acc=float(cell.clean_ok.double().mean()), robust_acc=float(cell.robust.double().mean()))
    if cell.fooled is not None and cell.clean_ok.any():
        row["success_rate"] = float(cell.fooled.sum() / cell.clean_ok.sum())
    if cell.norms is not None and cell.fooled is not None:
        row["median_l2"] = _median(cell.norms[0][cell.fooled])
        row["median_linf"] = _median(cell.norms[1][cell.fooled])
    if cell.detection:
        row.update({k: v for k, v in cell.detection.items() if k in COLUMNS})
    return row


def results_table(cells: Sequence[Cell], spec: DefenseSpec, attack: AttackSpec, context: dict) -> pd.DataFrame:
    table = pd.DataFrame([cell_row(c) for c in cells], columns=COLUMNS)
    attack_name = [("none" if c.mode == "none" else attack.attack) for c in cells]
    tidy = {
        **context,
        "defense": spec.describe(),
        "attack": attack_name,
        "norm": attack.norm.value,
        "eps": attack.eps,
        "steps": attack.steps,
        "seed": attack.seed,
    }
    for i, (key, value) in enumerate(tidy.items()):
        table.insert(i, key, value)
    return table


# ---------------------------------------------------------------------- files
def format_table(table: pd.DataFrame, columns: Sequence[str], *, markdown: bool = False) -> str:
    shown = table[[c for c in columns if c in table.columns]].copy()
    shown = shown.dropna(axis=1, how="all")
    if "reason" in shown:
        shown["reason"] = shown["reason"].fillna("").astype(str).str.slice(0, 80)
    if markdown:
        return shown.to_markdown(index=False, floatfmt=".4g")
    with pd.option_context("display.max_columns", None, "display.width", 250, "display.max_colwidth", 80):
        return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def save_images(evaluation: Evaluation, path: Path, n_images: int = 4) -> Path:
    """Clean, squeezed clean, and for the own transfer and adaptive examples the adversarial image and
    its squeezed version, with the predicted classes (detector: the score against the threshold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = evaluation.spec
    squeeze = get_adapter("own").build_defense(spec.squeezer_specs()[0], "exact")
    name = spec.squeezer_specs()[0].describe()
    x = evaluation.x.cpu()
    k = min(n_images, len(x))
    shown = [("clean", x, None)]
    for mode in ("transfer", "adaptive"):
        cell = next(
            (c for c in evaluation.cells if c.mode == mode and c.attack_library == "own" and c.x_adv is not None), None
        )
        if cell is not None and cell.defense_library == "own":
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
            pred = _predict(classifier, images[:k].to(device)).cpu()
            pred_squeezed = _predict(classifier, squeezed.to(device)).cpu()
            scores = detector.scores(images[:k].to(device)).cpu() if detector is not None else None
        for j in range(k):
            truth = int(evaluation.y[j])
            label = f"true {truth}, pred {int(pred[j])}"
            if scores is not None:
                flag = "flagged" if float(scores[j]) > detector.threshold else "passes"
                label += f"\nscore {float(scores[j]):.2f} ({flag})"
            elif title != "clean":
                label += f"\nL∞ {float((images[j] - x[j]).abs().max()):.3g}"
            show(axes[2 * i, j], images[j], title, label)
            show(axes[2 * i + 1, j], squeezed[j], f"{name} of {title}", f"pred {int(pred_squeezed[j])}")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path


def save_detector_figures(evaluation: Evaluation, roc_path: Path, scores_path: Path) -> list[Path]:
    """ROC curves (scikit-learn) of clean vs successful adversarial scores per mode, and score histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    clean = evaluation.clean_scores["own"].numpy()
    tau = evaluation.threshold()
    cells = [c for c in evaluation.cells if c.adv_scores is not None]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    fig2, ax2 = plt.subplots(figsize=(5.5, 3.5))
    ax2.hist(clean, bins=30, range=(0, 2), alpha=0.6, label=f"clean (n={len(clean)})")
    for cell in cells:
        positives = cell.adv_scores[cell.fooled_classifier].numpy()  # the successful examples, as in the AUC
        label = f"{cell.mode} {cell.attack_library}"
        if len(positives) and len(clean):
            fpr, tpr, _ = roc_curve([0] * len(clean) + [1] * len(positives), list(clean) + list(positives))
            auc = cell.detection.get("roc_auc", math.nan)
            ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
        ax2.hist(cell.adv_scores.numpy(), bins=30, range=(0, 2), alpha=0.4, label=label)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false-positive rate (clean)")
    ax.set_ylabel("detection rate (successful adversarial)")
    ax.set_title(evaluation.spec.describe(), fontsize=8)
    ax.legend(fontsize=6)
    ax2.axvline(tau, color="k", ls="--", lw=0.8, label=f"threshold {tau:.3g}")
    ax2.set_xlabel("detection score: max L1 change of the softmax")
    ax2.set_ylabel("images")
    ax2.legend(fontsize=6)
    paths = []
    for figure, path in ((fig, roc_path), (fig2, scores_path)):
        figure.tight_layout()
        atomic_write(path, lambda tmp, f=figure: f.savefig(tmp, format="png", dpi=110))
        plt.close(figure)
        paths.append(path)
    return paths


def default_out(dataset: str, spec: DefenseSpec, attack: AttackSpec) -> str:
    """``results/defend-<dataset>-<defense>-<attack>-<norm>``: runs of other defenses and attacks keep their files."""
    import re

    name = f"defend-{dataset}-{spec.defense}-{attack.attack}-{attack.norm.value}"
    return str(Path("results") / re.sub(r"[^A-Za-z0-9._-]+", "_", name))


def run_defend(
    spec: DefenseSpec,
    attack: AttackSpec,
    workload,
    *,
    attack_libraries: Sequence[str],
    defense_libraries: Sequence[str] | None = None,
    calibration: Tensor | None = None,
    out: str | Path | OutputPrefix | None = None,
    show_progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame, list[Path]]:
    """Evaluate a resolved ``spec`` on a workload; returns (results, agreement, paths written).

    ``calibration``: held-out clean images for the detector's threshold (required when ``spec`` is a
    detector without a fixed threshold). Libraries in ``defense_libraries`` that lack the defense raise
    :class:`UnsupportedDefenseError`; those that lack one backward pass get ``unsupported`` rows.
    """
    if spec.detector and spec.threshold is None and calibration is None:
        raise UnsupportedDefenseError("the detector needs held-out clean images to calibrate its threshold")
    defense_libraries = check_defense_libraries(spec, defense_libraries)
    prefix = None if out is None else OutputPrefix.of(out)
    if prefix is not None:
        prefix.check_writable()
    agreement = agreement_table(spec, workload.x)
    evaluation = Evaluation(
        spec,
        attack,
        workload.model,
        workload.x,
        workload.y,
        num_classes=workload.info.num_classes,
        attack_libraries=attack_libraries,
        defense_libraries=defense_libraries,
        calibration=calibration,
        show_progress=show_progress,
    )
    cells = evaluation.run()
    table = results_table(cells, spec, attack, workload.context)
    paths: list[Path] = []
    if prefix is not None:
        info = {
            "defense": spec.to_dict(),
            "attack": attack.to_dict(),
            **workload.context,
            "n": len(workload.x),
            "n_calibration": 0 if calibration is None else len(calibration),
            "attack_libraries": list(attack_libraries),
            "defense_libraries": list(defense_libraries),
            **provenance(),
        }
        tails = [t for k, t in TAILS.items() if spec.detector or k not in ("roc", "scores")]
        info["files"] = [p.name for p in prefix.files(tails)]
        header = (
            f"advbridge {info['git_revision']}: {spec.describe()} vs {attack.attack} {attack.norm.value} "
            f"eps={attack.eps} steps={attack.steps}; {workload.context}; n={len(workload.x)}\n\n"
        )
        texts = {
            "results": table.assign(git_revision=info["git_revision"]).to_csv(index=False),
            "agreement": agreement.to_csv(index=False),
            "markdown": header
            + format_table(table, ["defense", "attack", *COLUMNS], markdown=True)
            + "\n\nAgreement of the implementations (squeezed images):\n\n"
            + format_table(agreement, AGREEMENT_COLUMNS, markdown=True)
            + "\n",
            "metadata": json.dumps(info, indent=1, sort_keys=True, default=str) + "\n",
        }
        paths = [atomic_write_text(prefix.file(TAILS[k]), text) for k, text in texts.items()]
        paths.append(save_images(evaluation, prefix.file(TAILS["figure"])))
        if spec.detector:
            paths += save_detector_figures(evaluation, prefix.file(TAILS["roc"]), prefix.file(TAILS["scores"]))
        log.info("wrote %s", ", ".join(str(p) for p in paths))
    return table, agreement, paths

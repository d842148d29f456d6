"""The evaluation engine: one loop that produces every row of every ``defend`` table.

A defense evaluation is a list of :class:`Subject` s — the models whose rows the table has: each library's
implementation of the defense (``defense_library`` ``own``, ``art``...) and, where the defense trains or
wraps a model, the undefended one (``undefended``). A subject knows its deployed system (what images are
judged on) and yields its attacked :class:`Row` s: ``transfer`` (each attack library's attack on the
undefended model, fed to the system), ``white-box`` (each library attacking a module as it is), ``adaptive``
(an attack that knows the defense: BPDA, EOT, margin loss, detector-aware...). :func:`evaluate` runs them
all the same way:

- every attack goes through the executor (:mod:`experiments.core.executor`: :func:`run_library` for the
  libraries, :func:`run_own` for the adaptive attacks), by attack batch, each batch on its rank under
  ``torchrun``, and the runner's one harness (pass counting, range and eps-ball checks, the caller's tensors
  and the model's mode guarded);
- one judge (:func:`judge`): the system's prediction on the adversarial image, an example counting as
  fooling a detector system only when it also passes the detector; perturbation norms from the images;
- one ``none`` row per subject (clean accuracy; a detector's false-positive rate), one ``worst-case`` row
  per subject (per sample, over every attacked row), the systems' output flags.

The table (:func:`experiments.defend.report.results_table`) and the files are written from the cells.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from advbridge.bridge.runner import AttackResult, InvalidOutputError, Ran, eps_ball, predict, warm_up
from advbridge.bridge.spec import AttackSpec, Norm
from advbridge.defenses.detector import detection_metrics
from advbridge.experiments import flags
from advbridge.experiments.core.executor import BatchAttack, run_library, run_own
from advbridge.experiments.core.reductions import smallest_success, worst_case_robust

#: The reason of a transfer row: the attack on the undefended model, and how well it did there.
TRANSFER_REASON = "attack on the undefended model ({success:.3f} success there)"


@dataclass(frozen=True)
class EvaluationOptions:
    """How a defense is evaluated, whatever its family (one object from the CLI or a study to each family).

    Args:
        attack_libraries: the libraries whose attack runs in the transfer and white-box rows.
        restarts: random starts of the adaptive margin PGD (training-time and generative defenses).
        autoattack: run AutoAttack (torchattacks) as an adaptive row of the training-time defenses.
        calibration: held-out clean images for a detector's threshold (detectors without a fixed threshold).
        show_progress: tqdm bars.
        batch_size: images per attack batch (``None``: all at once; under ``torchrun`` each rank its share).
    """

    attack_libraries: Sequence[str]
    restarts: int = 10
    autoattack: bool = True
    calibration: Tensor | None = None
    show_progress: bool = False
    batch_size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "attack_libraries", tuple(self.attack_libraries))

    def metadata(self, *used: str) -> dict:
        """The options for a run's JSON: the attack libraries and batch size, and the fields a family ``used``
        (``"n_calibration"``: how many calibration images)."""
        info = {"attack_batch_size": self.batch_size, "attack_libraries": list(self.attack_libraries)}
        for name in used:
            calibration = self.calibration
            info[name] = (
                (0 if calibration is None else len(calibration)) if name == "n_calibration" else getattr(self, name)
            )
        return info


class FamilyEvaluation:
    """What every family's evaluation holds and how it runs: the spec, the run's attack, the defended family's
    ``classifier``, the images, the options (their fields as attributes), and the attack libraries' results on
    ``source`` (default: ``classifier``), the undefended model the transfer rows come from. A family says
    which :class:`Subject` s its table has (:meth:`subjects`); :meth:`run` evaluates them all with
    :func:`evaluate`."""

    def __init__(
        self, spec, attack: AttackSpec, classifier: nn.Module, x: Tensor, y: Tensor, num_classes: int,
        options: EvaluationOptions, source: nn.Module | None = None,
    ) -> None:  # fmt: skip
        self.spec, self.attack, self.classifier = spec, attack, classifier
        self.source = classifier if source is None else source
        self.x, self.y, self.num_classes = x, y, num_classes
        self.attack_libraries = list(options.attack_libraries)
        self.restarts, self.autoattack, self.calibration = options.restarts, options.autoattack, options.calibration
        self.show_progress, self.batch_size = options.show_progress, options.batch_size
        self.cells: list[Cell] = []
        self.clean_scores: Tensor | None = None  # a detector's scores of the clean images
        self.transfer_result = TransferAttacks(self.source, x, y, attack, num_classes, options.batch_size)

    def subjects(self) -> list[Subject]:
        """The models whose rows the table has, in table order."""
        raise NotImplementedError

    def run(self) -> list[Cell]:
        """Every subject's cells (kept in ``cells``; a detector's clean scores in ``clean_scores``)."""
        warm_up(self.classifier, self.x, self.y)
        evaluated = evaluate(
            self.subjects(),
            self.transfer_result,
            description=f"defend {self.spec.defense}",
            show_progress=self.show_progress,
            batch_size=self.batch_size,
        )
        self.cells = evaluated.cells
        self.clean_scores = evaluated.clean_scores.get("own")
        return self.cells


@dataclass
class Cell:
    """One row of the results table, with its per-sample data (CPU tensors)."""

    defense_library: str
    mode: str
    attack_library: str
    status: str = "ok"
    attack: str = ""  # the attack's name when it is not the run's (the adaptive attacks)
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
    forward_images: int = 0  # passes through the attacked module, counted by the runner
    backward_images: int = 0


def perturbation_norms(x_adv: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample L2 and L∞ norms of ``x_adv − x`` (CPU)."""
    delta = (x_adv - x).flatten(1)
    return delta.norm(dim=1).cpu(), delta.abs().amax(1).cpu()


class TransferAttacks:
    """Each attack library's result on the undefended classifier, computed on first use and shared by every
    row that needs it (the ``transfer`` rows of each subject, the undefended rows)."""

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
        self.results: dict[str, AttackResult] = {}

    def __call__(self, library: str) -> AttackResult:
        if library not in self.results:
            self.results[library] = self.on(library, self.classifier)
        return self.results[library]

    def on(self, library: str, model: nn.Module) -> AttackResult:
        """The same attack, images and batches by ``library`` on another ``model`` (not kept): the white-box
        rows. By attack batch, each on its rank under torchrun."""
        return run_library(
            library, model, self.x, self.y, self.attack, num_classes=self.num_classes, batch_size=self.batch_size
        )


@dataclass
class Detector:
    """A detector beside the classifier: ``scores(x)`` per image, flagged above ``threshold``."""

    scores: Callable[[Tensor], Tensor]
    threshold: float


@dataclass
class Row:
    """One attacked row of a subject: where its adversarial images come from and how they are judged.

    Exactly one of ``transfer`` (the attack library's attack on the undefended model), ``target`` (the
    attack library's attack on this module) or ``run`` (an adaptive batch attack ``run(x, y, seed)`` of ours
    or a library's, on ``target`` when given, for the pass counts) makes the images; ``unsupported`` says why
    none can. ``reason`` may hold ``{success:.3f}``: the library's success rate where it attacked.
    ``within_budget``: a minimal-norm adaptive attack on a budget run counts only perturbations within eps.
    """

    mode: str
    attack_library: str
    zero_grad_share: float = math.nan
    attack: str = ""
    reason: str = ""
    transfer: bool = False
    target: nn.Module | None = None
    run: BatchAttack | None = None
    unsupported: str | None = None
    within_budget: bool = False


@dataclass
class Subject:
    """A model whose rows a table has: ``system`` decides the predictions; ``rows(clean_ok)`` yields its
    attacked rows in order (a generator: what a row needs, such as its zero-gradient share, is computed when
    it comes; ``clean_ok``: which clean images the system gets right).

    ``system`` is a string when the subject cannot be built (the reason: one unsupported ``none`` row).
    ``detector``: flagged adversarial examples do not count as fooling it. ``after(cells)``: a check run on
    the subject's cells once they are in (catastrophic overfitting). ``n_rows``: for the progress bar.
    """

    name: str
    system: nn.Module | str
    rows: Callable[[Tensor], Iterable[Row]] = lambda clean_ok: ()
    detector: Detector | None = None
    n_rows: int = 0
    worst_case_attack: str = ""
    after: Callable[[list[Cell]], None] | None = None
    flags_system: nn.Module | None = None  # whose output flags the rows carry (default: ``system``)


def judge(cell: Cell, system: nn.Module, detector: Detector | None, x: Tensor, y: Tensor, clean_ok: Tensor,
          x_adv: Tensor, clean_scores: Tensor | None, attack: AttackSpec, within_budget: bool = False) -> None:  # fmt: skip
    """Fill ``cell`` with the per-sample outcome of ``x_adv`` against ``system``: robust if the clean image
    was right and the adversarial one is not a success (a wrong prediction, unflagged when a ``detector``
    stands beside the classifier, its ``clean_scores`` given; within eps when ``within_budget``)."""
    x_adv = x_adv.detach().cpu()
    l2, linf = cell.norms = perturbation_norms(x_adv, x.cpu())
    wrong = predict(system, x_adv.to(x.device)).cpu() != y.cpu()
    fooled = clean_ok & wrong
    if detector is not None and clean_scores is not None:
        tau = detector.threshold
        adv_scores = detector.scores(x_adv.to(x.device)).cpu()
        cell.adv_scores, cell.fooled_classifier = adv_scores, fooled
        cell.detection = detection_metrics(clean_scores, adv_scores, fooled, tau)
        fooled = fooled & ~(adv_scores > tau)
    elif within_budget and not attack.minimal and attack.eps is not None:
        size = linf if attack.norm is Norm.LINF else l2
        unbounded = float(fooled.sum() / clean_ok.sum().clamp_min(1))
        fooled = fooled & (size <= attack.eps * (1 + 1e-6))
        note = f"{unbounded:.3f} success unbounded, counted at eps {attack.eps:.4g}"
        cell.reason = "; ".join(part for part in (cell.reason, note) if part)
    cell.clean_ok, cell.fooled, cell.robust, cell.x_adv = clean_ok, fooled, clean_ok & ~fooled, x_adv


def worst_case_cell(cells: Sequence[Cell], library: str, attack: str = "") -> Cell:
    """Per sample, over every attacked cell of one subject: robust only if robust in all; the norm is the
    smallest successful one."""
    clean = next(c for c in cells if c.defense_library == library and c.mode == "none")
    cell = Cell(library, "worst-case", "all", attack=attack, clean_ok=clean.clean_ok)
    judged = [c for c in cells if c.defense_library == library and c.mode != "none"]
    ran = [(c.robust, c.fooled, c.norms) for c in judged if c.robust is not None]  # judge() set all three
    if not ran or clean.clean_ok is None:
        cell.status, cell.reason = "unsupported", "no attack ran"
        return cell
    cell.robust = worst_case_robust(clean.clean_ok, [robust for robust, _, _ in ran])
    cell.fooled = clean.clean_ok & ~cell.robust
    broken = [(fooled, norms) for _, fooled, norms in ran if fooled is not None and norms]
    l2, linf = (smallest_success([norms[i] for _, norms in broken], [f for f, _ in broken]) for i in range(2))
    cell.norms = (l2, linf)
    cell.reason = f"per sample, the worst over {len(ran)} attacked rows"
    first = next(c for c in judged if c.robust is not None)
    if first.detection is not None:
        cell.detection = {"threshold": first.detection["threshold"]}
    return cell


@dataclass
class Evaluated:
    """What :func:`evaluate` leaves: the cells in table order, and the detectors' clean scores by subject."""

    cells: list[Cell]
    clean_scores: dict[str, Tensor] = field(default_factory=dict)


def _forked(x: Tensor):
    return torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else [])


def evaluate(
    subjects: Sequence[Subject],
    transfer: TransferAttacks,
    *,
    description: str = "defend",
    show_progress: bool = False,
    batch_size: int | None = None,
) -> Evaluated:
    """Every row of every subject, then each subject's worst case and output flags.

    The global RNG is seeded with the attack's seed for the rows (a random defense's draws repeat) and
    restored afterwards.
    """
    x, y, attack = transfer.x, transfer.y, transfer.attack
    out = Evaluated([])
    total = sum(s.n_rows for s in subjects)
    with _forked(x), tqdm(total=total, disable=not show_progress, desc=description, unit="cell") as bar:
        torch.manual_seed(attack.seed)
        for subject in subjects:
            _evaluate_subject(subject, transfer, out, bar, batch_size)
    for subject in subjects:
        if not isinstance(subject.system, str):
            out.cells.append(worst_case_cell(out.cells, subject.name, subject.worst_case_attack))
    systems = {s.name: s.flags_system or s.system for s in subjects if not isinstance(s.system, str)}
    with _forked(x):
        torch.manual_seed(attack.seed)
        measured = {name: flags.model_flags(system, x, y) for name, system in systems.items()}
    for cell in out.cells:
        cell.model_flags = measured.get(cell.defense_library, {})
    return out


def _evaluate_subject(subject: Subject, transfer: TransferAttacks, out: Evaluated, bar, batch_size: int | None) -> None:
    x, y, attack = transfer.x, transfer.y, transfer.attack
    system, detector = subject.system, subject.detector
    if isinstance(system, str):
        out.cells.append(Cell(subject.name, "none", "", status="unsupported", reason=system))
        return
    clean_ok = predict(system, x).cpu() == y.cpu()
    none = Cell(subject.name, "none", "", clean_ok=clean_ok, robust=clean_ok)
    clean_scores = None
    if detector is not None:
        clean_scores = out.clean_scores[subject.name] = detector.scores(x).cpu()
        tau = detector.threshold
        none.detection = {"fpr": float((clean_scores > tau).double().mean()), "threshold": tau}
    out.cells.append(none)
    first = len(out.cells)
    for row in subject.rows(clean_ok):
        bar.update()
        cell = Cell(subject.name, row.mode, row.attack_library, attack=row.attack, reason=row.reason,
                    zero_grad_share=row.zero_grad_share)  # fmt: skip
        out.cells.append(cell)
        if row.unsupported is not None:
            cell.status, cell.reason = "unsupported", row.unsupported
            continue
        if row.run is not None:
            try:
                x_adv, passes = _adaptive(row.run, row.target or system, row.within_budget, transfer, batch_size)
            except InvalidOutputError as exc:
                cell.status, cell.reason = "invalid", str(exc)
                continue
            except Exception as exc:  # an attack's failure is a row, as in the runner
                cell.status, cell.reason = "error", f"{type(exc).__name__}: {exc}"
                continue
            cell.forward_images, cell.backward_images = passes
        else:
            if row.transfer:
                result = transfer(row.attack_library)
            elif row.target is not None:
                result = transfer.on(row.attack_library, row.target)
            else:
                raise ValueError(f"row {row.mode} {row.attack_library}: expected transfer, target or run")
            if not isinstance(result, Ran) or result.problems:
                cell.status, cell.reason = result.status, result.reason
                continue
            x_adv = result.x_adv
            cell.forward_images, cell.backward_images = result.forward_images, result.backward_images
            if "{success" in cell.reason:
                cell.reason = cell.reason.format(success=float(result.success[result.clean_correct].float().mean()))
        judge(cell, system, detector, x, y, clean_ok, x_adv, clean_scores, attack, row.within_budget)
    if subject.after is not None:
        subject.after(out.cells[first:])


def _adaptive(
    run: BatchAttack, counted: nn.Module, within_budget: bool, transfer: TransferAttacks, batch_size: int | None
) -> tuple[Tensor, tuple[int, int]]:
    """An adaptive row's images by attack batch, each through the runner's checks (passes counted on
    ``counted``, the module the attack targets); returns the images and the (forward, backward) images."""
    x, y, attack = transfer.x, transfer.y, transfer.attack
    # a minimal-norm attack counted within a budget (DeepFool on a PGD run) is unbounded on its own
    ball = None if within_budget else eps_ball(attack)
    done = run_own(run, counted, x, y, seed=attack.seed, batch_size=batch_size, ball=ball)
    return done.x_adv, (done.forward_images, done.backward_images)

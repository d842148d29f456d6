"""The evaluation of a generative defense: the undefended classifier, the defended system, and attacks that
know the generator.

Rows, with the ``mode`` column of :mod:`experiments.defend`:

- ``undefended``: ``none`` (clean accuracy of the classifier alone) and ``white-box`` (each attack
  library on it: what the defense has to win back);
- the defended system (``defense_library`` ``own``: no reference library has these defenses):

  - ``none``: clean accuracy through the defense (for ``recon-detect``: the classifier's, and the
    false-positive rate at the threshold);
  - ``transfer``: each library's attack computed on the undefended classifier, fed to the defense (what
    the MNIST/CIFAR-10 study did);
  - ``white-box``: each library attacking the defended ``nn.Module`` as it is, end to end through the
    encoder, the decoder and the unrolled latent refinement (purifiers and labeller);
  - ``adaptive`` (own attacks): PGD on the margin loss (Carlini & Wagner 2017, f₆) end to end from
    ``restarts`` random starts, its gradient averaged over ``eot`` draws of a random (sampling) purifier
    (EOT, Athalye et al. 2018, Sec. 4.3), and for a refining labeller also with BPDA over the refinement
    (the refined code's gradient taken as the encoder's: Athalye et al. 2018, Sec. 4.1, as they broke
    Defense-GAN); for the detector, PGD on

        J(x') = min(m(x'), κ) − w · max(0, s(x')/τ − (1 − ρ)),   s = the reconstruction error,

    which fools the classifier and stays under the threshold τ (Carlini & Wagner 2017, "MagNet and
    Efficient Defenses ... are not robust", Sec. 4);

  - ``worst-case``: per sample, over every attacked row of the defended system.

A random defense is evaluated as it is deployed, one draw per prediction, under a seeded torch RNG; the
``checks`` record the share of images whose two predictions differ (``random_outputs``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from bridge.defense_spec import GenerativeDefenseSpec
from bridge.runner import predict, warm_up
from bridge.spec import AttackSpec
from defenses.detector import calibrate_threshold
from defenses.generative import ConvGenerator, Purifier, ReconstructionDetector, ReconstructionLabeller
from defenses.preprocessor import PreprocessedClassifier
from experiments.adaptive import KAPPA, THRESHOLD_MARGIN, margin
from experiments.evaluation import (
    Cell,
    TransferAttacks,
    attach_model_flags,
    cross_entropy_objective,
    fill_detector_cell,
    perturbation_norms,
    worst_case,
)
from experiments.evaluation_trained import ADAPTIVE_STEPS, UNDEFENDED, margin_objective, pgd_restarts
from experiments.flags import objective_zero_gradient_share
from experiments.sharding import BatchAttack, sharded_adversarial
from own_attacks import pgd

#: Weight w of the detection hinge of the detector-aware attack (the hinge is in units of the threshold).
RECON_DETECTION_WEIGHT = 10.0


def eot_objective(objective: Callable[[Tensor, Tensor], Tensor], draws: int) -> Callable[[Tensor, Tensor], Tensor]:
    """E_draws[objective(x, y)] by ``draws`` forward passes of a random model (Athalye et al. 2018, eq. 4)."""
    if draws == 1:
        return objective
    return lambda x, y: torch.stack([objective(x, y) for _ in range(draws)]).mean(0)


class GenerativeEvaluation:
    """The cells of one ``defend`` run of a generative defense."""

    def __init__(
        self,
        spec: GenerativeDefenseSpec,
        attack: AttackSpec,
        classifier: nn.Module,
        generator: ConvGenerator,
        x: Tensor,
        y: Tensor,
        *,
        num_classes: int,
        attack_libraries: Sequence[str],
        restarts: int = 1,
        calibration: Tensor | None = None,
        show_progress: bool = False,
        batch_size: int | None = None,
    ) -> None:
        if spec.detector and spec.threshold is None and calibration is None:
            raise ValueError("the reconstruction detector needs held-out clean images to calibrate its threshold")
        self.spec, self.attack, self.classifier, self.generator = spec, attack, classifier, generator.eval()
        self.x, self.y, self.num_classes = x, y, num_classes
        self.attack_libraries, self.restarts = list(attack_libraries), restarts
        self.calibration, self.show_progress, self.batch_size = calibration, show_progress, batch_size
        self.cells: list[Cell] = []
        self.transfer_result = TransferAttacks(classifier, x, y, attack, num_classes, batch_size)
        self.checks: dict = {}
        self.clean_scores: Tensor | None = None
        self._threshold: float | None = None
        self.score_label = "reconstruction error (mean squared, per pixel)"

    # ------------------------------------------------------------------ the defended system
    def defended(self, *, bpda: bool = False) -> nn.Module:
        """classifier ∘ purifier, or the labeller (``bpda``: its refinement's gradient replaced)."""
        s = self.spec
        if s.defense == "cvae-label":
            return ReconstructionLabeller(
                self.generator, refine_steps=s.refine_steps, refine_lr=s.refine_lr, detach_refinement=bpda
            ).eval()
        return PreprocessedClassifier(Purifier(self.generator, sample=s.sample), self.classifier).eval()

    def detector(self) -> ReconstructionDetector:
        return ReconstructionDetector(self.generator, self.threshold()).eval()

    def threshold(self) -> float:
        if self._threshold is None:
            if self.spec.threshold is not None:
                self._threshold = self.spec.threshold
            else:
                scores = ReconstructionDetector(self.generator).scores(self.calibration)
                self._threshold = calibrate_threshold(scores.cpu(), self.spec.fpr)
        return self._threshold

    @property
    def budget(self) -> bool:
        return not self.attack.minimal

    def _budget(self) -> dict:
        a = self.attack
        steps = a.steps if a.attack == "pgd" else ADAPTIVE_STEPS
        step_size = a.effective_step_size if a.attack == "pgd" else 2.5 * a.eps / steps
        return {"eps": a.eps, "norm": a.norm.value, "steps": steps, "step_size": step_size}

    def _fill(self, cell: Cell, system: nn.Module, clean_ok: Tensor, x_adv: Tensor) -> None:
        x_adv = x_adv.detach().cpu()
        wrong = predict(system, x_adv.to(self.x.device)).cpu() != self.y.cpu()
        cell.clean_ok, cell.fooled = clean_ok, clean_ok & wrong
        cell.robust = clean_ok & ~cell.fooled
        cell.x_adv, cell.norms = x_adv, perturbation_norms(x_adv, self.x.cpu())

    # ------------------------------------------------------------------ rows
    def run_undefended(self, bar) -> None:
        clean_ok = predict(self.classifier, self.x).cpu() == self.y.cpu()
        self.cells.append(Cell(UNDEFENDED, "none", "", clean_ok=clean_ok, robust=clean_ok))
        zero = objective_zero_gradient_share(cross_entropy_objective(self.classifier), self.x, self.y)
        for library in self.attack_libraries:
            bar.update()
            cell = Cell(UNDEFENDED, "white-box", library, zero_grad_share=zero)
            self.cells.append(cell)
            result = self.transfer_result(library)
            if result.status != "ok":
                cell.status, cell.reason = result.status, result.reason
                continue
            self._fill(cell, self.classifier, clean_ok, result.x_adv)

    def adaptive_attacks(self, system: nn.Module):
        """``(name, run, objective)`` of the adaptive end-to-end attacks on the purifier or labeller;
        ``run(x, y, seed)`` attacks one batch."""
        if not self.budget:
            return []
        s, budget = self.spec, self._budget()
        steps = budget["steps"]
        objective = eot_objective(margin_objective(system), s.eot)
        eot = f", EOT {s.eot}" if s.random else ""
        attacks = [
            (
                f"pgd-margin end to end ({self.restarts} restarts × {steps} steps{eot})",
                lambda x, y, seed: pgd_restarts(
                    system, x, y, restarts=self.restarts, objective=objective, seed=seed, **budget
                ),
                objective,
            )
        ]
        if s.defense == "cvae-label" and s.refine_steps:
            bpda = self.defended(bpda=True)
            bpda_objective = margin_objective(bpda)
            attacks.append(
                (
                    f"pgd-margin, BPDA over the refinement ({self.restarts} restarts × {steps} steps)",
                    lambda x, y, seed: pgd_restarts(
                        bpda, x, y, restarts=self.restarts, objective=bpda_objective, seed=seed, **budget
                    ),
                    bpda_objective,
                )
            )
        return attacks

    def run_defended(self, bar) -> None:
        y = self.y.cpu()
        system = self.defended()
        clean_ok = predict(system, self.x).cpu() == y
        self.cells.append(Cell("own", "none", "", clean_ok=clean_ok, robust=clean_ok))
        if self.spec.random:
            again = predict(system, self.x).cpu() == y
            self.checks["random_outputs"] = float((again != clean_ok).double().mean())
        zero = objective_zero_gradient_share(cross_entropy_objective(system), self.x, self.y)
        for mode in ("transfer", "white-box"):
            for library in self.attack_libraries:
                bar.update()
                cell = Cell("own", mode, library, zero_grad_share=zero)
                self.cells.append(cell)
                if mode == "transfer":
                    result = self.transfer_result(library)
                else:
                    result = self.transfer_result.on(library, system)
                if result.status != "ok":
                    cell.status, cell.reason = result.status, result.reason
                    continue
                self._fill(cell, system, clean_ok, result.x_adv)
                if mode == "transfer":
                    success = float(result.success[result.clean_correct].float().mean())
                    cell.reason = f"attack on the undefended classifier ({success:.3f} success there)"
                else:
                    cell.reason = "end to end through the generator" + (
                        ", one draw per gradient" if self.spec.random else ""
                    )
        for name, run, objective in self.adaptive_attacks(system):
            bar.update()
            cell = Cell(
                "own",
                "adaptive",
                "own",
                attack=name,
                zero_grad_share=objective_zero_gradient_share(objective, self.x, self.y),
            )
            self.cells.append(cell)
            self._fill(cell, system, clean_ok, self.sharded(run))

    def run_detector(self, bar) -> None:
        y = self.y.cpu()
        detector = self.detector()
        tau = detector.threshold
        clean_scores = self.clean_scores = detector.scores(self.x).cpu()
        clean_ok = predict(self.classifier, self.x).cpu() == y
        none = Cell("own", "none", "", clean_ok=clean_ok, robust=clean_ok)
        none.detection = {"fpr": float((clean_scores > tau).double().mean()), "threshold": tau}
        self.cells.append(none)
        rows: list[tuple[str, str, BatchAttack | None, str]] = [
            ("transfer", library, None, "attack on the classifier alone, unaware of the detector")
            for library in self.attack_libraries
        ]
        if self.budget:
            rows.append(("adaptive", "own", partial(self.detector_aware, detector), "detector-aware PGD, end to end"))
        for mode, library, run, reason in rows:
            bar.update()
            cell = Cell("own", mode, library, reason=reason)
            self.cells.append(cell)
            if run is None:
                result = self.transfer_result(library)
                if result.status != "ok":
                    cell.status, cell.reason = result.status, result.reason
                    continue
                x_adv = result.x_adv
                cell.zero_grad_share = objective_zero_gradient_share(
                    cross_entropy_objective(self.classifier), self.x, self.y
                )
            else:
                x_adv = self.sharded(run).cpu()
                cell.attack = f"pgd detector-aware ({self._budget()['steps']} steps)"
                cell.zero_grad_share = objective_zero_gradient_share(lambda x, t: detector.score(x), self.x, self.y)
            x_adv = x_adv.detach().cpu()
            cell.norms = perturbation_norms(x_adv, self.x.cpu())
            fill_detector_cell(cell, detector, self.classifier, x_adv, self.x.device, y, clean_ok, clean_scores)

    def sharded(self, attack: BatchAttack) -> Tensor:
        """``attack(x, y, seed)`` by attack batch (each on its rank under torchrun), gathered."""
        return sharded_adversarial(attack, self.x, self.y, seed=self.attack.seed, batch_size=self.batch_size)

    def detector_aware(self, detector: ReconstructionDetector, x: Tensor, y: Tensor, seed: int) -> Tensor:
        """PGD on J (module docstring) on one batch: fool the classifier, keep the reconstruction error under τ."""
        tau, classifier = detector.threshold, self.classifier

        def objective(x: Tensor, y: Tensor) -> Tensor:
            hinge = (detector.score(x) / tau - (1 - THRESHOLD_MARGIN)).clamp_min(0)
            return margin(classifier(x), y).clamp_max(KAPPA) - RECON_DETECTION_WEIGHT * hinge

        def fools_both(x: Tensor, y: Tensor) -> Tensor:
            return (classifier(x).argmax(1) != y) & (detector.score(x) <= tau)

        budget = self._budget()
        return pgd(
            classifier,
            x,
            y,
            **budget,
            random_start=self.attack.random_start,
            loss=objective,
            success=fools_both,
        )

    # ------------------------------------------------------------------ all of it
    def run(self) -> list[Cell]:
        warm_up(self.classifier, self.x, self.y)
        n, adaptive = len(self.attack_libraries), int(self.budget)
        if self.spec.defense == "cvae-label" and self.spec.refine_steps:
            adaptive *= 2
        total = n + (n + int(self.budget) if self.spec.detector else 2 * n + adaptive)
        with torch.random.fork_rng(devices=[self.x.device] if self.x.device.type == "cuda" else []):
            torch.manual_seed(self.attack.seed)  # the draws of a random defense, reproducibly
            with tqdm(
                total=total, disable=not self.show_progress, desc=f"defend {self.spec.defense}", unit="cell"
            ) as bar:
                self.run_undefended(bar)
                if self.spec.detector:
                    self.run_detector(bar)
                else:
                    self.run_defended(bar)
        for library in (UNDEFENDED, "own"):
            self.cells.append(worst_case(self.cells, library))
        system = self.classifier if self.spec.detector else self.defended()
        with torch.random.fork_rng(devices=[self.x.device] if self.x.device.type == "cuda" else []):
            torch.manual_seed(self.attack.seed)
            attach_model_flags(self.cells, {UNDEFENDED: self.classifier, "own": system}, self.x)
        return self.cells

"""The evaluation of a generative defense: the undefended classifier, the defended system, and attacks that
know the generator.

Rows, with the ``mode`` column of :mod:`experiments.defend.report`:

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

from collections.abc import Callable, Iterator
from functools import partial

import torch
from torch import Tensor, nn

from advbridge.bridge.defense_spec import GenerativeDefenseSpec
from advbridge.bridge.runner import predict
from advbridge.bridge.spec import AttackSpec
from advbridge.defenses.detector import calibrate_threshold
from advbridge.defenses.generative import ConvGenerator, Purifier, ReconstructionDetector, ReconstructionLabeller
from advbridge.defenses.preprocessor import PreprocessedClassifier
from advbridge.experiments.core.losses import cross_entropy_objective, margin_loss, margin_objective
from advbridge.experiments.defend.adaptive import KAPPA, THRESHOLD_MARGIN
from advbridge.experiments.defend.trained import adaptive_budget, margin_pgd
from advbridge.experiments.engine import Detector, EvaluationOptions, FamilyEvaluation, Row, Subject
from advbridge.experiments.flags import UNDEFENDED, objective_zero_gradient_share
from advbridge.own_attacks import pgd

#: The reason of a transfer row through the generative defense.
TRANSFER_CLASSIFIER_REASON = "attack on the undefended classifier ({success:.3f} success there)"
#: Weight w of the detection hinge of the detector-aware attack (the hinge is in units of the threshold).
RECON_DETECTION_WEIGHT = 10.0


def eot_objective(objective: Callable[[Tensor, Tensor], Tensor], draws: int) -> Callable[[Tensor, Tensor], Tensor]:
    """E_draws[objective(x, y)] by ``draws`` forward passes of a random model (Athalye et al. 2018, eq. 4)."""
    if draws == 1:
        return objective
    return lambda x, y: torch.stack([objective(x, y) for _ in range(draws)]).mean(0)


class GenerativeEvaluation(FamilyEvaluation):
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
        options: EvaluationOptions,
    ) -> None:
        if spec.detector and spec.threshold is None and options.calibration is None:
            raise ValueError("the reconstruction detector needs held-out clean images to calibrate its threshold")
        super().__init__(spec, attack, classifier, x, y, num_classes, options)
        self.generator = generator.eval()
        self.checks: dict = {}
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
                assert self.calibration is not None  # __init__ requires it for a detector without a threshold
                scores = ReconstructionDetector(self.generator).scores(self.calibration)
                self._threshold = calibrate_threshold(scores.cpu(), self.spec.fpr)
        return self._threshold

    @property
    def budget(self) -> bool:
        return not self.attack.minimal

    # ------------------------------------------------------------------ subjects
    def undefended_subject(self) -> Subject:
        """The classifier alone: each library's attack on it (what the defense has to win back)."""

        def rows(clean_ok: Tensor) -> Iterator[Row]:
            zero = objective_zero_gradient_share(cross_entropy_objective(self.classifier), self.x, self.y)
            for library in self.attack_libraries:
                yield Row("white-box", library, zero, transfer=True)

        return Subject(UNDEFENDED, self.classifier, rows, n_rows=len(self.attack_libraries))

    def adaptive_attacks(self, system: nn.Module):
        """``(name, run, objective)`` of the adaptive end-to-end attacks on the purifier or labeller;
        ``run(x, y, seed)`` attacks one batch."""
        if not self.budget:
            return []
        s, budget = self.spec, adaptive_budget(self.attack)
        objective = eot_objective(margin_objective(system), s.eot)
        eot = f", EOT {s.eot}" if s.random else ""
        attacks = [margin_pgd(system, budget, self.restarts, " end to end", objective, eot)]
        if s.defense == "cvae-label" and s.refine_steps:
            bpda = self.defended(bpda=True)
            attacks.append(margin_pgd(bpda, budget, self.restarts, ", BPDA over the refinement"))
        return attacks

    def defended_subject(self) -> Subject:
        """classifier ∘ purifier, or the labeller: transfer rows, every library end to end, the adaptive attacks."""
        system = self.defended()

        def rows(clean_ok: Tensor) -> Iterator[Row]:
            if self.spec.random:
                again = predict(system, self.x).cpu() == self.y.cpu()
                self.checks["random_outputs"] = float((again != clean_ok).double().mean())
            zero = objective_zero_gradient_share(cross_entropy_objective(system), self.x, self.y)
            draws = ", one draw per gradient" if self.spec.random else ""
            for mode in ("transfer", "white-box"):
                for library in self.attack_libraries:
                    if mode == "transfer":
                        yield Row(mode, library, zero, reason=TRANSFER_CLASSIFIER_REASON, transfer=True)
                    else:
                        yield Row(mode, library, zero, reason=f"end to end through the generator{draws}", target=system)
            for name, run, objective in self.adaptive_attacks(system):
                zero = objective_zero_gradient_share(objective, self.x, self.y)
                yield Row("adaptive", "own", zero, attack=name, run=run)

        adaptive = len(self.adaptive_attacks(system))
        return Subject("own", system, rows, n_rows=2 * len(self.attack_libraries) + adaptive)

    def detector_subject(self) -> Subject:
        """The classifier with the reconstruction-error detector beside it: transfer rows, and the
        detector-aware PGD."""
        detector = self.detector()

        def rows(clean_ok: Tensor) -> Iterator[Row]:
            zero = objective_zero_gradient_share(cross_entropy_objective(self.classifier), self.x, self.y)
            for library in self.attack_libraries:
                reason = "attack on the classifier alone, unaware of the detector"
                yield Row("transfer", library, zero, reason=reason, transfer=True)
            if self.budget:
                zero = objective_zero_gradient_share(lambda x, t: detector.score(x), self.x, self.y)
                attack = f"pgd detector-aware ({adaptive_budget(self.attack)['steps']} steps)"
                run = partial(self.detector_aware, detector)
                yield Row("adaptive", "own", zero, attack=attack, reason="detector-aware PGD, end to end", run=run)

        n_rows = len(self.attack_libraries) + int(self.budget)
        assert detector.threshold is not None  # self.detector() sets it
        return Subject("own", self.classifier, rows, Detector(detector.scores, detector.threshold), n_rows=n_rows)

    def detector_aware(self, detector: ReconstructionDetector, x: Tensor, y: Tensor, seed: int) -> Tensor:
        """PGD on J (module docstring) on one batch: fool the classifier, keep the reconstruction error under τ."""
        tau, classifier = detector.threshold, self.classifier
        assert tau is not None  # the detector of detector_subject, built with its threshold

        def objective(x: Tensor, y: Tensor) -> Tensor:
            hinge = (detector.score(x) / tau - (1 - THRESHOLD_MARGIN)).clamp_min(0)
            return (-margin_loss(classifier(x), y)).clamp_max(KAPPA) - RECON_DETECTION_WEIGHT * hinge

        def fools_both(x: Tensor, y: Tensor) -> Tensor:
            return (classifier(x).argmax(1) != y) & (detector.score(x) <= tau)

        budget = adaptive_budget(self.attack)
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
    def subjects(self) -> list[Subject]:
        """The undefended classifier, then the defended system (or the detector in front of the classifier)."""
        return [self.undefended_subject(), self.detector_subject() if self.spec.detector else self.defended_subject()]

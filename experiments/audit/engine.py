"""The audit: a cascade of attacks on one model, the indicators of their failure, and the remedies they call for.

Given a model (any ``nn.Module`` mapping [0, 1] images to scores: a plain classifier, a registered defense,
a user's defended system) and optionally its undefended twin (the surrogate), :func:`run_audit`

1. measures the model-level indicators (:mod:`~advbridge.experiments.core.indicators`: AutoAttack's checks,
   Pintor et al.'s unavailable gradients and unstable predictions);
2. runs the *naive* cascade, every query through a
   :class:`~advbridge.experiments.audit.tracker.PathTracker`: FGSM and PGD from every library that has them,
   AutoAttack (standard), Square (black-box), transfer from the surrogate, the minimal-norm attacks (DeepFool,
   DDN) from every library, and an eps = ∞ PGD (Pintor et al.'s unconstrained check);
3. measures the attack-level indicators on those rows (silent success, incomplete optimization, transfer
   failure, unconstrained failure, Square beating the white-box attacks, a single step beating PGD);
4. runs the remedy of every raised indicator (:data:`~advbridge.experiments.core.indicators.INDICATORS`; :mod:`~advbridge.experiments.audit.remedies`):
   margin loss, log-probabilities, EOT, BPDA through a declared ``preprocess``, BPDA through the surrogate
   (forward: the model, backward: the twin), more steps and restarts, the best point of the path, an
   unbounded margin run — each a *remedy* row — and measures the indicator again where the remedy allows;
5. reports, per sample, the worst case over the naive rows (before) and over every row (after), and every
   row's optimality against the lower envelope of all rows (AttackBench, Cinà et al. 2025);
6. runs the binarization test (Zimmermann et al. 2022, :mod:`~advbridge.experiments.audit.binarization`) on a
   few clean-correct samples: problems with an adversarial example inside eps by construction, attacked by the
   naive PGD (the indicator's value) and, when it is raised, by the strongest remedy set (after): were the
   attacks strong enough?

With a ``budget``, every row's result is its best point found within ``budget`` propagations per sample
(AttackBench's protocol; the tracker refuses the queries past it).

References:
    Croce & Hein. Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
    attacks. ICML 2020. https://arxiv.org/abs/2003.01690
    Pintor et al. Indicators of Attack Failure. NeurIPS 2022. https://arxiv.org/abs/2106.09947
    Athalye, Carlini, Wagner. Obfuscated Gradients Give a False Sense of Security. ICML 2018.
    Cinà et al. AttackBench. AAAI 2025. https://arxiv.org/abs/2404.19460
    Zimmermann et al. Increasing Confidence in Adversarial Robustness Evaluations. NeurIPS 2022.
    https://arxiv.org/abs/2206.13991
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor, nn

from advbridge.bridge.runner import PassCounter, warm_up
from advbridge.experiments.audit.binarization import BinarizationTest
from advbridge.experiments.audit.cascade import Cascade
from advbridge.experiments.audit.remedies import Evidence, apply_remedies
from advbridge.experiments.audit.results import NAIVE, Audit, AuditConfig, AuditRow, is_white_box
from advbridge.experiments.audit.systems import declared_bpda
from advbridge.experiments.audit.tracker import within
from advbridge.experiments.core import indicators as ind
from advbridge.experiments.core.indicators import IndicatorResult
from advbridge.experiments.core.reductions import worst_case_robust

__all__ = ["NAIVE", "Audit", "AuditConfig", "AuditRow", "run_audit"]

#: The cascade's model-level checks (AutoAttack's, Pintor et al.'s unavailable gradients, saturated softmax) run on
#: this many samples, and Pintor et al.'s unstable predictions (100 noisy queries a sample) on this many of the
#: samples the naive rows left robust.
MODEL_CHECK_SAMPLES = 64
UNSTABLE_SAMPLES = 8


def asked(row: AuditRow, samples: Tensor) -> Tensor:
    """The ``samples`` that ``row`` attacked (the cascade asks each row about what is still robust)."""
    return samples if row.asked is None else samples & row.asked


def run_audit(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    config: AuditConfig,
    *,
    num_classes: int | None = None,
    surrogate: nn.Module | None = None,
    show_progress: bool = False,
) -> Audit:
    """Audit ``model`` on ``(x, y)`` under ``config`` (module docstring): the naive cascade, the indicators,
    the remedies of the raised ones, per-sample results of every row. Every forward and backward pass through
    ``model`` while it runs is counted (``Audit.model_propagations``); with ``config.versus_autoattack``,
    AutoAttack standard alone runs afterwards on the same images (``Audit.autoattack_alone``), uncounted."""
    counter = PassCounter().attach(model)
    try:
        audit = _audit(model, x, y, config, num_classes=num_classes, surrogate=surrogate, show_progress=show_progress)
    finally:
        counter.detach()
    audit.model_propagations = counter.forward_images + counter.backward_images
    if config.versus_autoattack:
        audit.autoattack_alone = Cascade(model, x, y, audit.num_classes, config, surrogate, False).autoattack_alone()
    return audit


def _audit(
    model: nn.Module, x: Tensor, y: Tensor, config: AuditConfig, *, num_classes: int | None,
    surrogate: nn.Module | None, show_progress: bool,
) -> Audit:  # fmt: skip
    """:func:`run_audit` without its pass counter."""
    start = time.perf_counter()
    model.eval()
    if surrogate is not None:
        surrogate.eval()
    if num_classes is None:
        with torch.no_grad():
            num_classes = int(model(x[:1]).shape[1])
    # the model-level checks: on every sample with every_point; in the cascade on the first MODEL_CHECK_SAMPLES (a
    # property of the model, as AutoAttack's checks.py measures it on one batch)
    xs, ys = (x, y) if config.every_point else (x[:MODEL_CHECK_SAMPLES], y[:MODEL_CHECK_SAMPLES])
    try:
        warm_up(model, xs, ys)
    except RuntimeError:  # a model whose graph does not reach the input: the indicators say so
        pass
    cascade = Cascade(model, x, y, num_classes, config, surrogate, show_progress)
    attacked = cascade.clean.clone()
    measured: dict[str, tuple[float, str]] = {}
    on = "" if config.every_point else f" (the first {len(xs)} samples)"

    def measure(name: str, value: float, reason: str = "") -> None:
        measured[name] = (value, reason)

    measure("randomized", ind.randomized(model, xs, ys), "L2 distance of normalized outputs over 5 passes" + on)
    measure(
        "probability_outputs", ind.probability_outputs(model, xs), "share of rows that are probability vectors" + on
    )
    measure("zero_gradients", ind.zero_gradients(model, xs, ys, num_classes),
            "share of samples with zero DLR gradient" + on)  # fmt: skip
    measure("dynamic", ind.dynamic(model, xs), "autograd calls inside one forward pass")
    measure("too_few_classes", float(num_classes), "number of classes (DLR needs >= 3)")
    measure(
        "unavailable_gradients", ind.unavailable_gradients(model, xs, ys), "share of samples with no CE gradient" + on
    )

    def unstable(xu: Tensor, yu: Tensor, where: str) -> None:
        value = ind.unstable_predictions(model, xu, yu, seed=config.seed, reject=cascade.reject) if len(xu) else 0.0
        measure("unstable_predictions", value,
                "mean relative change of the margin loss under U[-4/255, 4/255] noise" + where)  # fmt: skip

    if config.every_point:
        unstable(x, y, "")
    else:
        measure("unstable_predictions", math.nan)  # its place in the table; measured after the naive rows
    measure("saturated_softmax", ind.saturated_softmax(model, xs), "share of samples whose softmax is one-hot" + on)
    declared = declared_bpda(model)
    if declared is not None:
        measure("bpda_disagreement", ind.bpda_disagreement(model, declared, xs, ys, cascade.reject),
                "share of samples whose gradient differs from the declared BPDA variant's (cosine < 0.9)" + on)  # fmt: skip
    clean_accuracy = float(cascade.clean.double().mean())
    measure(
        "failed_training", clean_accuracy - 1 / num_classes, f"clean accuracy {clean_accuracy:.4f} - 1/{num_classes}"
    )

    cascade.naive()
    if not config.every_point:  # where it matters: the samples still robust after the naive rows (100 queries each)
        left = torch.nonzero(cascade.pending()).flatten()[:UNSTABLE_SAMPLES].to(x.device)
        unstable(x[left], y[left], f" (the first {len(left)} samples the naive rows left robust)")
    naive = [r for r in cascade.rows if r.ok]
    budget_rows = [r for r in naive if not r.minimal and r.attack not in ("pgd-transfer",)]
    # silent success: the best point of the path was adversarial, the returned one not
    silent = {
        r.key: ind.silent_success(~r.robust, within(r.tracker.best_distance, config.eps), asked(r, attacked))
        for r in budget_rows
        if r.tracker is not None and r.x_adv is not None and r.robust is not None
    }
    worst_silent = max(silent, key=silent.__getitem__) if silent else ""
    measure("silent_success", silent.get(worst_silent, 0.0), f"worst row: {worst_silent}" if silent else "")
    incomplete = {
        r.key: ind.incomplete_optimization(r.tracker.loss_traces(), r.robust & asked(r, attacked))
        for r in budget_rows
        if r.attack == "pgd" and r.tracker is not None and r.robust is not None
    }
    worst_incomplete = max(incomplete, key=incomplete.__getitem__) if incomplete else ""
    measure("incomplete_optimization", incomplete.get(worst_incomplete, 0.0),
            f"worst row: {worst_incomplete}" if incomplete else "")  # fmt: skip
    transfer = next((r for r in naive if r.attack == "pgd-transfer"), None)
    if transfer is not None:
        assert transfer.robust is not None  # an ok row
        measure("transfer_failure", ind.transfer_failure(cascade.surrogate_success, ~transfer.robust, asked(transfer, attacked)),
                "share fooling the surrogate but not the model")  # fmt: skip
    unbounded = cascade.unbounded
    if unbounded.ok:
        assert unbounded.distance is not None  # an ok row went through Cascade.finish
        measure("unconstrained_failure", ind.unconstrained_failure(unbounded.distance < math.inf, asked(unbounded, attacked)),
                "share an eps = inf PGD (cross-entropy) never fooled")  # fmt: skip
    else:
        measure("unconstrained_failure", 1.0, f"the eps = inf PGD failed: {unbounded.reason}")
    white = [r for r in budget_rows if r.attack not in ("square", "autoattack")]  # AutoAttack runs Square too
    square = next((r for r in naive if r.attack == "square"), None)

    def square_gap(rows: Sequence[AuditRow]) -> float:
        if square is None or not rows:
            return math.nan
        if not config.every_point:  # the cascade: what Square broke that none of the rows did
            assert square.robust is not None  # an ok row
            left = worst_case_robust(cascade.clean, [r.robust for r in rows if r.robust is not None])
            return float(left.double().mean() - (left & square.robust).double().mean())
        best = min(r.robust_accuracy for r in rows)
        return best - square.robust_accuracy

    measure(
        "square_beats_white_box",
        square_gap(white),
        "best white-box robust accuracy minus Square's (the cascade: Square's breaks past them)",
    )
    gaps = {}
    for library in config.libraries:
        one = next((r for r in naive if r.library == library and r.attack == "fgsm"), None)
        many = next((r for r in naive if r.library == library and r.attack == "pgd"), None)
        if one is not None and many is not None:
            assert one.robust is not None and many.robust is not None  # ok rows
            both = asked(one, asked(many, attacked))  # the cascade asks PGD about FGSM's survivors and probes
            gaps[library] = float((both & many.robust & ~one.robust).double().mean()
                                  - (both & one.robust & ~many.robust).double().mean())  # fmt: skip
    measure(
        "single_step_gap", max(gaps.values()) if gaps else math.nan, "PGD robust accuracy minus FGSM's, worst library"
    )
    minimal_rows = [r for r in naive if r.minimal and r.attack in ("deepfool", "ddn")]
    measure("unbounded_incomplete",
            max((ind.unconstrained_failure(r.distance < math.inf, asked(r, attacked)) for r in minimal_rows
                 if r.distance is not None), default=math.nan),
            "1 - success of the minimal-norm attacks, worst row")  # fmt: skip

    results = {name: ind.INDICATORS[name].measure(value, reason) for name, (value, reason) in measured.items()}
    evidence = Evidence(naive, attacked, square_gap)
    apply_remedies(cascade, results, evidence)
    audit = Audit(config, cascade.clean, cascade.rows, results, num_classes)
    # before -> after of each remedy: the naive white-box rows (the gradient attacks on the model itself), then
    # with the remedy's rows: the gap each indicator explains
    before = audit.robust_white_box
    for result in results.values():
        if result.raised:

            def mine(row: AuditRow, name: str = result.name) -> bool:
                return is_white_box(row) or name in row.indicators

            result.robust_before = before
            result.robust_after = float(audit.robust_under(keep=mine).double().mean())
    if config.binarization_samples:
        results["binarization"] = binarization(cascade, evidence)
    audit.seconds = time.perf_counter() - start
    return audit


def binarization(cascade: Cascade, evidence: Evidence) -> IndicatorResult:
    """The binarization test (:mod:`~advbridge.experiments.audit.binarization`) on the first
    ``binarization_samples`` clean-correct samples, for the naive PGD (its value) and for the strongest remedy set
    (its remedy, run when raised, as every indicator's). It adds no row: its problems are not the audited samples; it runs
    after every row, so no row's random draws depend on it."""
    config = cascade.config
    picks = torch.nonzero(cascade.clean).flatten()[: config.binarization_samples].to(cascade.x.device)
    if not len(picks):
        return ind.INDICATORS["binarization"].measure(math.nan, "no clean-correct sample to build a problem on")
    test = BinarizationTest(
        cascade.model, cascade.x[picks], cascade.y[picks], config, cascade.surrogate, inner=config.binarization_inner
    )
    result = ind.INDICATORS["binarization"].measure(test.naive().rate, test.reason())
    apply_remedies(cascade, {"binarization": result}, replace(evidence, binarization=test))
    result.details = test.to_dict()
    return result

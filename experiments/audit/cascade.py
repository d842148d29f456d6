"""The rows of one audit: the naive cascade (every library's FGSM and PGD, AutoAttack, Square, transfer, the
minimal-norm attacks, an eps = ∞ PGD), each run by the executor of ``compare`` and ``defend``
(:func:`~advbridge.experiments.core.executor.run_library` for a library's spec,
:func:`~advbridge.experiments.core.executor.run_own` for our own attacks: the same pass counting, timing and output
checks) on a :class:`~advbridge.experiments.audit.tracker.PathTracker` around the attacked module, unsharded (the
tracker sees every query)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from advbridge.bridge.adapters.torchattacks import TorchattacksAdapter
from advbridge.bridge.runner import Ran, eval_mode, predict, seed_everything
from advbridge.bridge.spec import AttackSpec, Norm
from advbridge.experiments.audit.results import NAIVE, AuditConfig, AuditRow
from advbridge.experiments.audit.systems import unbounded_eps
from advbridge.experiments.audit.tracker import PathTracker, distances, within
from advbridge.experiments.core.executor import run_library, run_own
from advbridge.experiments.core.losses import fooled, margin_objective
from advbridge.experiments.core.restarts import pgd_restarts
from advbridge.own_attacks import pgd

log = logging.getLogger(__name__)


class Cascade:
    """Runs the rows of one audit (module docstring); :func:`run_audit` is the entry point."""

    def __init__(
        self, model: nn.Module, x: Tensor, y: Tensor, num_classes: int, config: AuditConfig,
        surrogate: nn.Module | None, show_progress: bool,
    ) -> None:  # fmt: skip
        self.model, self.x, self.y, self.num_classes, self.config = model, x, y, num_classes, config
        self.surrogate, self.show_progress = surrogate, show_progress
        self.reject: int | None = getattr(model, "reject_class", None)  # a detector's: fooled = wrong and not it
        self.outputs = num_classes + (self.reject is not None)  # the logits the libraries see
        self.clean = (predict(model, x) == y).cpu()
        self.rows: list[AuditRow] = []

    # -- rows -------------------------------------------------------------------------------------------------
    def tracker(self, module: nn.Module, eps: float) -> PathTracker:
        return PathTracker(
            module, self.x, self.y, norm=self.config.norm, eps=eps, budget=self.config.budget, reject=self.reject
        )

    def finish(self, row: AuditRow, tracker: PathTracker, x_adv: Tensor | None, eps: float) -> AuditRow:
        """The row's per-sample results from its returned points and its tracker (module docstring)."""
        row.forward, row.backward = tracker.forwards.clone(), tracker.backwards.clone()
        row.tracker = tracker
        path = tracker.best_distance.clone()
        if x_adv is not None and self.config.budget is None:  # with a budget: its best point within it (AttackBench)
            now = fooled(predict(self.model, x_adv), self.y, self.reject).cpu()
            returned = distances(x_adv - self.x, self.config.norm).double().cpu()
            fooled_within = now & within(returned, eps)
            path = torch.where(fooled_within, torch.minimum(path, returned), path)
            row.x_adv = x_adv.detach().cpu()
        row.distance = torch.where(self.clean, path, torch.zeros_like(path))
        if x_adv is None or self.config.budget is not None or eps > self.config.eps:
            # the best point within the budget, or a larger ball's points judged at eps
            row.robust = self.clean & ~within(row.distance, self.config.eps)
        else:
            row.robust = self.clean & ~fooled_within
        return row

    def library_row(self, library: str, spec: AttackSpec, stage: str = NAIVE) -> AuditRow:
        eps = math.inf if spec.minimal else spec.eps
        assert eps is not None  # AttackSpec requires the eps of a budget attack
        tracker = self.tracker(self.model, eps)
        row = AuditRow(spec.attack, library, stage, minimal=spec.minimal)
        result = run_library(
            library, tracker, self.x, self.y, spec, num_classes=self.outputs, during=tracker.record, shard=False
        )
        row.seconds = result.seconds
        row.hook_forward, row.hook_backward = result.forward_images, result.backward_images
        if not isinstance(result, Ran) or result.problems:
            row.status, row.reason = result.status, result.reason
            return row
        return self.finish(row, tracker, result.x_adv.to(self.x.device), eps)

    def own_row(
        self, attack: str, library: str, stage: str, run: Callable[[nn.Module], Tensor], *,
        module: nn.Module | None = None, eps: float | None = None, indicators: tuple[str, ...] = (),
    ) -> AuditRow:  # fmt: skip
        """A row whose attack is ``run(tracked module) -> x_adv``, on ``module`` (default: the model)."""
        eps = self.config.eps if eps is None else eps
        tracker = self.tracker(self.model if module is None else module, eps)
        row = AuditRow(attack, library, stage, minimal=math.isinf(eps), indicators=indicators)
        seed_everything(self.config.seed)
        try:  # the audit judges the ball itself (finish): no ball for the harness
            with tracker.record():
                done = run_own(
                    lambda x, y, seed: run(tracker), tracker, self.x, self.y, seed=self.config.seed, shard=False
                )
        except Exception as exc:  # an attack that cannot run on this model is a row, not a crash
            log.warning("%s (%s) failed: %s", attack, stage, exc)
            row.status, row.reason = "error", f"{type(exc).__name__}: {exc}"
            return row
        row.seconds, row.hook_forward, row.hook_backward = done.seconds, done.forward_images, done.backward_images
        x_adv = done.x_adv
        return self.finish(row, tracker, x_adv, eps)

    def margin_pgd(
        self, module: nn.Module, *, steps: int | None = None, restarts: int | None = None, eps: float | None = None,
        objective: Callable[[nn.Module], Callable[[Tensor, Tensor], Tensor]] | None = None,
    ) -> Callable[[nn.Module], Tensor]:  # fmt: skip
        """PGD ascending the margin loss of the tracked ``module`` (or ``objective(tracked)``), from random
        restarts; each sample keeps its first successful restart (its best point is in the tracker anyway)."""
        config = self.config
        eps = config.eps if eps is None else eps
        restarts = config.restarts if restarts is None else restarts
        steps = steps or config.fitted_steps(restarts=restarts)
        step_size = 2.5 * eps / steps

        def run(tracked: nn.Module) -> Tensor:
            loss = objective(tracked) if objective else margin_objective(tracked, self.reject)
            return pgd_restarts(
                tracked, self.x, self.y, eps=eps, norm=config.norm, steps=steps, step_size=step_size,
                restarts=restarts, loss=loss, seed=config.seed, reject=self.reject, clean_first=True,
            )  # fmt: skip

        return run

    # -- the naive cascade ------------------------------------------------------------------------------------
    def naive(self) -> None:
        config, progress = self.config, []
        for library in config.libraries:
            progress += [(library, "fgsm"), (library, "pgd")]
        rows = tqdm(progress, desc="audit: budget attacks", disable=not self.show_progress, leave=False)
        for library, attack in rows:
            steps = 1 if attack == "fgsm" else config.fitted_steps()
            budget_norm = Norm.parse(config.norm)
            if attack == "fgsm" and config.norm != "Linf":  # FGSM is L∞ only: one PGD step of size eps instead
                spec = AttackSpec(attack="pgd", norm=budget_norm, eps=config.eps, steps=1, step_size=config.eps)
            else:
                spec = AttackSpec(attack=attack, norm=budget_norm, eps=config.eps, steps=steps, seed=config.seed)
            row = self.library_row(library, spec)
            row.attack = "fgsm" if attack == "fgsm" else "pgd"
            self.rows.append(row)
        if config.autoattack and self.num_classes >= 4:
            self.rows.append(self.own_row("autoattack", "torchattacks", NAIVE, self.autoattack))
        elif config.autoattack:  # AutoAttack's check_n_classes: its APGD-T needs >= 4 classes, DLR >= 3
            from advbridge.experiments.audit.systems import few_classes_rows

            self.rows += few_classes_rows(self)
        queries = config.square_queries if config.budget is None else min(config.square_queries, config.budget)
        self.rows.append(self.own_row("square", "torchattacks", NAIVE, self.square(queries)))
        if self.surrogate is not None:
            self.rows.append(self.transfer_row())
        if config.minimal:
            minimal = [("deepfool", config.norm)] + ([("ddn", "L2")] if config.norm == "L2" else [])
            for library in config.libraries:
                for attack, norm in minimal:
                    spec = AttackSpec(attack=attack, norm=Norm.parse(norm), seed=config.seed)
                    row = self.library_row(library, spec)
                    if row.status != "unsupported":
                        self.rows.append(row)
        unbounded = unbounded_eps(config.norm, self.x)
        self.unbounded = self.own_row(
            "pgd-unbounded", "own", NAIVE, lambda m: pgd(
                m, self.x, self.y, eps=unbounded, norm=config.norm, steps=config.fitted_steps(),
            ), eps=unbounded,
        )  # fmt: skip

    def autoattack(self, tracked: nn.Module) -> Tensor:
        adapter = TorchattacksAdapter()
        return adapter.autoattack(
            tracked, self.x, self.y, norm=self.config.norm, eps=self.config.eps, num_classes=self.outputs,
            seed=self.config.seed,
        )  # fmt: skip

    def square(self, queries: int) -> Callable[[nn.Module], Tensor]:
        def run(tracked: nn.Module) -> Tensor:
            adapter = TorchattacksAdapter()
            return adapter.square(
                tracked, self.x, self.y, norm=self.config.norm, eps=self.config.eps, queries=queries,
                seed=self.config.seed,
            )  # fmt: skip

        return run

    def transfer_row(self) -> AuditRow:
        """PGD (cross-entropy, the cascade's steps) on the surrogate, the points fed to the model."""
        config = self.config
        row = AuditRow("pgd-transfer", "own", NAIVE)
        surrogate = self.surrogate
        assert surrogate is not None  # naive() runs this row only with a surrogate
        start = time.perf_counter()
        seed_everything(config.seed)
        with eval_mode(surrogate):
            x_adv = pgd(surrogate, self.x, self.y, eps=config.eps, norm=config.norm, steps=config.steps)
        row.seconds = time.perf_counter() - start
        self.surrogate_success = (predict(surrogate, x_adv) != self.y).cpu()
        tracker = self.tracker(self.model, config.eps)  # no query reaches the model during the attack
        return self.finish(row, tracker, x_adv, config.eps)

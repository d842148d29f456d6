"""The rows of one audit: the naive cascade (every library's FGSM and PGD, AutoAttack, Square, transfer, the
minimal-norm attacks, an eps = ∞ PGD), each run by the executor of ``compare`` and ``defend``
(:func:`~advbridge.experiments.core.executor.run_library` for a library's spec,
:func:`~advbridge.experiments.core.executor.run_own` for our own attacks: the same pass counting, timing and output
checks) on a :class:`~advbridge.experiments.audit.tracker.PathTracker` around the attacked module, unsharded (the
tracker sees every query).

**The cascade** (default; Croce & Hein 2020's practice, each attack of AutoAttack's ensemble run on the points the
earlier ones left robust): each row attacks only the samples that are still robust (:meth:`Cascade.pending`:
clean-correct and broken by no earlier row), cheap rows first — every library's FGSM, then its PGD, Square, the
minimal-norm attacks, AutoAttack, transfer — so each sample's worst case is exact (a broken sample stays
broken) and a sample costs only the rows it survives. Own PGD is also asked about :data:`PROBES` samples its FGSM
broke, so that a single step beating PGD (``single_step_gap``) is still seen. A row's per-sample tensors cover every
sample: ``asked`` marks the ones it attacked; one it did not attack is not broken by it (``robust`` true, ``distance``
nan). With ``AuditConfig.every_point`` every row attacks every sample, in the order before the cascade (agreement
studies: every library on the same points)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from advbridge.bridge.adapters import get_adapter
from advbridge.bridge.adapters.torchattacks import TorchattacksAdapter
from advbridge.bridge.runner import Ran, eval_mode, predict, seed_everything
from advbridge.bridge.spec import AttackSpec, Norm
from advbridge.experiments.audit.results import NAIVE, AuditConfig, AuditRow
from advbridge.experiments.audit.systems import unbounded_eps
from advbridge.experiments.audit.tracker import PathTracker, distances, within
from advbridge.experiments.core.executor import run_library, run_own
from advbridge.experiments.core.losses import fooled, margin_objective
from advbridge.experiments.core.reductions import worst_case_robust
from advbridge.experiments.core.restarts import pgd_restarts
from advbridge.own_attacks import pgd

log = logging.getLogger(__name__)

#: Samples own FGSM broke that own PGD is asked about too (the cascade's single-step-gap probe).
PROBES = 4


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
        self.all_x, self.all_y = x, y  # ``x``, ``y``: the attacked samples' inside :meth:`attacking`

    # -- the samples a row attacks ----------------------------------------------------------------------------
    def pending(self) -> Tensor:
        """The samples the next row attacks: in the cascade the clean-correct ones no ok row broke so far; with
        ``every_point`` every sample (misclassified ones too, as before the cascade)."""
        if self.config.every_point:
            return torch.ones_like(self.clean)
        return worst_case_robust(self.clean, [r.robust for r in self.rows if r.ok and r.robust is not None])

    @contextmanager
    def attacking(self, asked: Tensor) -> Iterator[Tensor]:
        """Inside the block ``x`` and ``y`` are the ``asked`` samples' (the attacks read them there); yields their
        indices. The trackers keep every sample (a query is matched to its original among all of them)."""
        index = torch.nonzero(asked.cpu()).flatten()
        on = index.to(self.all_x.device)
        self.x, self.y = self.all_x[on], self.all_y[on]
        try:
            yield index
        finally:
            self.x, self.y = self.all_x, self.all_y

    # -- rows -------------------------------------------------------------------------------------------------
    def tracker(self, module: nn.Module, eps: float) -> PathTracker:
        return PathTracker(
            module, self.all_x, self.all_y, norm=self.config.norm, eps=eps, budget=self.config.budget,
            reject=self.reject,
        )  # fmt: skip

    def finish(
        self, row: AuditRow, tracker: PathTracker, x_adv: Tensor | None, eps: float, index: Tensor | None = None
    ) -> AuditRow:
        """The row's per-sample results from its returned points (of the samples ``index``, default: all) and its
        tracker (module docstring)."""
        n = len(self.clean)
        index = torch.arange(n) if index is None else index
        asked = torch.zeros(n, dtype=torch.bool)
        asked[index] = True
        row.asked = asked
        row.forward, row.backward = tracker.forwards.clone(), tracker.backwards.clone()
        row.tracker = tracker
        path = tracker.best_distance.clone()
        fooled_within = torch.zeros(n, dtype=torch.bool)
        if x_adv is not None and self.config.budget is None:  # with a budget: its best point within it (AttackBench)
            on = index.to(self.all_x.device)
            x, y = self.all_x[on], self.all_y[on]
            now = fooled(predict(self.model, x_adv), y, self.reject).cpu()
            returned = distances(x_adv - x, self.config.norm).double().cpu()
            fooled_within[index] = now & within(returned, eps)
            path[index] = torch.where(fooled_within[index], torch.minimum(path[index], returned), path[index])
            points = self.all_x.detach().cpu().clone()
            points[index] = x_adv.detach().cpu()
            row.x_adv = points
        row.distance = torch.where(self.clean, path, torch.zeros_like(path))
        row.distance[self.clean & ~asked] = math.nan  # not attacked by this row
        if x_adv is None or self.config.budget is not None or eps > self.config.eps:
            # the best point within the budget, or a larger ball's points judged at eps
            row.robust = self.clean & ~within(row.distance, self.config.eps)
        else:
            row.robust = self.clean & ~fooled_within
        return row

    def library_row(self, library: str, spec: AttackSpec, stage: str = NAIVE, asked: Tensor | None = None) -> AuditRow:
        """``spec`` by ``library`` on the ``asked`` samples (default: :meth:`pending`)."""
        eps = math.inf if spec.minimal else spec.eps
        assert eps is not None  # AttackSpec requires the eps of a budget attack
        tracker = self.tracker(self.model, eps)
        row = AuditRow(spec.attack, library, stage, minimal=spec.minimal)
        asked = self.pending() if asked is None else asked
        if not bool(asked.any()):
            reason = get_adapter(library).unsupported_reason(spec)
            if reason is not None:
                row.status, row.reason = "unsupported", reason
                return row
            return self.finish(row, tracker, None, eps, torch.zeros(0, dtype=torch.long))
        with self.attacking(asked) as index:
            result = run_library(
                library, tracker, self.x, self.y, spec, num_classes=self.outputs, during=tracker.record, shard=False
            )
        row.seconds = result.seconds
        row.hook_forward, row.hook_backward = result.forward_images, result.backward_images
        if not isinstance(result, Ran) or result.problems:
            row.status, row.reason = result.status, result.reason
            return row
        return self.finish(row, tracker, result.x_adv.to(self.all_x.device), eps, index)

    def own_row(
        self, attack: str, library: str, stage: str, run: Callable[[nn.Module], Tensor], *,
        module: nn.Module | None = None, eps: float | None = None, indicators: tuple[str, ...] = (),
    ) -> AuditRow:  # fmt: skip
        """A row whose attack is ``run(tracked module) -> x_adv`` (of the samples ``x``, ``y`` it finds on the
        cascade: :meth:`pending`), on ``module`` (default: the model)."""
        eps = self.config.eps if eps is None else eps
        tracker = self.tracker(self.model if module is None else module, eps)
        row = AuditRow(attack, library, stage, minimal=math.isinf(eps), indicators=indicators)
        asked = self.pending()
        if not bool(asked.any()):
            return self.finish(row, tracker, None, eps, torch.zeros(0, dtype=torch.long))
        seed_everything(self.config.seed)
        with self.attacking(asked) as index:
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
        return self.finish(row, tracker, done.x_adv, eps, index)

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
        """The naive rows. In the cascade: every library's FGSM, then its PGD (own PGD also on :data:`PROBES` samples
        own FGSM broke), Square, the minimal-norm attacks, AutoAttack, transfer, each on what is still robust; with
        ``every_point``, the order before the cascade (FGSM and PGD, AutoAttack, Square, transfer, minimal-norm)."""
        config = self.config
        if config.every_point:  # each library's FGSM and PGD together, as before the cascade
            budget_rows = [(library, attack) for library in config.libraries for attack in ("fgsm", "pgd")]
        else:  # every FGSM first: PGD attacks only what none of them broke
            budget_rows = [(library, attack) for attack in ("fgsm", "pgd") for library in config.libraries]
        rows = tqdm(budget_rows, desc="audit: budget attacks", disable=not self.show_progress, leave=False)
        for library, attack in rows:
            steps = 1 if attack == "fgsm" else config.fitted_steps()
            budget_norm = Norm.parse(config.norm)
            if attack == "fgsm" and config.norm != "Linf":  # FGSM is L∞ only: one PGD step of size eps instead
                spec = AttackSpec(attack="pgd", norm=budget_norm, eps=config.eps, steps=1, step_size=config.eps)
            else:
                spec = AttackSpec(attack=attack, norm=budget_norm, eps=config.eps, steps=steps, seed=config.seed)
            row = self.library_row(library, spec, asked=self.probed(library, attack))
            row.attack = "fgsm" if attack == "fgsm" else "pgd"
            self.rows.append(row)
        if config.every_point:
            self.autoattack_rows()
            self.square_row()
            self.transfer()
            self.minimal_rows()
        else:  # Square right after the budget rows (its gap is its breaks past them, AutoAttack's check), before the
            # minimal-norm attacks, which a masked gradient keeps at their full iterations on every sample
            self.square_row()
            self.minimal_rows()
            self.autoattack_rows()
            self.transfer()
        unbounded = unbounded_eps(config.norm, self.x)
        self.unbounded = self.own_row(
            "pgd-unbounded", "own", NAIVE, lambda m: pgd(
                m, self.x, self.y, eps=unbounded, norm=config.norm, steps=config.fitted_steps(),
            ), eps=unbounded,
        )  # fmt: skip

    def probed(self, library: str, attack: str) -> Tensor | None:
        """The samples own PGD attacks in the cascade: the pending ones and :data:`PROBES` that own FGSM broke (a
        single step beating PGD shows there); ``None`` (:meth:`pending`) for every other row."""
        fgsm = next((r for r in self.rows if r.ok and r.library == "own" and r.attack == "fgsm"), None)
        if self.config.every_point or library != "own" or attack != "pgd" or fgsm is None:
            return None
        assert fgsm.robust is not None  # an ok row
        broken = torch.nonzero(self.clean & ~fgsm.robust).flatten()[:PROBES]
        asked = self.pending()
        asked[broken] = True
        return asked

    def autoattack_rows(self) -> None:
        if self.config.autoattack and self.num_classes >= 4:
            self.rows.append(self.own_row("autoattack", "torchattacks", NAIVE, self.autoattack))
        elif self.config.autoattack:  # AutoAttack's check_n_classes: its APGD-T needs >= 4 classes, DLR >= 3
            from advbridge.experiments.audit.systems import few_classes_rows

            self.rows += few_classes_rows(self)

    def square_row(self) -> None:
        config = self.config
        queries = config.square_queries if config.budget is None else min(config.square_queries, config.budget)
        self.rows.append(self.own_row("square", "torchattacks", NAIVE, self.square(queries)))

    def transfer(self) -> None:
        if self.surrogate is not None:
            self.rows.append(self.transfer_row())

    def minimal_rows(self) -> None:
        config = self.config
        if config.minimal:
            minimal = [("deepfool", config.norm)] + ([("ddn", "L2")] if config.norm == "L2" else [])
            for library in config.libraries:
                for attack, norm in minimal:
                    spec = AttackSpec(attack=attack, norm=Norm.parse(norm), seed=config.seed)
                    row = self.library_row(library, spec)
                    if row.status != "unsupported":
                        self.rows.append(row)

    def autoattack_alone(self) -> dict | None:
        """AutoAttack standard alone on every sample, the yardstick of the audit's cost and worst case: the robust
        accuracy of its returned points, its propagations per sample (through a tracker, as every row's) and its
        seconds; ``None`` below 4 classes (its targeted DLR needs them). When it fails (a model whose gradient call
        raises, as a user running AutoAttack on it would see), its robust accuracy is ``None`` and ``failed`` says
        why; the passes it spent until then are counted."""
        if self.num_classes < 4:
            return None
        tracker = self.tracker(self.model, self.config.eps)
        seed_everything(self.config.seed)
        start = time.perf_counter()
        try:
            with tracker.record():
                done = run_own(lambda x, y, seed: self.autoattack(tracker), tracker, self.x, self.y,
                               seed=self.config.seed, shard=False)  # fmt: skip
        except Exception as error:  # noqa: BLE001 - any failure of the attack is its result
            return {
                "robust_accuracy": None,
                "propagations_per_sample": float(tracker.propagations().double().mean()),
                "seconds": time.perf_counter() - start,
                "failed": f"{type(error).__name__}: {error}"[:300],
            }
        robust = self.clean & ~fooled(predict(self.model, done.x_adv), self.y, self.reject).cpu()
        return {
            "robust_accuracy": float(robust.double().mean()),
            "propagations_per_sample": float(tracker.propagations().double().mean()),
            "seconds": done.seconds,
        }

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
        tracker = self.tracker(self.model, config.eps)  # no query reaches the model during the attack
        self.surrogate_success = torch.zeros(len(self.clean), dtype=torch.bool)
        asked = self.pending()
        if not bool(asked.any()):
            return self.finish(row, tracker, None, config.eps, torch.zeros(0, dtype=torch.long))
        start = time.perf_counter()
        seed_everything(config.seed)
        with self.attacking(asked) as index, eval_mode(surrogate):
            x_adv = pgd(surrogate, self.x, self.y, eps=config.eps, norm=config.norm, steps=config.steps)
            self.surrogate_success[index] = (predict(surrogate, x_adv) != self.y).cpu()
        row.seconds = time.perf_counter() - start
        return self.finish(row, tracker, x_adv, config.eps, index)

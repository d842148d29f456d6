"""The path tracker: what an attack queried, sample by sample (AttackBench's wrapper; Pintor et al.'s traces).

:class:`PathTracker` is an ``nn.Module`` around the attacked model: every library attacks it as it would the
model. For each query it finds which original image each row belongs to (the nearest in L2: an attack stays
far closer to its own image than to any other), and, while recording:

- counts forward and backward propagations per sample (AttackBench, Cinà et al. 2025, Sec. 3: the budget
  is 2,000 propagations per sample; queries past a sample's ``budget`` are not recorded);
- keeps, per sample, the smallest adversarial point seen inside the ball ``(norm, eps)`` and inside
  [0, 1]: AttackBench's best point of the path, and Pintor et al.'s silent-success evidence (a point on the
  path was adversarial, the returned one is not);
- records the margin loss ``L = z_y − max_{j≠y} z_j`` of every query, per sample, in query order: the trace
  behind the incomplete-optimization indicator (Pintor et al. 2022, Sec. 3, indicator 4).

References:
    Cinà et al. AttackBench: Evaluating Gradient-based Attacks for Adversarial Examples. AAAI 2025.
    https://arxiv.org/abs/2404.19460
    Pintor et al. Indicators of Attack Failure: Debugging and Improving Optimization of Adversarial Examples.
    NeurIPS 2022. https://arxiv.org/abs/2106.09947
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advbridge.experiments.core.losses import margin_loss

#: Slack of the ball check: float32 rounding of x + δ (as the runner's).
BALL_TOL = 1e-5


def within(distance: Tensor, eps: float) -> Tensor:
    """``distance <= eps``, with the slack of :data:`BALL_TOL` (relative and absolute)."""
    return distance <= eps * (1 + BALL_TOL) + BALL_TOL


def distances(delta: Tensor, norm: str) -> Tensor:
    """Per-row ``norm`` ("Linf" or "L2") of a batch of perturbations."""
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "Linf" else flat.norm(p=2, dim=1)


class PathTracker(nn.Module):
    """``model`` as every attack sees it, recording each query per sample (module docstring).

    Args:
        model: the attacked module (its outputs are the system's: logits or scores, argmax = prediction).
        x: the original images ``(N, ...)`` in [0, 1]; y: their labels.
        norm: "Linf" or "L2": the norm of the distances and of the ball.
        eps: the ball's radius; ``math.inf`` for a minimal-norm attack.
        budget: propagations (forward + backward) per sample after which queries are no longer recorded.
        reject: the model's reject class (a detector's), which does not count as a success.
    """

    x: Tensor  # buffers registered in __init__ (nn.Module's __getattr__ is typed Tensor | Module)
    y: Tensor

    def __init__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, norm: str, eps: float = math.inf, budget: int | None = None,
        reject: int | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.model, self.norm, self.eps, self.budget, self.reject = model, norm, eps, budget, reject
        self.register_buffer("x", x.detach(), persistent=False)
        self.register_buffer("y", y.detach(), persistent=False)
        n = len(x)
        self.forwards = torch.zeros(n, dtype=torch.long)
        self.backwards = torch.zeros(n, dtype=torch.long)
        self.best_distance = torch.full((n,), math.inf, dtype=torch.float64)
        self.best = x.detach().clone()
        self.trace: list[tuple[Tensor, Tensor]] = []  # per query: (sample indices, margin loss)
        self.recording = False

    def forward(self, inputs: Tensor) -> Tensor:
        out = self.model(inputs)
        if self.recording and isinstance(out, Tensor) and out.dim() == 2:
            out = self._record(inputs, out)
        return out

    @contextmanager
    def record(self) -> Iterator[PathTracker]:
        """Record the queries made inside the block (the attack's, not the runner's own predictions)."""
        self.recording = True
        try:
            yield self
        finally:
            self.recording = False

    @torch.no_grad()
    def match(self, inputs: Tensor) -> Tensor:
        """The index of the original image nearest (L2) to each row of ``inputs``."""
        return torch.cdist(inputs.detach().flatten(1).double(), self.x.flatten(1).double()).argmin(1).cpu()

    def _record(self, inputs: Tensor, out: Tensor) -> Tensor:
        """Count, trace and keep the best point of one query; past a sample's budget, the query is refused: its
        rows get constant logits of a wrong class (AttackBench: the attack sees success and no gradient, so it
        stops spending work on that sample) and are neither counted nor recorded."""
        index = self.match(inputs)
        cost = 2 if out.requires_grad else 1
        if self.budget is None:
            allowed = torch.ones(len(index), dtype=torch.bool)
        else:
            allowed = self.forwards[index] + self.backwards[index] + cost <= self.budget
        labels = self.y.to(out.device)[index.to(out.device)]
        self.forwards.index_add_(0, index[allowed], torch.ones(int(allowed.sum()), dtype=torch.long))
        with torch.no_grad():
            loss = margin_loss(out.detach().float(), labels, self.reject).cpu()
            self.trace.append((index[allowed], loss[allowed]))
            distance = distances(inputs.detach() - self.x[index.to(inputs.device)], self.norm).double().cpu()
            flat = inputs.detach().flatten(1)
            in_range = ((flat.amin(1) >= 0) & (flat.amax(1) <= 1)).cpu()
            better = (
                allowed & (loss < 0) & in_range & within(distance, self.eps) & (distance < self.best_distance[index])
            )
            for row in torch.nonzero(better).flatten().tolist():  # rows of one query can share a sample
                i = int(index[row])
                if distance[row] < self.best_distance[i]:
                    self.best_distance[i] = distance[row]
                    self.best[i] = inputs[row].detach().to(self.best.device)
        if not bool(allowed.all()):
            classes = out.shape[1] - (self.reject is not None)
            wrong = F.one_hot((labels + 1) % classes, out.shape[1]).to(out.dtype) * 10
            out = torch.where(allowed.to(out.device)[:, None], out, wrong)
        if out.requires_grad:
            rows = index[allowed]

            def count_backward(grad: Tensor) -> None:
                self.backwards.index_add_(0, rows, torch.ones(len(rows), dtype=torch.long))

            out.register_hook(count_backward)
        return out

    def propagations(self) -> Tensor:
        """Forward + backward propagations recorded per sample."""
        return self.forwards + self.backwards

    def losses(self, sample: int) -> Tensor:
        """The margin loss of every recorded query of ``sample``, in query order."""
        parts = [loss[index == sample] for index, loss in self.trace]
        return torch.cat(parts) if parts else torch.zeros(0)

    def loss_traces(self) -> list[Tensor]:
        """:meth:`losses` of every sample."""
        if not self.trace:
            return [torch.zeros(0) for _ in range(len(self.x))]
        index = torch.cat([i for i, _ in self.trace])
        loss = torch.cat([v for _, v in self.trace])
        order = torch.sort(index, stable=True)
        counts = torch.bincount(index, minlength=len(self.x)).tolist()
        return list(loss[order.indices].split(counts))

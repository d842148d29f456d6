"""An analytic affine classifier whose closest decision boundary is known exactly.

adv-lib's idea (``tests/test_attacks.py`` there): on a model whose minimal adversarial perturbation
has a closed form, a minimal-norm attack can be checked against the optimum itself (it must reach at
most a small factor of it), not only against another implementation.

For logits z = W·flatten(x) + b the set of inputs not classified as y is the union over k ≠ y of the
half-spaces {z_k ≥ z_y}, so the distance from x to it, in the norm dual to q, is

    min_{k ≠ y} (z_y − z_k) / ‖w_k − w_y‖_q        (q = 2 for L2, q = 1 for L∞).

This is the true minimal perturbation only if the minimizer x + δ* stays inside [0, 1] (otherwise the
box binds and the constrained optimum is larger). :func:`make_inputs` draws inputs around 0.5 whose
optimal perturbations are small, and checks that the box does not bind, for both norms.

Targeted, the set of inputs classified as t is the polyhedron {z_t ≥ z_k for all k}: the distance to it
is a small quadratic program in L2 (solved exactly through its dual, a non-negative least-squares
problem in K − 1 multipliers) and a linear program in L∞ (scipy's HiGHS); see :func:`exact_targeted`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

#: below this many float64 ulps of slack a constraint counts as met (the solvers' own rounding)
_FEASIBLE_TOL = 1e-9


class LinearClassifier(nn.Module):
    """logits = W·flatten(x) + b for inputs of any shape ``(N, *shape)`` in [0, 1], built from ``seed``.

    The rows of W are Gaussian with norm ≈ ``logit_scale``, and b = −W·(0.5, …, 0.5) + ``logit_scale``·b0
    with small random offsets b0 (std ``bias_std``), so the decision boundaries pass close to inputs
    around 0.5. The boundaries, hence the exact distances, do not depend on ``logit_scale``; the
    softmax does. DeepFool works on logit differences and is scale-invariant, but DDN follows the
    cross-entropy gradient Σ_k p_k (w_k − w_y), which points at the closest boundary only when the
    softmax is dominated by the two classes that meet there: with ``logit_scale=1`` (logits within a
    few tenths of each other, softmax nearly uniform) DDN stops at 1.3–1.5× the optimum (measured),
    with 30–100 at ≤ 1.05×; at 300 the loss saturates in float32 (zero gradients, replaced by noise).
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        num_classes: int = 10,
        *,
        seed: int = 0,
        bias_std: float = 0.05,
        logit_scale: float = 50.0,
    ):
        super().__init__()
        self.shape = tuple(shape)
        self.num_classes = num_classes
        dim = math.prod(shape)
        gen = torch.Generator().manual_seed(seed)
        weight = logit_scale * torch.randn(num_classes, dim, generator=gen, dtype=torch.float64) / math.sqrt(dim)
        offsets = logit_scale * bias_std * torch.randn(num_classes, generator=gen, dtype=torch.float64)
        bias = offsets - weight @ torch.full((dim,), 0.5, dtype=torch.float64)
        self.linear = nn.Linear(dim, num_classes)
        with torch.no_grad():
            self.linear.weight.copy_(weight)
            self.linear.bias.copy_(bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.flatten(1))


def _margins_and_normals(model: LinearClassifier, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Margins z_y − z_k ``(N, K)`` and normals w_k − w_y ``(N, K, D)``, in float64 (k = y included)."""
    w = model.linear.weight.detach().double()
    b = model.linear.bias.detach().double()
    z = x.detach().double().flatten(1) @ w.T + b
    margins = z.gather(1, y[:, None]) - z
    normals = w[None, :, :] - w[y][:, None, :]
    return margins, normals


def _exact_minimal(model: LinearClassifier, x: Tensor, y: Tensor, q: float) -> tuple[Tensor, Tensor]:
    margins, normals = _margins_and_normals(model, x, y)
    distances = margins / normals.norm(p=q, dim=2)
    distances[torch.arange(len(x)), y] = math.inf
    return distances.min(dim=1)


def exact_minimal_l2(model: LinearClassifier, x: Tensor, y: Tensor) -> Tensor:
    """Per-sample distance (float64) to the closest decision boundary in L2, without box constraints."""
    return _exact_minimal(model, x, y, 2)[0]


def exact_minimal_linf(model: LinearClassifier, x: Tensor, y: Tensor) -> Tensor:
    """Per-sample distance (float64) to the closest decision boundary in L∞, without box constraints."""
    return _exact_minimal(model, x, y, 1)[0]


def optimal_perturbations(model: LinearClassifier, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """The unconstrained minimizers δ*_2 and δ*_∞ (float64, shape of ``x``) that reach the boundary."""
    _, normals = _margins_and_normals(model, x, y)
    rows = torch.arange(len(x))
    d2, k2 = _exact_minimal(model, x, y, 2)
    dinf, kinf = _exact_minimal(model, x, y, 1)
    n2 = normals[rows, k2]
    delta2 = d2[:, None] * n2 / n2.norm(dim=1, keepdim=True)
    deltainf = dinf[:, None] * normals[rows, kinf].sign()
    return delta2.view(x.shape), deltainf.view(x.shape)


def make_inputs(
    model: LinearClassifier,
    n: int,
    *,
    seed: int = 0,
    spread: float = 0.1,
    push: float = 0.3,
    min_linf: float = 0.005,
    margin: float = 0.1,
) -> tuple[Tensor, Tensor]:
    """``n`` inputs around 0.5 and their labels (the model's predictions, so all are correct).

    Each draw is 0.5 + U(−``spread``, ``spread``) per pixel, moved by ``push`` (in L2) along
    w_c − mean(w) for a random class c, so that classes vary and margins are not tiny. Keeps only draws
    whose exact L∞ distance is at least ``min_linf`` (so DeepFool's constant 1e-4 step term stays small
    against it) and whose optimal perturbations, in both norms and even doubled, stay ``margin`` away
    from the box: there the box does not bind and the unconstrained distances are the true minimal norms.
    """
    gen = torch.Generator().manual_seed(seed)
    w = model.linear.weight.detach()
    directions = w - w.mean(0, keepdim=True)
    directions = directions / directions.norm(dim=1, keepdim=True)
    kept: list[Tensor] = []
    for _ in range(100):
        m = 4 * n
        c = torch.randint(model.num_classes, (m,), generator=gen)
        x = 0.5 + spread * (2 * torch.rand(m, *model.shape, generator=gen) - 1)
        x = x + push * directions[c].view(m, *model.shape)
        with torch.no_grad():
            y = model(x).argmax(1)
        delta2, deltainf = optimal_perturbations(model, x, y)
        keep = exact_minimal_linf(model, x, y) >= min_linf
        for delta in (torch.zeros_like(delta2), delta2, deltainf):
            far = (x.double() + 2 * delta).flatten(1)
            keep &= (far.amin(1) >= margin) & (far.amax(1) <= 1 - margin)
        kept.append(x[keep])
        if sum(len(t) for t in kept) >= n:
            break
    else:
        raise RuntimeError("could not draw enough inputs with these settings")
    x = torch.cat(kept)[:n].contiguous()
    with torch.no_grad():
        y = model(x).argmax(1)
    return x, y


def _targeted_constraints(model: LinearClassifier, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """A ``(N, K, D)`` and b ``(N, K)`` with x + δ classified as t ⟺ A·δ ≥ b (row k = t is 0 ≥ 0)."""
    w = model.linear.weight.detach().double()
    b = model.linear.bias.detach().double()
    z = x.detach().double().flatten(1) @ w.T + b
    return w[t][:, None, :] - w[None, :, :], z - z.gather(1, t[:, None])


def exact_targeted(model: LinearClassifier, x: Tensor, t: Tensor, norm: str) -> tuple[Tensor, Tensor]:
    """Per-sample distance (float64) from x to the region classified as ``t``, and the minimizer δ*.

    L2: min ½‖δ‖² s.t. A·δ ≥ b. Its dual is max_{λ ≥ 0} bᵀλ − ½‖Aᵀλ‖²; with A·Aᵀ = L·Lᵀ (Cholesky) that is
    the non-negative least-squares problem min_{λ ≥ 0} ‖Lᵀλ − L⁻¹b‖², solved exactly (active set) by
    ``scipy.optimize.nnls``; then δ* = Aᵀλ. L∞: min s s.t. A·δ ≥ b, −s ≤ δ_i ≤ s, by ``linprog``.
    Both are checked feasible. Without box constraints, like :func:`exact_minimal_l2`.
    """
    import numpy as np
    from scipy.optimize import linprog, nnls

    constraints, bounds = _targeted_constraints(model, x, t)
    dists, deltas = [], []
    for i in range(len(x)):
        keep = torch.arange(constraints.shape[1]) != int(t[i])
        a, b = constraints[i][keep].numpy(), bounds[i][keep].numpy()
        if norm == "L2":
            chol = np.linalg.cholesky(a @ a.T)
            lam, _ = nnls(chol.T, np.linalg.solve(chol, b))
            delta = a.T @ lam
            dist = float(np.linalg.norm(delta))
        elif norm == "Linf":
            d = a.shape[1]
            cost = np.zeros(d + 1)
            cost[-1] = 1
            eye = np.eye(d)
            a_ub = np.block([[-a, np.zeros((len(a), 1))], [eye, -np.ones((d, 1))], [-eye, -np.ones((d, 1))]])
            b_ub = np.concatenate([-b, np.zeros(2 * d)])
            res = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=[(None, None)] * d + [(0, None)], method="highs")
            if res.status != 0:
                raise RuntimeError(f"linprog failed on sample {i}: {res.message}")
            delta, dist = res.x[:d], float(np.abs(res.x[:d]).max())
        else:
            raise ValueError(f"expected norm 'L2' or 'Linf', got {norm!r}")
        if float((a @ delta - b).min()) < -_FEASIBLE_TOL * max(1.0, float(np.abs(b).max())):
            raise RuntimeError(f"the {norm} solution of sample {i} violates a constraint")
        dists.append(dist)
        deltas.append(torch.from_numpy(delta))
    return torch.tensor(dists, dtype=torch.float64), torch.stack(deltas).view(x.shape)


def box_margin(x: Tensor, delta: Tensor, factor: float = 2.0) -> Tensor:
    """Per sample, how far x + factor·δ stays from the box [0, 1] (negative: outside)."""
    far = (x.double() + factor * delta.double()).flatten(1)
    return torch.minimum(far.amin(1), 1 - far.amax(1))

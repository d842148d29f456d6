"""The engine's pieces that every defense row goes through: adaptive attacks measured by the runner (passes
counted, output checked), one judge, the registry of defenses."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advbridge.bridge.runner import InvalidOutputError, run_batch_attack
from advbridge.bridge.spec import AttackSpec, Norm
from advbridge.experiments.engine import Cell, Detector, judge
from advbridge.experiments.registry import get_defense, registered_defenses


def linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()


def test_an_adaptive_attack_is_counted_and_checked_like_a_librarys():
    model, x, y = linear(), torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1])

    def two_steps(xb, yb, seed):
        delta = torch.zeros_like(xb, requires_grad=True)
        for _ in range(2):
            loss = nn.functional.cross_entropy(model(xb + delta), yb)
            (grad,) = torch.autograd.grad(loss, delta)
            delta = (delta + 0.01 * grad.sign()).detach().requires_grad_(True)
        return (xb + delta).clamp(0, 1)

    x_adv, forward, backward, seconds, problems = run_batch_attack(two_steps, model, x, y, 0, ball=("Linf", 0.05))
    assert problems == ""
    assert (forward, backward) == (10, 10) and x_adv.shape == x.shape and seconds > 0
    with pytest.raises(InvalidOutputError, match=r"outside the eps ball: max Linf 0\.02 > 0\.01"):
        run_batch_attack(two_steps, model, x, y, 0, ball=("Linf", 0.01))
    run_batch_attack(two_steps, model, x, y, 0)  # unbounded: no ball

    def in_place(xb, yb, seed):
        return xb.add_(2.0)

    with pytest.raises(InvalidOutputError, match="outside \\[0, 1\\].*modified the caller's input"):
        run_batch_attack(in_place, model, x.clone(), y, 0)


def test_the_judge_counts_flagged_examples_as_caught_and_a_budget_as_the_bound():
    model, x = linear(), torch.rand(4, 1, 2, 2)
    y = model(x).argmax(1)
    x_adv = x.clone()
    x_adv[:2] = 1 - x[:2]
    wrong = model(x_adv).argmax(1) != y
    clean_ok = torch.ones(4, dtype=torch.bool)
    attack = AttackSpec(attack="pgd", norm=Norm.LINF, eps=0.3)
    cell = Cell("own", "white-box", "own")
    judge(cell, model, None, x, y, clean_ok, x_adv, None, attack)
    assert torch.equal(cell.fooled, wrong) and torch.equal(cell.robust, ~wrong)
    flag_first = Detector(lambda images: (images - x).abs().flatten(1).amax(1) * torch.tensor([1.0, 0, 0, 0]), 0.0)
    flagged = Cell("own", "adaptive", "own")
    judge(flagged, model, flag_first, x, y, clean_ok, x_adv, torch.zeros(4), attack)
    assert not flagged.fooled[0] and torch.equal(flagged.fooled[1:], wrong[1:])
    assert torch.equal(flagged.fooled_classifier, wrong)
    within = Cell("own", "adaptive", "own", reason="deepfool")
    judge(within, model, None, x, y, clean_ok, x_adv, None, attack.with_(eps=1e-3), within_budget=True)
    assert (
        not within.fooled.any() and within.reason.startswith("deepfool; ") and "counted at eps 0.001" in within.reason
    )


def test_every_defense_is_registered_once_and_a_typo_is_answered():
    names = [entry.name for entry in registered_defenses()]
    assert len(names) == len(set(names)) == 12
    assert {e.kind for e in registered_defenses()} == {"squeezer", "detector", "training", "generative"}
    with pytest.raises(Exception, match="did you mean 'median'"):
        get_defense("medain")

"""Own attacks run 4-D batches channels-last; a model that cannot take such a batch still works."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advbridge.own_attacks import ddn, deepfool, fgsm, pgd

# the fallback layout bitwise equal to the default one: deterministic algorithms for the module (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("deterministic_module")


class TutorialNet(nn.Module):
    """The PyTorch tutorial's CIFAR net: ``x.view(-1, 16 * 5 * 5)`` fails on a channels-last activation."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 5), nn.Conv2d(6, 16, 5)
        self.fc = nn.Linear(16 * 5 * 5, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.view(-1, 16 * 5 * 5))


ATTACKS = {
    "fgsm": lambda m, x, y, cl: fgsm(m, x, y, eps=0.03, channels_last=cl),
    "pgd": lambda m, x, y, cl: pgd(m, x, y, eps=0.03, steps=3, random_start=True, channels_last=cl),
    "deepfool": lambda m, x, y, cl: deepfool(m, x, y, steps=5, channels_last=cl),
    "ddn": lambda m, x, y, cl: ddn(m, x, y, steps=5, channels_last=cl),
}


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_model_that_views_its_activations_runs_in_the_default_layout(attack):
    torch.manual_seed(0)
    model = TutorialNet().eval()
    x, y = torch.rand(6, 3, 32, 32), torch.arange(6)
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        model(x.clone(memory_format=torch.channels_last))
    torch.manual_seed(1)
    fallback = ATTACKS[attack](model, x, y, True)
    torch.manual_seed(1)
    default = ATTACKS[attack](model, x, y, False)
    assert torch.equal(fallback, default)
    assert fallback.stride() == x.stride()

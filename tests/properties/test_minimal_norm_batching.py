"""Own DeepFool and DDN: batching and memory layout are implementation details, not part of the math.

DeepFool drops finished samples from the batch, and passes the running ones forward again when that
saves more backward passes than it costs; both attacks work on a channels-last copy. None of this may
change a sample's result, the caller's tensor, or the layout of what comes back.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advbridge.own_attacks import ddn, deepfool


class _CallCounter:
    """Counts the model's forward calls through a forward hook."""

    def __init__(self, model: nn.Module) -> None:
        self.calls = 0
        self._handle = model.register_forward_hook(self._hook)

    def _hook(self, *_) -> None:
        self.calls += 1

    def remove(self) -> None:
        self._handle.remove()


@pytest.mark.usefixtures("deterministic")
@pytest.mark.parametrize("norm", ["L2", "Linf"])
def test_batched_deepfool_equals_one_sample_at_a_time(mnist_model, mnist_batch, norm):
    x, y = mnist_batch[0][:16], mnist_batch[1][:16]
    counter = _CallCounter(mnist_model)
    try:
        batched = deepfool(mnist_model, x, y, norm=norm)
        batched_calls = counter.calls
        single, single_calls = [], []
        for i in range(len(x)):
            counter.calls = 0
            single.append(deepfool(mnist_model, x[i : i + 1], y[i : i + 1], norm=norm))
            single_calls.append(counter.calls)
    finally:
        counter.remove()
    single = torch.cat(single)
    # float noise from batch-size-dependent kernels only; a wrong row bookkeeping moves digits by ~1
    assert (batched - single).abs().max() < 1e-4
    # without a second forward pass the loop makes as many calls as the slowest sample (one per step);
    # more calls prove that the re-forward path ran on these digits
    assert batched_calls > max(single_calls), (batched_calls, single_calls)


@pytest.mark.usefixtures("deterministic")
@pytest.mark.parametrize("norm", ["L2", "Linf"])
def test_deepfool_in_parts_equals_deepfool_on_the_whole_batch(mnist_model, mnist_batch, norm):
    """``batch_size`` splits the batch (here 16 digits into 5 + 5 + 5 + 1); the parts come back in order."""
    x, y = mnist_batch[0][:16], mnist_batch[1][:16]
    whole = deepfool(mnist_model, x, y, norm=norm, batch_size=None)
    parts = deepfool(mnist_model, x, y, norm=norm, batch_size=5)
    assert parts.shape == x.shape and parts.stride() == x.stride()
    # float noise from batch-size-dependent kernels only; a part returned in the wrong place moves digits by ~1
    assert (parts - whole).abs().max() < 1e-4
    moved = (parts - x).flatten(1).abs().amax(dim=1) > 0
    with torch.no_grad():
        correct = mnist_model(x).argmax(1) == y
    assert correct.sum() >= 12 and torch.equal(moved, correct)  # each part attacked its own digits, in place


class _TinyColourNet(nn.Module):
    """Conv net on 3-channel 8×8 images (channels-last changes the memory of such a batch)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.mark.parametrize("attack", ["deepfool", "ddn"])
def test_results_come_back_in_the_callers_layout(attack):
    model = _TinyColourNet().eval()
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = model(x).argmax(1)
    x_copy = x.clone()
    run = deepfool if attack == "deepfool" else ddn
    out = run(model, x, y, steps=20)
    assert out.is_contiguous() and out.stride() == x.stride()
    assert torch.equal(x, x_copy)
    assert (model(out).argmax(1) != y).float().mean() >= 0.5  # the attack still works on this layout
    x_last = x.clone(memory_format=torch.channels_last)
    out_last = run(model, x_last, y, steps=20)
    assert out_last.is_contiguous(memory_format=torch.channels_last) and out_last.stride() == x_last.stride()
    assert (out - out_last).abs().max() < 1e-5  # the input's own layout does not change the result

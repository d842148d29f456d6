"""Defenses through the bridge: the spec in our vocabulary, each library's implementation (ART's bitwise
equal to ours on real images, its traps handled in its adapter), and the reasons of the libraries that
have none."""

from __future__ import annotations

import math

import pytest
import torch

from advbridge.bridge.adapters import LIBRARIES, get_adapter
from advbridge.bridge.defense_spec import RESAMPLE_MODES, DefenseSpec
from advbridge.bridge.errors import AdvBridgeError, InvalidParameterError, UnknownNameError, UnsupportedDefenseError
from advbridge.defenses.preprocessor import BitDepth

SQUEEZER_SPECS = (
    [DefenseSpec(defense="bit-depth", bits=b) for b in (1, 3, 5, 8)]
    + [DefenseSpec(defense="median", size=k) for k in (2, 3, 4, 5)]
    + [DefenseSpec(defense="resample", factor=f, mode=m) for m in RESAMPLE_MODES for f in (2, 3.5)]
)


@pytest.mark.usefixtures("deterministic")
@pytest.mark.parametrize("spec", SQUEEZER_SPECS, ids=DefenseSpec.describe)
def test_art_implementation_is_bitwise_own_on_real_images(spec, real_images):
    """ART's FeatureSqueezing (float64 cast back), SpatialSmoothing(channels_first=True) and the chain of two
    ImageResizePyTorch (their .squeeze() of one-channel images undone) give our bits, on 1 and 3 channels."""
    art = get_adapter("art")
    backward = "exact" if spec.defense == "resample" else "bpda"
    theirs = art.build_defense(spec, backward)(real_images)
    ours = get_adapter("own").build_defense(spec, backward)(real_images)
    assert theirs.dtype == real_images.dtype and theirs.shape == real_images.shape
    assert torch.equal(theirs, ours)
    if spec.defense != "bit-depth" or spec.bits < 8:
        assert not torch.equal(ours, real_images), "a squeezer must change real images"


@pytest.mark.usefixtures("deterministic")
def test_art_gradients_are_what_art_offers(mnist_model, mnist_batch):
    """ART's numpy squeezers give BPDA (the identity, = our bpda backward); its resize gives autograd's."""
    x, y = mnist_batch[0][:8], mnist_batch[1][:8]

    def grad(module):
        xg = x.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(mnist_model(module(xg)), y, reduction="sum")
        return torch.autograd.grad(loss, xg)[0]

    for spec in (DefenseSpec(defense="bit-depth", bits=1), DefenseSpec(defense="median", size=2)):
        art, own = (get_adapter(lib).build_defense(spec, "bpda") for lib in ("art", "own"))
        assert torch.equal(grad(art), grad(own)) and float(grad(own).abs().sum()) > 0
    spec = DefenseSpec(defense="resample", factor=2)
    torch.testing.assert_close(
        grad(get_adapter("art").build_defense(spec)), grad(get_adapter("own").build_defense(spec))
    )


def test_exact_bit_depth_gradient_is_zero_for_any_input():
    x = torch.rand(4, 3, 8, 8, requires_grad=True)
    (g,) = torch.autograd.grad((BitDepth(4)(x) * torch.randn(4, 3, 8, 8)).sum(), x)
    assert torch.equal(g, torch.zeros_like(g))


@pytest.mark.parametrize("bits", range(1, 9))
def test_bit_depth_matches_float64_rounding_off_the_pixel_grid(bits):
    """Values that are not 8-bit pixels, half-way points included, and more than one float64 chunk."""
    levels = 2**bits - 1
    halves = (torch.arange(levels, dtype=torch.float64) + 0.5) / levels
    x = torch.cat([torch.rand(BitDepth.chunk + 123, dtype=torch.float64), halves, torch.tensor([0.0, 0.5, 1.0])])
    x = x.float().view(1, 1, 1, -1)
    expected = (torch.round(x.double() * levels) / levels).float()
    assert torch.equal(BitDepth(bits)(x), expected)


def test_libraries_without_a_defense_say_why():
    spec = DefenseSpec(defense="median", size=2)
    for name in ("foolbox", "torchattacks", "advlib"):
        adapter = get_adapter(name)
        reason = adapter.defense_unsupported_reason(spec)
        assert reason and ("no defenses" in reason or "no input-transformation" in reason)
        with pytest.raises(UnsupportedDefenseError, match=f"{name} cannot build median 2×2"):
            adapter.build_defense(spec)
    art = get_adapter("art")
    assert "numpy" in art.defense_unsupported_reason(spec, "exact")
    assert "no BPDA" in art.defense_unsupported_reason(DefenseSpec(defense="resample", factor=2), "bpda")
    detector = DefenseSpec(defense="squeeze-detect").resolved("mnist")
    assert "no feature-squeezing detector" in art.defense_unsupported_reason(detector, "bpda")
    assert [n for n in LIBRARIES if get_adapter(n).defense_unsupported_reason(detector, "bpda") is None] == ["own"]


def test_spec_resolves_xu_defaults_and_clears_what_a_defense_does_not_use():
    assert DefenseSpec(defense="squeeze-detect").resolved("mnist").squeezer_specs() == [
        DefenseSpec(defense="bit-depth", bits=1),
        DefenseSpec(defense="median", size=2),
    ]
    assert DefenseSpec(defense="squeeze-detect").resolved("cifar10").bits == 5
    assert DefenseSpec(defense="median", bits=3, size=3).resolved("mnist") == DefenseSpec(defense="median", size=3)
    detector = DefenseSpec(defense="squeeze-detect", factor=2).resolved("cifar10")
    assert [s.defense for s in detector.squeezer_specs()] == ["bit-depth", "median", "resample"]


@pytest.mark.parametrize(
    ("fields", "message", "error"),
    [
        ({"defense": "median-filter"}, "unknown defense 'median-filter'; did you mean 'median'", UnknownNameError),
        ({"defense": "bit-depth", "bits": 0}, "expected bits as an integer from 1 to 8, got 0", InvalidParameterError),
        ({"defense": "bit-depth", "bits": 9}, "got 9", InvalidParameterError),
        ({"defense": "median", "size": 6}, "from 2 to 5, got 6", InvalidParameterError),
        ({"defense": "median", "size": 1}, "from 2 to 5, got 1", InvalidParameterError),
        ({"defense": "resample", "factor": 1}, "expected factor > 1", InvalidParameterError),
        ({"defense": "resample", "factor": math.inf}, "got inf", InvalidParameterError),
        ({"defense": "resample", "mode": "linear"}, "unknown interpolation mode 'linear'", UnknownNameError),
        (
            {"defense": "squeeze-detect", "fpr": 0},
            "expected fpr strictly between 0 and 1, got 0",
            InvalidParameterError,
        ),
        ({"defense": "squeeze-detect", "fpr": 1.5}, "got 1.5", InvalidParameterError),
        ({"defense": "squeeze-detect", "threshold": 3}, "expected threshold in [0, 2]", InvalidParameterError),
    ],
)
def test_bad_defense_spec_raises_one_line(fields, message, error):
    with pytest.raises(error) as info:
        DefenseSpec(**fields)
    assert isinstance(info.value, AdvBridgeError) and message in str(info.value) and "\n" not in str(info.value)

"""Feature squeezers: bitwise equal to ART on real MNIST and CIFAR-10 images, not no-ops, and the two
backward passes (exact: zero for bit depth; BPDA: the model's gradient at s(x))."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from advbridge.bridge.errors import AdvBridgeError, InvalidParameterError, UnknownNameError
from advbridge.defenses.preprocessor import BitDepth, MedianFilter, Resample


@pytest.mark.usefixtures("deterministic")
@pytest.mark.parametrize("bits", range(1, 9))
def test_bit_depth_is_bitwise_art_feature_squeezing(real_images, bits):
    from art.defences.preprocessor import FeatureSqueezing

    art, _ = FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=bits)(real_images.numpy())
    assert art.dtype == np.float64, "ART's numpy-2 promotion (the adapter casts back)"
    own = BitDepth(bits)(real_images)
    assert own.dtype == real_images.dtype and torch.equal(own, torch.from_numpy(art.astype(np.float32)))
    if bits < 8:  # real 8-bit images are unchanged by 8 bits, by construction
        assert not torch.equal(own, real_images), "a squeezer must change real images"
    assert len(torch.unique(own)) <= 2**bits


@pytest.mark.usefixtures("deterministic")
@pytest.mark.parametrize("size", [2, 3, 4, 5])
def test_median_is_bitwise_art_spatial_smoothing(real_images, size):
    from art.defences.preprocessor import SpatialSmoothing

    art, _ = SpatialSmoothing(window_size=size, channels_first=True)(real_images.numpy())
    own = MedianFilter(size)(real_images)
    assert torch.equal(own, torch.from_numpy(art))
    assert not torch.equal(own, real_images)


@pytest.mark.usefixtures("deterministic")
@pytest.mark.parametrize("size", [2, 3, 4, 5])
def test_median_on_odd_shapes_and_random_values(size):
    """Borders and even windows on sizes that are not multiples of anything, values not on a grid."""
    from scipy.ndimage import median_filter

    x = torch.rand(3, 2, 7, 10, generator=torch.Generator().manual_seed(size))
    ref = median_filter(x.numpy(), size=(1, 1, size, size), mode="reflect")
    assert torch.equal(MedianFilter(size)(x), torch.from_numpy(ref))


def test_resample_changes_images_and_keeps_shape(cifar_exact):
    for mode in ("nearest", "bilinear", "bicubic", "area"):
        out = Resample(2, mode)(cifar_exact)
        assert out.shape == cifar_exact.shape and 0 <= float(out.min()) and float(out.max()) <= 1
        assert not torch.equal(out, cifar_exact)
    # down by 2 with area averaging, then nearest up: each 2×2 block becomes its mean
    x = torch.arange(16.0).view(1, 1, 4, 4) / 16
    out = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest")
    torch.testing.assert_close(Resample(2, "area")(x), out)


def _input_gradient(model: torch.nn.Module, x: Tensor, y: Tensor) -> Tensor:
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    return grad


@pytest.mark.usefixtures("deterministic")
@pytest.mark.parametrize(
    "squeezer", [BitDepth(1), BitDepth(5), MedianFilter(2), MedianFilter(3), Resample(2)], ids=repr
)
def test_bpda_gradient_is_the_model_gradient_at_the_squeezed_input(mnist_model, mnist_batch, squeezer):
    x, y = mnist_batch[0][:16], mnist_batch[1][:16]
    squeezer.backward = "bpda"
    try:
        defended = torch.nn.Sequential(squeezer, mnist_model)
        bpda = _input_gradient(defended, x, y)
        assert torch.equal(defended(x), mnist_model(squeezer.squeeze(x))), "forward value: the squeezed input"
    finally:
        squeezer.backward = "exact"
    at_squeezed = _input_gradient(mnist_model, squeezer.squeeze(x), y)
    assert torch.equal(bpda, at_squeezed)
    assert float(bpda.abs().sum()) > 0


def test_exact_gradient_of_bit_depth_is_zero_and_of_median_is_not(mnist_model, mnist_batch):
    x, y = mnist_batch[0][:16], mnist_batch[1][:16]
    assert float(_input_gradient(torch.nn.Sequential(BitDepth(1), mnist_model), x, y).abs().max()) == 0
    median_grad = _input_gradient(torch.nn.Sequential(MedianFilter(3), mnist_model), x, y)
    assert float(median_grad.abs().sum()) > 0  # the gradient reaches the selected pixels


@pytest.mark.parametrize(
    ("make", "message", "error"),
    [
        (lambda: BitDepth(0), "expected bits as an integer from 1 to 8, got 0", InvalidParameterError),
        (lambda: BitDepth(9), "got 9", InvalidParameterError),
        (lambda: BitDepth(4.0), "got 4.0", InvalidParameterError),
        (
            lambda: MedianFilter(1),
            "expected size (the k of a k×k window) as an integer from 2 to 5, got 1",
            InvalidParameterError,
        ),
        (lambda: MedianFilter(6), "got 6", InvalidParameterError),
        (lambda: Resample(1), "expected factor > 1", InvalidParameterError),
        (lambda: Resample(0.5), "got 0.5", InvalidParameterError),
        (
            lambda: Resample(2, "bilinnear"),
            "unknown interpolation mode 'bilinnear'; did you mean 'bilinear'",
            UnknownNameError,
        ),
        (lambda: BitDepth(4, backward="bdpa"), "unknown backward 'bdpa'; did you mean 'bpda'", UnknownNameError),
    ],
)
def test_bad_squeezer_parameters_raise_one_line(make, message, error):
    with pytest.raises(error) as info:
        make()
    assert isinstance(info.value, AdvBridgeError) and message in str(info.value) and "\n" not in str(info.value)

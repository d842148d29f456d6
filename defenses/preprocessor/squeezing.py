"""Feature squeezing (Xu, Evans, Qi 2018): bit-depth reduction, median filtering, resampling.

Each squeezer is a batched ``nn.Module`` on inputs in [0, 1] with an explicit backward pass:

- ``"exact"``: autograd through the squeezer as it is. For bit depth that is zero almost everywhere
  (rounding is piecewise constant): what a naive attacker sees, kept on purpose.
- ``"bpda"``: the forward value is s(x), the backward pass is the identity (BPDA, Athalye et al.
  2018, Sec. 4.1): ∂L/∂x := ∂L/∂s at s(x), the gradient an adaptive attacker uses.

References:
    Xu, Evans, Qi. Feature Squeezing: Detecting Adversarial Examples in Deep Neural Networks.
    NDSS 2018, Sec. III. https://arxiv.org/abs/1704.01155
    Athalye, Carlini, Wagner. Obfuscated Gradients Give a False Sense of Security. ICML 2018, Sec. 4.1.
    https://arxiv.org/abs/1802.00420
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advbridge.bridge.defense_spec import RESAMPLE_MODES, DefenseSpec, check_bits, check_factor, check_size
from advbridge.bridge.errors import InvalidParameterError, check_name

BACKWARDS = ("exact", "bpda")
Backward = Literal["exact", "bpda"]


class _SqueezedWithGivenBackward(torch.autograd.Function):
    """Forward: the squeezed value, given. Backward: the incoming gradient unchanged (BPDA-identity), or
    zero (``zero=True``: the exact derivative of a piecewise-constant map)."""

    @staticmethod
    def forward(ctx, x: Tensor, squeezed: Tensor, zero: bool) -> Tensor:  # noqa: ARG004 - x only carries the graph
        ctx.zero = zero
        return squeezed

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        return (torch.zeros_like(grad) if ctx.zero else grad), None, None


class Squeezer(nn.Module):
    """Base class: ``forward`` applies :meth:`squeeze` with the chosen backward pass.

    Args:
        backward: ``"exact"`` (autograd through the squeezer) or ``"bpda"`` (identity backward).
    """

    name: str = "squeezer"
    #: The squeezer is piecewise constant (rounding): its exact gradient is zero almost everywhere, and
    #: :meth:`squeeze` may compute outside autograd; ``"exact"`` then returns that zero gradient.
    piecewise_constant: bool = False

    def __init__(self, backward: Backward = "exact") -> None:
        super().__init__()
        self.backward = check_name("backward", backward, BACKWARDS)

    def squeeze(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        if self.backward == "exact" and not self.piecewise_constant:
            return self.squeeze(x)
        with torch.no_grad():
            squeezed = self.squeeze(x)
        if not x.requires_grad:
            return squeezed
        return _SqueezedWithGivenBackward.apply(x, squeezed, self.backward == "exact")

    def extra_repr(self) -> str:
        return f"backward={self.backward!r}"


class BitDepth(Squeezer):
    """Reduce every value to ``bits`` bits: s(x) = round(x·(2^b − 1)) / (2^b − 1), round half to even.

    The product and the division are done in float64 and the result cast back: that is ART's
    ``FeatureSqueezing`` arithmetic under numpy 2 (its float64 scale promotes the batch), so the two
    agree bitwise; in float32 the product x·(2^b − 1) could round onto a half-integer and change the level.
    The float64 work runs in chunks through one reused buffer (in cache, no batch-sized float64 copies);
    1 bit is the comparison x > 1/2 (round half to even sends 1/2 to 0), the same bits.
    The exact gradient is zero (``_SqueezedWithGivenBackward`` with ``zero``), as autograd's gradient of ``torch.round`` is.

    Args:
        bits: 1 to 8 (1 bit: binarization at 0.5).
        backward: see :class:`Squeezer`.

    Shape:
        any ``(N, ...)``; returns the same shape and dtype.

    References:
        Xu et al. 2018, Sec. III-A (color bit depth). https://arxiv.org/abs/1704.01155
    """

    name = "bit-depth"
    piecewise_constant = True
    #: Elements per float64 chunk (256 KiB: stays in a core's L2 cache).
    chunk = 32768

    def __init__(self, bits: int, backward: Backward = "exact") -> None:
        super().__init__(backward)
        self.bits = check_bits(bits)

    def squeeze(self, x: Tensor) -> Tensor:
        if self.bits == 1:
            return (x > 0.5).to(x.dtype)
        levels = float(2**self.bits - 1)
        if x.dtype == torch.float64:
            return torch.round(x * levels) / levels
        flat = x.detach().reshape(-1)
        out = torch.empty_like(flat)
        buffer = torch.empty(min(self.chunk, flat.numel()), dtype=torch.float64, device=x.device)
        for start in range(0, flat.numel(), self.chunk):
            part = flat[start : start + self.chunk]
            wide = buffer[: part.numel()]
            wide.copy_(part).mul_(levels).round_().div_(levels)
            out[start : start + self.chunk].copy_(wide)
        return out.view_as(x)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, backward={self.backward!r}"


def _symmetric_indices(n: int, before: int, after: int, device: torch.device) -> Tensor:
    """Indices of a length-``n`` axis padded by ``before``/``after`` with the edge sample repeated
    (numpy 'symmetric', scipy 'reflect': … 1 0 | 0 1 2 … n−1 | n−1 n−2 …)."""
    idx = torch.arange(-before, n + after, device=device)
    period = 2 * n
    idx = idx % period
    return torch.where(idx >= n, period - 1 - idx, idx)


def _sort2(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    return torch.minimum(a, b), torch.maximum(a, b)


def _median3(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    return torch.maximum(torch.minimum(a, b), torch.minimum(torch.maximum(a, b), c))


class MedianFilter(Squeezer):
    """k×k median per channel, with scipy's ``median_filter(mode="reflect")`` conventions (ART's
    ``SpatialSmoothing``): the border repeats the edge pixel (half-sample symmetric); the window of
    pixel i spans i − ⌊k/2⌋ … i − ⌊k/2⌋ + k − 1; for even k the value of rank k²/2 (0-based, the upper
    of the two middle values) is taken.

    k = 2 and 3 use column sorting on shifted views (each column of the window sorted once and
    shared by the k windows that contain it; then a few min/max: 5 and 18 elementwise operations);
    k = 4, 5 select the rank from the k² shifted views. A median selects one of its inputs, so every
    method gives the same bits.

    Args:
        size: k, 2 to 5.
        backward: see :class:`Squeezer` (the exact gradient of a median flows to the selected pixel).

    Shape:
        ``(N, C, H, W)``; returns the same shape and dtype.

    References:
        Xu et al. 2018, Sec. III-B (median smoothing). https://arxiv.org/abs/1704.01155
        The 3×3 column method: Smith, Implementing median filters in XC4000E FPGAs, XCELL 23 (1996).
    """

    name = "median"

    def __init__(self, size: int, backward: Backward = "exact") -> None:
        super().__init__(backward)
        self.size = check_size(size)

    def _padded(self, x: Tensor) -> Tensor:
        k = self.size
        before, after = k // 2, k - 1 - k // 2
        if after <= 1 and before <= 1:  # a one-pixel symmetric border is the edge pixel repeated
            return F.pad(x, (before, after, before, after), mode="replicate")
        _, _, h, w = x.shape
        rows = _symmetric_indices(h, before, after, x.device)
        cols = _symmetric_indices(w, before, after, x.device)
        return x.index_select(2, rows).index_select(3, cols)

    def squeeze(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise InvalidParameterError(f"expected images (N, C, H, W) for a median filter, got shape {tuple(x.shape)}")
        k = self.size
        _, _, h, w = x.shape
        p = self._padded(x)
        if k == 2:
            lo, hi = _sort2(p[:, :, :h], p[:, :, 1 : h + 1])  # every column of two, sorted once
            # 3rd smallest of four = the larger of (smaller of the two maxima, larger of the two minima)
            return torch.maximum(
                torch.minimum(hi[..., :w], hi[..., 1 : w + 1]), torch.maximum(lo[..., :w], lo[..., 1 : w + 1])
            )
        if k == 3:
            a, b, c = p[:, :, :h], p[:, :, 1 : h + 1], p[:, :, 2 : h + 2]
            a, b = _sort2(a, b)
            b, c = _sort2(b, c)
            a, b = _sort2(a, b)  # columns sorted: a ≤ b ≤ c
            left, mid, right = slice(0, w), slice(1, w + 1), slice(2, w + 2)
            low = torch.maximum(torch.maximum(a[..., left], a[..., mid]), a[..., right])  # the largest minimum
            high = torch.minimum(torch.minimum(c[..., left], c[..., mid]), c[..., right])  # the smallest maximum
            middle = _median3(b[..., left], b[..., mid], b[..., right])
            return _median3(low, middle, high)
        views = torch.stack([p[:, :, i : i + h, j : j + w] for i in range(k) for j in range(k)])
        return views.kthvalue(k * k // 2 + 1, dim=0).values

    def extra_repr(self) -> str:
        return f"size={self.size}, backward={self.backward!r}"


class Resample(Squeezer):
    """Down-sample by ``factor`` and back up to the input size: s(x) = up(down(x)).

    ``torch.nn.functional.interpolate`` both ways, ``align_corners=False``; bicubic can overshoot, so
    both the small image and the result are clipped to [0, 1] (an image at each stage, as ART's
    ``ImageResizePyTorch`` with ``clip_values=(0, 1)``). Its exact gradient exists (interpolation is linear), so ``"exact"``
    is already the adaptive attacker's gradient for every mode but nearest.

    Args:
        factor: > 1; the small side is ``floor(H / factor)`` × ``floor(W / factor)`` (at least 1).
        mode: one of ``nearest``, ``nearest-exact``, ``bilinear``, ``bicubic``, ``area``.
        backward: see :class:`Squeezer`.

    Shape:
        ``(N, C, H, W)``; returns the same shape and dtype.
    """

    name = "resample"

    def __init__(self, factor: float, mode: str = "bilinear", backward: Backward = "exact") -> None:
        super().__init__(backward)
        self.factor = check_factor(factor)
        self.mode = check_name("interpolation mode", mode, RESAMPLE_MODES)

    def squeeze(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise InvalidParameterError(f"expected images (N, C, H, W) to resample, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        small = (max(1, int(h / self.factor)), max(1, int(w / self.factor)))
        corners = {} if self.mode in ("nearest", "nearest-exact", "area") else {"align_corners": False}
        down = F.interpolate(x, size=small, mode=self.mode, **corners)
        if self.mode == "bicubic":
            down = down.clamp(0, 1)
        up = F.interpolate(down, size=(h, w), mode=self.mode, **corners)
        return up.clamp(0, 1) if self.mode == "bicubic" else up

    def extra_repr(self) -> str:
        return f"factor={self.factor:g}, mode={self.mode!r}, backward={self.backward!r}"


def build_squeezer(spec: DefenseSpec, backward: Backward = "exact") -> Squeezer:
    """The squeezer of a (resolved) purifier spec: ``bit-depth``, ``median`` or ``resample``.

    An unresolved spec's missing parameter (``None``) is refused by the same check the squeezer runs.
    """
    if spec.defense == "bit-depth":
        return BitDepth(check_bits(spec.bits), backward)
    if spec.defense == "median":
        return MedianFilter(check_size(spec.size), backward)
    if spec.defense == "resample":
        return Resample(check_factor(spec.factor), spec.mode, backward)
    raise InvalidParameterError(f"expected a squeezer spec (bit-depth, median, resample), got {spec.defense!r}")

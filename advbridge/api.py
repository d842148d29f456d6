"""The Python API: advbridge on a user's own model and images, without the CLI.

    import advbridge
    result = advbridge.compare(model, images, labels, attack="deepfool", libraries="all")
    result.table            # pandas: one row per library (agreement with ours, success, norms, speed, flags)
    result.save("results/mine")   # the files ``cli.py compare --out results/mine`` writes

``model`` is any ``nn.Module`` mapping images in [0, 1] (N, C, H, W) to logits (normalization inside it);
``images`` a tensor or a DataLoader of ``(images, labels)``. Nothing is trained or downloaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from advbridge.bridge.errors import InvalidParameterError, check_name
from advbridge.bridge.spec import ATTACKS, DEFAULT_NORMS, AttackSpec, Norm, standard_eps
from advbridge.experiments.workload import Workload
from advbridge.zoo.datasets import DatasetInfo

if TYPE_CHECKING:
    from advbridge.experiments.compare import CompareRun


def _family(x: Tensor) -> str:
    """The dataset family whose standard budget a default eps takes, from the image shape."""
    channels, side = x.shape[1], x.shape[-1]
    if channels == 1 and side <= 28:
        return "mnist"
    return "cifar10" if side <= 32 else "imagenet"


def as_tensors(images: Tensor | Iterable, labels: Tensor | Sequence[int] | None) -> tuple[Tensor, Tensor]:
    """``(x, y)`` from a tensor and labels, or from an iterable of ``(images, labels)`` batches (a DataLoader);
    images must be (N, C, H, W) floats in [0, 1]."""
    if isinstance(images, Tensor):
        if labels is None:
            raise InvalidParameterError("expected labels with an images tensor (or a DataLoader of (images, labels))")
        x, y = images, torch.as_tensor(labels)
    else:
        if labels is not None:
            raise InvalidParameterError("expected no labels with a DataLoader: its batches carry them")
        batches = [(torch.as_tensor(b[0]), torch.as_tensor(b[1])) for b in images]
        if not batches:
            raise InvalidParameterError("expected a DataLoader with at least one batch, got none")
        x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    if x.dim() != 4 or not x.is_floating_point():
        raise InvalidParameterError(f"expected images as a float tensor (N, C, H, W), got {tuple(x.shape)} {x.dtype}")
    if len(x) == 0 or len(x) != len(y) or y.dim() != 1:
        raise InvalidParameterError(f"expected one label per image, got {len(x)} images and labels {tuple(y.shape)}")
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 1:
        raise InvalidParameterError(f"expected images in [0, 1] (normalize inside the model), got [{low:g}, {high:g}]")
    return x.float(), y.long()


def user_workload(
    model: nn.Module, x: Tensor, y: Tensor, *, name: str = "user", num_classes: int | None = None
) -> Workload:
    """A :class:`~advbridge.experiments.workload.Workload` of a user's model and images; the number of classes
    from the model's output unless given."""
    if not isinstance(model, nn.Module):
        raise InvalidParameterError(f"expected the model as a torch.nn.Module, got {type(model).__name__}")
    model = model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x, y = x.to(device), y.to(device)
    with torch.no_grad():
        logits = model(x[:1])
    if logits.dim() != 2:
        raise InvalidParameterError(f"expected the model to return logits (N, K), got shape {tuple(logits.shape)}")
    classes = int(logits.shape[1]) if num_classes is None else num_classes
    if classes != logits.shape[1] or int(y.max()) >= classes or int(y.min()) < 0:
        raise InvalidParameterError(
            f"expected labels in 0..{logits.shape[1] - 1} (the model's {logits.shape[1]} outputs), "
            f"got num_classes {classes} and labels {int(y.min())}..{int(y.max())}"
        )
    channels = x.shape[1]
    info = DatasetInfo(
        name=name, family=_family(x), num_classes=classes, in_chans=channels, image_size=x.shape[-1],
        mean=(0.0,) * channels, std=(1.0,) * channels, class_names=tuple(str(k) for k in range(classes)),
    )  # fmt: skip
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).double().mean())
    card = {"model": type(model).__name__, "accuracy": accuracy, "source": "user"}
    return Workload(model, x, y, info, card)


def compare(
    model: nn.Module,
    images: Tensor | Iterable,
    labels: Tensor | Sequence[int] | None = None,
    *,
    attack: str = "deepfool",
    libraries: str | Sequence[str] = "all",
    norm: str | None = None,
    eps: float | None = None,
    steps: int | None = None,
    step_size: float | None = None,
    random_start: bool = False,
    seed: int = 0,
    batch_size: int | None = None,
    num_classes: int | None = None,
    eps_grid: Sequence[float] | None = None,
    show_progress: bool = False,
    **attack_options: Any,
) -> CompareRun:
    """Run ``attack`` by our implementation and each of ``libraries`` (``"all"``, ``"own,art"`` or a list) on
    ``model`` and the images, as ``cli.py compare`` does.

    ``eps`` defaults to the standard budget of the images' kind (MNIST-like 1×28×28: L∞ 0.3; up to 32 px:
    8/255; larger: 4/255) for FGSM and PGD; minimal-norm attacks (DeepFool, DDN) are unbounded unless given
    one, with robust accuracy at each of ``eps_grid``. ``attack_options``: the other :class:`AttackSpec`
    fields (``overshoot``, ``candidates``, ``gamma``, ``init_norm``, ``levels``, ``targeted``). Bad input raises
    an :class:`~advbridge.bridge.errors.AdvBridgeError` subclass before any attack runs.
    """
    from advbridge.experiments.compare import compare_workload, parse_libraries
    from advbridge.experiments.minimal import DEFAULT_GRID_FACTORS

    check_name("attack", attack, ATTACKS)
    names = parse_libraries(libraries)
    x, y = as_tensors(images, labels)
    workload = user_workload(model, x, y, num_classes=num_classes)
    chosen = Norm.parse(norm) if norm else DEFAULT_NORMS[attack]
    if eps is None and attack in ("fgsm", "pgd"):
        eps = standard_eps(workload.info.family, chosen)
    spec = AttackSpec(
        attack=attack, norm=chosen, eps=eps, steps=steps, step_size=step_size, random_start=random_start, seed=seed,
        **attack_options,
    )  # fmt: skip
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise InvalidParameterError(f"expected batch_size as an int >= 1 or None, got {batch_size!r}")
    grid = None
    if spec.minimal:
        standard = standard_eps(workload.info.family, chosen)
        grid = [float(e) for e in eps_grid] if eps_grid is not None else [f * standard for f in DEFAULT_GRID_FACTORS]
        if not grid or any(not e > 0 for e in grid):
            raise InvalidParameterError(f"expected eps_grid as eps values > 0, got {eps_grid!r}")
    return compare_workload(spec, names, workload, eps_grid=grid, batch_size=batch_size, show_progress=show_progress)

"""The runner: everything that must be identical for every library, and the one harness every attack runs through.

:func:`measure_call` is the harness: the attacked module in eval mode (its mode restored), its forward and
backward passes counted with module hooks (removed in ``finally``), the call timed, the output checked (same
shape/dtype/device, finite, inside [0, 1], inside the eps ball of a budget attack, the caller's tensor untouched,
the model still in eval mode). :func:`run_attack` runs a library's spec through it, seeding every RNG (torch,
numpy, random) with ``spec.seed``, then recomputes success on the same model (never trusting a library's flag);
:func:`run_batch_attack` runs an attack of ours (adaptive rows, audit remedies) through it.

One library's attempt is one of three types (:data:`AttackResult`): :class:`Ran` (points measured, every
per-sample tensor present; ``problems`` names the failed checks), :class:`Unsupported` (the library lacks the
spec), :class:`Failed` (the library raised). ``status`` names the kind in the tables.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from advbridge.bridge.adapters import Adapter, get_adapter
from advbridge.bridge.errors import UnsupportedAttackError
from advbridge.bridge.spec import AttackSpec
from advbridge.bridge.validation import check_images, check_labels
from advbridge.own_attacks._common import loss_input_gradient

log = logging.getLogger(__name__)

#: Slack allowed on the eps-ball check: float32 rounding of x + δ.
EPS_ABS_TOL = 1e-6
EPS_REL_TOL = 1e-5


@dataclass
class PassCounter:
    """Counts images through forward and backward passes of a module (adv-lib's ``run_attack`` idea)."""

    forward_calls: int = 0
    forward_images: int = 0
    backward_calls: int = 0
    backward_images: int = 0
    _handles: list = field(default_factory=list, repr=False)

    def attach(self, model: nn.Module) -> PassCounter:
        """Count with a forward hook; a backward pass is counted when the gradient reaches the model's
        output (a tensor hook: cheaper than ``register_full_backward_hook``, which wraps every call)."""

        def on_backward(grad: Tensor) -> None:
            self.backward_calls += 1
            self.backward_images += len(grad)

        def on_forward(module: nn.Module, args: tuple, output: Tensor) -> None:
            self.forward_calls += 1
            self.forward_images += len(args[0])
            if isinstance(output, Tensor) and output.requires_grad:
                output.register_hook(on_backward)

        self._handles = [model.register_forward_hook(on_forward)]
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


@dataclass(frozen=True, kw_only=True)
class _Attempt:
    """What every library's attempt at one spec on one batch has: who ran what, the wall time of the call and
    the images through the model's forward and backward passes (0 when nothing ran)."""

    library: str
    version: str
    spec: AttackSpec
    seconds: float = math.nan
    forward_images: int = 0
    backward_images: int = 0


@dataclass(frozen=True, kw_only=True)
class Ran(_Attempt):
    """The attack returned points and the runner measured them. Per-sample tensors are on the CPU.

    ``clean_correct`` marks the samples an attack has to work on: correctly classified (untargeted) or
    not already predicted as the target (targeted). ``success`` is recomputed on the model, from the
    predicted classes ``clean_pred`` and ``adv_pred``. ``problems``: the output checks it failed (shape,
    range, eps ball, side effects), ``"; "``-joined; empty for a valid output.
    """

    x_adv: Tensor
    clean_correct: Tensor
    success: Tensor
    clean_pred: Tensor
    adv_pred: Tensor
    l2: Tensor
    linf: Tensor
    problems: str = ""

    @property
    def status(self) -> str:
        """``"ok"``, or ``"invalid"`` when the output failed a check."""
        return "invalid" if self.problems else "ok"

    @property
    def reason(self) -> str:
        return self.problems

    @property
    def n(self) -> int:
        return len(self.success)


@dataclass(frozen=True, kw_only=True)
class Unsupported(_Attempt):
    """The library lacks the spec (``reason`` says what): nothing ran."""

    reason: str
    status: ClassVar[str] = "unsupported"
    n: ClassVar[int] = 0


@dataclass(frozen=True, kw_only=True)
class Failed(_Attempt):
    """The library raised (``reason``: the exception): no points."""

    reason: str
    status: ClassVar[str] = "error"
    n: ClassVar[int] = 0


#: One library's run of one spec on one batch: points measured (:class:`Ran`, valid or not), or none
#: (:class:`Unsupported`, :class:`Failed`). ``status`` names the kind in the tables: ok, invalid, unsupported, error.
AttackResult = Ran | Unsupported | Failed


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and ``random``: the RNGs the libraries draw from."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore its train/eval mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def predict(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """Arg-max predictions in eval mode without gradients (mode restored afterwards)."""
    with eval_mode(model), torch.no_grad():
        return torch.cat([model(chunk).argmax(1) for chunk in x.split(batch_size)])


def is_success(pred: Tensor, y: Tensor, targeted: bool) -> Tensor:
    """Untargeted: prediction differs from the label; targeted: prediction equals the target."""
    return pred == y if targeted else pred != y


def eps_ball(spec: AttackSpec) -> tuple[str, float] | None:
    """``(norm, eps)`` of a budget attack's ball; ``None`` for a minimal-norm attack."""
    return None if spec.eps is None or spec.minimal else (spec.norm.value, spec.eps)


def output_problems(x: Tensor, x_adv: Tensor, ball: tuple[str, float] | None, l2: Tensor, linf: Tensor) -> list[str]:
    """What is wrong with an attack's output: shape/dtype/device, [0, 1] range, the eps ``ball``
    (``(norm, eps)``, ``None``: unbounded)."""
    problems = []
    if x_adv.shape != x.shape or x_adv.dtype != x.dtype or x_adv.device != x.device:
        problems.append(
            f"output {tuple(x_adv.shape)}/{x_adv.dtype}/{x_adv.device} != input {tuple(x.shape)}/{x.dtype}/{x.device}"
        )
    if not torch.isfinite(x_adv).all():
        problems.append("output has NaN/Inf")
    elif float(x_adv.min()) < 0 or float(x_adv.max()) > 1:
        problems.append(f"output outside [0, 1]: min {float(x_adv.min()):.3g}, max {float(x_adv.max()):.3g}")
    if ball is not None:
        norm, eps = ball
        dist = linf if norm == "Linf" else l2
        limit = eps * (1 + EPS_REL_TOL) + EPS_ABS_TOL
        if float(dist.max()) > limit:
            problems.append(f"perturbation outside the eps ball: max {norm} {float(dist.max()):.6g} > {eps:.6g}")
    return problems


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued kernels (CUDA runs them asynchronously): a clock read after this counts them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class BatchRun(NamedTuple):
    """What :func:`measure_call` measured: the output, the images through the attacked module's forward and
    backward passes, the wall time of the call, and the output checks it failed (``"; "``-joined, empty: none)."""

    x_adv: Tensor
    forward_images: int
    backward_images: int
    seconds: float
    problems: str = ""


def measure_call(
    call: Callable[[], Tensor],
    model: nn.Module,
    x: Tensor,
    *,
    ball: tuple[str, float] | None = None,
    during: Callable[[], AbstractContextManager] | None = None,
) -> BatchRun:
    """The harness every attack of compare, defend and audit runs through: ``call()`` (an attack on ``x``)
    with ``model`` (the module it attacks) in eval mode and its train/eval mode restored afterwards, its forward
    and backward passes counted with hooks (removed in ``finally``), the call timed (``during``: a context
    entered around it only, such as the audit's path tracker), then the output checked: same
    shape/dtype/device as ``x``, finite, inside [0, 1], inside the eps ``ball`` ``(norm, eps)`` when given,
    the caller's ``x`` untouched, the model still in eval mode when the call returned. The RNGs are left as
    they are (the caller seeds). An exception of ``call`` propagates.
    """
    x_before = x.clone()
    was_training = model.training
    model.eval()
    counter = PassCounter().attach(model)
    try:
        synchronize(x.device)
        start = time.perf_counter()
        with nullcontext() if during is None else during():
            x_adv = call().detach()
        synchronize(x.device)
        seconds = time.perf_counter() - start
    finally:
        counter.detach()
        mode_after = model.training
        model.train(was_training)
    delta = (x_adv - x).flatten(1)
    problems = output_problems(x, x_adv, ball, delta.norm(p=2, dim=1), delta.abs().amax(dim=1))
    if not torch.equal(x, x_before):
        problems.append("the attack modified the caller's input tensor")
    if mode_after is not False:
        problems.append("the model was not in eval mode when the attack returned")
    return BatchRun(x_adv, counter.forward_images, counter.backward_images, seconds, "; ".join(problems))


def run_attack(
    library: str | Adapter,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec,
    *,
    num_classes: int | None = None,
    seed: int | None = None,
    during: Callable[[], AbstractContextManager] | None = None,
) -> AttackResult:
    """Run ``spec`` with one library on ``(x, y)`` and measure it the same way for every library
    (:func:`measure_call`), then judge it on the same model.

    Args:
        library: a name from :data:`bridge.adapters.LIBRARIES` or an :class:`Adapter`.
        model: maps images in [0, 1] to logits.
        x: clean images in [0, 1].
        y: true labels, or target labels when ``spec.targeted``.
        spec: what to run.
        num_classes: number of logits; inferred from one forward pass when ``None``.
        seed: seed for every RNG; ``None`` = ``spec.seed`` (a batched run derives one per batch).
        during: a context entered around the library's call only (not the runner's own predictions): the
            audit's path tracker records the attack's queries in it.

    Returns:
        :class:`Unsupported` (with the reason) when the library lacks the attack, :class:`Failed` when the
        library raised, else :class:`Ran` (its ``problems`` name the output checks it failed, if any).
    """
    adapter = get_adapter(library) if isinstance(library, str) else library
    check_images(x, in_chans=getattr(model, "in_chans", None))
    if num_classes is None:
        with eval_mode(model), torch.no_grad():
            num_classes = int(model(x[:1]).shape[1])
    y = check_labels(y, len(x), num_classes=num_classes)
    who: dict[str, Any] = {"library": adapter.name, "version": adapter.version(), "spec": spec}
    reason = adapter.unsupported_reason(spec)
    if reason is not None:
        return Unsupported(**who, reason=reason)

    classes = num_classes

    def call() -> Tensor:
        seed_everything(spec.seed if seed is None else seed)
        return adapter.generate(model, x, y, spec, classes)

    try:
        done = measure_call(call, model, x, ball=eps_ball(spec), during=during)
    except UnsupportedAttackError as exc:
        return Unsupported(**who, reason=str(exc))
    except Exception as exc:  # a library's failure is a row of the table, not a crash of the comparison
        log.warning("%s failed on %s: %s", adapter.name, spec.attack, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        return Failed(**who, reason=f"{type(exc).__name__}: {exc}")

    delta = (done.x_adv - x).flatten(1)
    clean_pred, adv_pred = predict(model, x).cpu(), predict(model, done.x_adv).cpu()
    y = y.cpu()
    return Ran(
        **who,
        seconds=done.seconds,
        forward_images=done.forward_images,
        backward_images=done.backward_images,
        x_adv=done.x_adv.cpu(),
        # untargeted: correctly classified; targeted: not already predicted as the target
        clean_correct=clean_pred != y if spec.targeted else clean_pred == y,
        success=is_success(adv_pred, y, spec.targeted),
        clean_pred=clean_pred,
        adv_pred=adv_pred,
        l2=delta.norm(p=2, dim=1).cpu(),
        linf=delta.abs().amax(dim=1).cpu(),
        problems=done.problems,
    )


class InvalidOutputError(RuntimeError):
    """An attack's output failed the runner's checks (shape, range, eps ball, side effects)."""


def run_batch_attack(
    attack: Callable[[Tensor, Tensor, int], Tensor],
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    seed: int,
    *,
    ball: tuple[str, float] | None = None,
) -> BatchRun:
    """An attack of ours that is no library's spec (an adaptive attack, an audit remedy:
    ``attack(x, y, seed) -> x_adv``) through the same harness as a library's (:func:`measure_call`, on
    ``model``, the module it attacks). The RNGs are left as they are (the caller seeds:
    :func:`experiments.core.executor.run_own`).

    Raises:
        InvalidOutputError: naming every failed check.
    """
    done = measure_call(lambda: attack(x, y, seed), model, x, ball=ball)
    if done.problems:
        raise InvalidOutputError(done.problems)
    return done


def warm_up(model: nn.Module, x: Tensor, y: Tensor) -> None:
    """One untimed forward and input-backward pass, so that one-time kernel set-up (seconds on CPU for
    a new shape) is not charged to whichever library happens to run first."""
    with eval_mode(model):
        loss_input_gradient(model, x, y.long())

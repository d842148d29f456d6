"""The one adapter interface: every library, including our own attacks, sits behind it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from advbridge.bridge.defense_spec import DefenseSpec, TrainingDefenseSpec
from advbridge.bridge.errors import UnsupportedAttackError, UnsupportedDefenseError
from advbridge.bridge.spec import AttackSpec

if TYPE_CHECKING:
    from advbridge.zoo.models import NormalizedClassifier
    from advbridge.zoo.train_config import TrainConfig


class Adapter(ABC):
    """Translate an :class:`AttackSpec` into one library's call and return adversarial images.

    Subclasses set ``name`` (advbridge's name of the library) and ``distribution`` (its PyPI name, for
    the version), list what they cannot do in :meth:`unsupported_reason`, and implement :meth:`_run`.
    A library with defenses also overrides :meth:`defense_unsupported_reason` and :meth:`_build_defense`.
    Everything that must be identical across libraries (eval mode, seeding, timing, pass counting,
    success, norms, range checks) belongs to :mod:`bridge.runner`, not here.
    """

    name: ClassVar[str]
    distribution: ClassVar[str]

    def version(self) -> str:
        try:
            return version(self.distribution)
        except PackageNotFoundError:  # our own attacks are not an installed distribution in a checkout
            return "not installed"

    @abstractmethod
    def unsupported_reason(self, spec: AttackSpec) -> str | None:
        """Why this library cannot run ``spec`` as asked (``None`` if it can). Never emulate a gap."""

    @abstractmethod
    def _run(self, model: nn.Module, x: Tensor, y: Tensor, spec: AttackSpec, num_classes: int) -> Tensor:
        """Run the library's attack; ``y`` holds targets when ``spec.targeted``."""

    def generate(self, model: nn.Module, x: Tensor, y: Tensor, spec: AttackSpec, num_classes: int) -> Tensor:
        """Adversarial images for ``x`` (same shape, dtype and device), or :class:`UnsupportedAttackError`."""
        reason = self.unsupported_reason(spec)
        if reason is not None:
            raise UnsupportedAttackError(f"{self.name} cannot run {describe(spec)}: {reason}")
        x_adv = self._run(model, x, y, spec, num_classes)
        return x_adv.to(device=x.device, dtype=x.dtype)

    #: Why the library has no defenses at all (``None``: it has some; see :meth:`defense_unsupported_reason`).
    no_defenses: ClassVar[str | None] = None

    def defense_unsupported_reason(self, spec: DefenseSpec, backward: str = "exact") -> str | None:
        """Why this library cannot build ``spec`` with that backward pass (``"exact"``: the gradient of the
        library's own forward; ``"bpda"``: the identity), or ``None`` if it can."""
        return self.no_defenses or f"{self.name} has no {spec.defense}"

    def _build_defense(self, spec: DefenseSpec, backward: str) -> nn.Module:
        raise NotImplementedError

    def build_defense(self, spec: DefenseSpec, backward: str = "exact") -> nn.Module:
        """The library's implementation of a resolved ``spec`` as an ``nn.Module`` on [0, 1]: the purifier
        itself (images in, images out), or for a detector the ``nn.ModuleList`` of its squeezers.
        Raises :class:`UnsupportedDefenseError` with the reason when the library lacks it."""
        reason = self.defense_unsupported_reason(spec, backward)
        if reason is not None:
            raise UnsupportedDefenseError(f"{self.name} cannot build {spec.describe()} ({backward} backward): {reason}")
        return self._build_defense(spec, backward)

    def training_unsupported_reason(self, spec: TrainingDefenseSpec, config: TrainConfig) -> str | None:
        """Why this library cannot train a resolved ``spec`` with a resolved ``config``, or ``None``."""
        return self.no_defenses or f"{self.name} has no {spec.defense} trainer"

    def training_spec(self, spec: TrainingDefenseSpec) -> TrainingDefenseSpec:
        """A resolved ``spec`` as this library's trainer runs it (what its cache key and card record)."""
        return spec

    def _train_defense(
        self, config: TrainConfig, spec: TrainingDefenseSpec, *, progress: bool, device: str | torch.device
    ) -> tuple[NormalizedClassifier, dict[str, Any]]:
        raise NotImplementedError

    def train_defense(
        self,
        config: TrainConfig,
        spec: TrainingDefenseSpec,
        *,
        progress: bool = True,
        device: str | torch.device = "cpu",
    ) -> tuple[NormalizedClassifier, dict[str, Any]]:
        """The library's training of the resolved ``config`` with the resolved training-time ``spec`` (not
        cached: :func:`bridge.training.train_defended` caches). Returns ``(model, card)``, the model on
        [0, 1] → logits (deployed at T = 1 for distillation; a ``NormalizedClassifier``, the model cache's
        :func:`zoo.training.load_trained` builds one), in eval mode; the card as
        :func:`zoo.training.train` writes it. Raises :class:`UnsupportedDefenseError` with the reason."""
        reason = self.training_unsupported_reason(spec, config)
        if reason is not None:
            raise UnsupportedDefenseError(f"{self.name} cannot train {spec.describe()}: {reason}")
        return self._train_defense(config, spec, progress=progress, device=device)


def describe(spec: AttackSpec) -> str:
    """A short human name for a spec, e.g. ``'pgd (Linf, targeted)'``."""
    extra = ", targeted" if spec.targeted else ""
    return f"{spec.attack} ({spec.norm.value}{extra})"

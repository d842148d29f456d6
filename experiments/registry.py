"""The defenses ``defend`` evaluates, registered by name the way timm registers models.

A defense family registers the function that evaluates it under each of its names::

    @register_defense("bit-depth", "median", "resample", kind="squeezer", summary="...")
    def defend_squeezer(options) -> Outcome: ...

:func:`get_defense` finds one by name (an unknown name is refused with the closest names), and
:func:`registered_defenses` lists the registry (``cli.py list``). Each family builds its spec from the options,
checks which libraries implement it, and runs :func:`experiments.engine.evaluate` on its subjects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge.errors import check_name


@dataclass(frozen=True)
class RegisteredDefense:
    """One registered name: its family (``kind``), what it is, and the function that evaluates it."""

    name: str
    kind: str
    summary: str
    run: Callable[[Any], Any]


_REGISTRY: dict[str, RegisteredDefense] = {}


def register_defense(*names: str, kind: str, summary: str) -> Callable[[Callable], Callable]:
    """Register the decorated function as the evaluation of every defense in ``names``."""

    def register(run: Callable) -> Callable:
        for name in names:
            if name in _REGISTRY:
                raise ValueError(f"defense {name!r} is registered twice")
            _REGISTRY[name] = RegisteredDefense(name, kind, summary, run)
        return run

    return register


def _load() -> None:
    import experiments.commands  # noqa: F401  (registers the defense families)


def get_defense(name: str) -> RegisteredDefense:
    """The registered defense ``name``; an unknown one raises :class:`~bridge.errors.UnknownNameError`."""
    _load()
    return _REGISTRY[check_name("defense", name, list(_REGISTRY))]


def registered_defenses() -> list[RegisteredDefense]:
    """Every registered defense, in registration order."""
    _load()
    return list(_REGISTRY.values())

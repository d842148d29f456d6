"""The defenses ``defend`` evaluates, registered by name the way timm registers models.

A defense family registers itself under each of its names::

    @register_defense("bit-depth", "median", "resample", kind="squeezer", summary="...")
    class Squeezers: ...

A family is an object with ``spec(options, dataset_family)`` (the resolved spec, checked), ``check(options,
spec)`` (what else must hold before any work: the libraries that implement it...), ``run(...)`` (its models,
the engine on its subjects, the files) and ``role``/``columns`` (how its table is printed).

:func:`get_defense` finds one by name (an unknown name is refused with the closest names), and
:func:`registered_defenses` lists the registry (``cli.py list``). Each family builds its spec from the options,
checks which libraries implement it, and runs :func:`experiments.engine.evaluate` on its subjects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from advbridge.bridge.errors import check_name


@dataclass(frozen=True)
class RegisteredDefense:
    """One registered name: its ``kind``, what it is, and the family object that evaluates it."""

    name: str
    kind: str
    summary: str
    family: Any


_REGISTRY: dict[str, RegisteredDefense] = {}


def register_defense(*names: str, kind: str, summary: str) -> Callable[[type], type]:
    """Register an instance of the decorated family class as the evaluation of every defense in ``names``."""

    def register(family: type) -> type:
        for name in names:
            if name in _REGISTRY:
                raise ValueError(f"defense {name!r} is registered twice")
            _REGISTRY[name] = RegisteredDefense(name, kind, summary, family())
        return family

    return register


def _load() -> None:
    import advbridge.experiments.defend.families  # noqa: F401  (registers the defense families)


def get_defense(name: str) -> RegisteredDefense:
    """The registered defense ``name``; an unknown one raises :class:`~bridge.errors.UnknownNameError`."""
    _load()
    return _REGISTRY[check_name("defense", name, list(_REGISTRY))]


def registered_defenses() -> list[RegisteredDefense]:
    """Every registered defense, in registration order."""
    _load()
    return list(_REGISTRY.values())

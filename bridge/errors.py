"""Typed exceptions for user errors.

Every error a user can cause (a bad name, a bad number, bad images, a missing file, an attack a library
lacks) raises a subclass of :class:`AdvBridgeError`. The CLI turns these into one line on stderr and exit
code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


class AdvBridgeError(ValueError):
    """Base class of all user-facing errors (a ``ValueError``, so generic handlers still catch it)."""


class UnknownNameError(AdvBridgeError):
    """An unknown attack, library, dataset, model or norm name."""


class InvalidParameterError(AdvBridgeError):
    """A number or option out of its accepted range."""


class InvalidInputError(AdvBridgeError):
    """Images or labels that an attack cannot accept (range, shape, NaN, length)."""


class UnsupportedAttackError(AdvBridgeError):
    """A library that lacks the requested attack, norm or mode."""


class UnsupportedDefenseError(AdvBridgeError):
    """A library that lacks the requested defense, or the requested backward pass of it."""


class DataNotFoundError(AdvBridgeError):
    """Dataset files that are missing or have the wrong layout."""


class CheckpointError(AdvBridgeError):
    """A checkpoint that is missing, corrupt, unsafe or does not match its card."""


class OutputError(AdvBridgeError):
    """An output path that cannot be written (checked before any work is done)."""


def did_you_mean(kind: str, value: object, accepted: Iterable[str]) -> str:
    """One line: ``unknown {kind} 'value'; did you mean 'x'? accepted: a, b, c``."""
    options = sorted(accepted)
    close = difflib.get_close_matches(str(value), options, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    shown = ", ".join(options[:30]) + (f", ... ({len(options)} in all)" if len(options) > 30 else "")
    return f"unknown {kind} {value!r}{hint} accepted: {shown}"


def check_name(kind: str, value: str, accepted: Iterable[str]) -> str:
    """Return ``value`` if it is among ``accepted``, else raise :class:`UnknownNameError`."""
    options = list(accepted)
    if value not in options:
        raise UnknownNameError(did_you_mean(kind, value, options))
    return value


def check_resolved(value: T | None, name: str, what: str) -> T:
    """``value``, a parameter ``name`` that ``what``'s ``resolved()`` fills in; ``None`` (not resolved) raises
    :class:`InvalidParameterError`."""
    if value is None:
        raise InvalidParameterError(f"expected a resolved {what} ({name} is filled in by resolved()), got {name} None")
    return value


def check_names(kind: str, values: str | Iterable[str], accepted: Iterable[str]) -> list[str]:
    """``"own,art"`` (or a list) → the names, each among ``accepted``; an empty list or a name given twice raises
    :class:`InvalidParameterError`, an unknown name :class:`UnknownNameError`."""
    options = list(accepted)
    names = [s.strip() for s in values.split(",")] if isinstance(values, str) else [str(v).strip() for v in values]
    names = [check_name(kind, name, options) for name in names if name]
    if not names:
        raise InvalidParameterError(f"expected at least one {kind} of {', '.join(options)}, got {values!r}")
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise InvalidParameterError(f"expected each {kind} once, got {', '.join(twice)} more than once")
    return names

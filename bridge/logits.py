"""The logits of a model that returns several outputs: a tuple, a list, a named tuple or a dict.

Attacks, libraries and the audit need one tensor ``(N, K)`` of logits. A model returning ``(logits, features)``
or ``{"logits": ..., "aux": ...}`` is wrapped in :class:`LogitsOf`, which picks one output by its index or key
(``cli.py audit --logits KEY_OR_INDEX``, ``advbridge.audit(..., logits=...)``); :func:`select_logits` checks the
choice on one probe batch first, so a key or index the output lacks is refused, with the ones it has, before any
attack. Every other module passes through unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from advbridge.bridge.errors import InvalidParameterError

#: How the choice is spelt, for the messages (the CLI's flag; the API names its keyword ``logits=``).
FLAG = "--logits"


def output_kind(output: object) -> str:
    """A short description of a model's output: ``a tensor``, ``a tuple of 2 outputs``, ``a dict with keys ...``."""
    if isinstance(output, Tensor):
        return "a tensor"
    if isinstance(output, Mapping):
        return f"a {type(output).__name__} with keys {', '.join(repr(str(k)) for k in output)}"
    if isinstance(output, (tuple, list)):
        return f"a {type(output).__name__} of {len(output)} outputs"
    return f"a {type(output).__name__}"


def accepted_choices(output: object) -> list[str]:
    """The keys or indices (as text) that pick one output of ``output``: a mapping's keys, a sequence's indices and
    a named tuple's field names; none for a tensor."""
    if isinstance(output, Mapping):
        return [str(k) for k in output]
    if isinstance(output, (tuple, list)):
        return [str(i) for i in range(len(output))] + list(getattr(output, "_fields", ()))
    return []


def pick(output: object, choice: str | int) -> Any:
    """The element of ``output`` named by ``choice`` (a key, an index, or an index given as text); ``KeyError``
    when it has none."""
    text = str(choice)
    if isinstance(output, Mapping):
        for key in output:
            if key == choice or str(key) == text:
                return output[key]
        raise KeyError(text)
    if isinstance(output, (tuple, list)):
        if text in getattr(output, "_fields", ()):
            return getattr(output, text)
        if (isinstance(choice, int) and not isinstance(choice, bool)) or text.isdigit():
            index = int(text)
            if 0 <= index < len(output):
                return output[index]
    raise KeyError(text)


class LogitsOf(nn.Module):
    """``forward(x) = pick(model(x), choice)``: the logits of a model with several outputs.

    Args:
        model: the module whose output is a tuple, list, named tuple or dict.
        choice: the key (a dict's, a named tuple's field) or index (given as an int or as text) of its logits.

    Shape:
        x: what ``model`` takes; output: the chosen element, ``(N, K)`` logits.

    A detector's ``reject_class`` and a randomized defense's ``randomized`` flag are kept, so the audit still sees
    them; its declared BPDA parts (``preprocess``/``classifier``) are not (they return the model's several outputs).
    """

    def __init__(self, model: nn.Module, choice: str | int) -> None:
        super().__init__()
        self.model, self.choice = model, choice
        for name in ("reject_class", "randomized", "model_name"):
            if hasattr(model, name):
                setattr(self, name, getattr(model, name))

    def forward(self, x: Tensor) -> Tensor:
        return pick(self.model(x), self.choice)

    def extra_repr(self) -> str:
        return f"choice={self.choice!r}"


def select_logits(
    model: nn.Module, choice: str | int | None, probe: Tensor, *, name: str = "the model", flag: str = FLAG
) -> nn.Module:
    """``model`` itself when it returns a tensor, else :class:`LogitsOf` it at ``choice``, checked on ``probe``
    (one batch of its inputs).

    Raises :class:`~advbridge.bridge.errors.InvalidParameterError` (one line) for a model with several outputs and
    no ``choice`` (naming ``flag``), for a ``choice`` its output lacks (naming the accepted ones) and for a choice
    that picks something other than a tensor.
    """
    with torch.no_grad():
        output = model(probe)
    if isinstance(output, Tensor):
        return model
    accepted = accepted_choices(output)
    listed = ", ".join(accepted) if accepted else "none"
    if choice is None:
        raise InvalidParameterError(
            f"expected {name} to return a logits tensor (N, K), got {output_kind(output)}; choose the logits with "
            f"{flag} KEY_OR_INDEX, one of {listed}"
        )
    try:
        chosen = pick(output, choice)
    except KeyError:
        raise InvalidParameterError(
            f"expected {flag} one of {listed} ({name} returns {output_kind(output)}), got {str(choice)!r}"
        ) from None
    if not isinstance(chosen, Tensor):
        raise InvalidParameterError(
            f"expected {flag} to pick a logits tensor of {name}'s output, got {str(choice)!r}: {output_kind(chosen)}"
        )
    return LogitsOf(model, choice).eval()

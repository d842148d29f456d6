"""Print a result table and write it atomically as ``<out>.csv`` and ``<out>.md`` (the header on top)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

import pandas as pd

from advbridge.bridge.errors import AdvBridgeError
from advbridge.bridge.io import OutputPrefix, atomic_write_text


def user_errors_exit_2(main: Callable[..., int]) -> Callable[..., int]:
    """For a script's ``main``: a user error (:class:`~bridge.errors.AdvBridgeError`) prints one line on
    stderr and returns 2, as ``cli.py`` does."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except AdvBridgeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return wrapped


def output_prefix(out: str, default_name: str) -> OutputPrefix:
    """``--out`` of a script as a checked prefix (see :class:`~bridge.io.OutputPrefix`): call it before the
    work, so that an unwritable folder fails in seconds."""
    prefix = OutputPrefix.parse(out, default_name=default_name)
    prefix.check_writable()
    return prefix


def print_and_save(table: pd.DataFrame, header: str, out: OutputPrefix) -> None:
    """Print ``header`` and ``table``; write the table to ``<out>.csv`` and, under ``header``, ``<out>.md``."""
    print(header)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    csv, markdown = out.files([".csv", ".md"])
    atomic_write_text(csv, table.to_csv(index=False))
    atomic_write_text(markdown, f"{header}\n\n" + table.to_markdown(index=False, floatfmt=".3g") + "\n")
    print(f"wrote {csv}, {markdown}")

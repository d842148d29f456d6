"""Print a result table and write it atomically as ``<out>.csv`` and ``<out>.md`` (the header on top)."""

from __future__ import annotations

import pandas as pd

from bridge.io import atomic_write_text


def print_and_save(table: pd.DataFrame, header: str, out: str) -> None:
    """Print ``header`` and ``table``; write the table to ``<out>.csv`` and, under ``header``, ``<out>.md``."""
    print(header)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    atomic_write_text(f"{out}.csv", table.to_csv(index=False))
    atomic_write_text(f"{out}.md", f"{header}\n\n" + table.to_markdown(index=False, floatfmt=".3g") + "\n")

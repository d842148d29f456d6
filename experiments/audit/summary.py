"""One Markdown table from the JSON files of several audits (docs/audit.md is made with it):

    python -m advbridge.experiments.audit.summary results/audit-*.json

Per audit: what was audited (and its surrogate), the threat model, clean accuracy, the worst case of the naive
white-box rows (the gradient attacks on the model as it is: what an evaluation without transfer, black-box
attacks or remedies reports), of the naive cascade, and after the remedies; the indicators raised, each with its
remedy; those still raised after it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from advbridge.bridge.io import read_json


def summary(paths: Sequence[str | Path]) -> pd.DataFrame:
    """One row per audit JSON (``<out>.json`` of ``cli.py audit``)."""
    rows = []
    for path in paths:
        info = read_json(path, "an audit's JSON")
        config = info["config"]
        raised = {name: r for name, r in info["indicators"].items() if r["raised"]}
        rows.append({
            "audited": info.get("audited", info.get("model")),
            "surrogate": info.get("surrogate") or "",
            "threat": f"{config['norm']} {config['eps']:g}",
            "n": info["n"],
            "clean": info["clean_accuracy"],
            "white-box naive": info.get("worst_case_robust_accuracy_white_box", float("nan")),
            "naive cascade": info["worst_case_robust_accuracy_naive"],
            "worst case": info["worst_case_robust_accuracy"],
            "indicators raised (remedy)": "; ".join(f"{name} ({r['remedy']})" for name, r in raised.items()),
            "still raised": ", ".join(info["indicators_stayed_raised"]),
        })  # fmt: skip
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", nargs="+", help="audit JSON files")
    args = parser.parse_args(argv)
    print(summary(args.json).to_markdown(index=False, floatfmt=".2f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

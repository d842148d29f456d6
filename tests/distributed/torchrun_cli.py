"""Runs ``cli.main`` once per command line, in one ``torchrun`` launch (the process group joined once).

    torchrun --standalone --nproc_per_node=2 tests/distributed/torchrun_cli.py COMMANDS.json

``COMMANDS.json``: a list of argument lists, as ``cli.py`` takes them. Exits with the first non-zero code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import cli  # noqa: E402

if __name__ == "__main__":
    for argv in json.loads(Path(sys.argv[1]).read_text()):
        code = cli.main(argv)
        if code:
            sys.exit(code)

"""``python cli.py …`` from a checkout: the ``advbridge`` command (:mod:`advbridge.cli`)."""

import sys

from advbridge.cli import main

if __name__ == "__main__":
    sys.exit(main())

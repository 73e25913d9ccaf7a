"""The ``duplex`` console script (``python -m duplex.cli`` too): see :mod:`duplex.commands`."""

from __future__ import annotations

import sys

from duplex.commands import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())

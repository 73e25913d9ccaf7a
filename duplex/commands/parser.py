"""The argument parser every command uses, and the exit statuses."""

from __future__ import annotations

import argparse
from typing import NoReturn

EXIT_OK = 0
EXIT_DIFFERENT = 1
"""A difference or a failed check, for CI (replay --compare, test-scenarios, models)."""
EXIT_USAGE = 2
"""Bad input: a flag, a file, a config value. One line on stderr, never a traceback."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")

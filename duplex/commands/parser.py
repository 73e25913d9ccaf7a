"""The argument parser every command uses, and the exit statuses."""

from __future__ import annotations

import argparse
from typing import NoReturn

EXIT_OK = 0
EXIT_DIFFERENT = 1
"""A difference or a failed check, for CI (replay --compare, test-scenarios, models)."""
EXIT_USAGE = 2
"""Bad input: a flag, a file, a config value. One line on stderr, never a traceback."""
EXIT_INCOMPLETE = 1
"""A conversation ran but its session could not be fully written (disk full, ...):
``duplex: session incomplete: <reason>`` on stderr."""
EXIT_INTERRUPTED = 130
"""Stopped by SIGINT (Ctrl-C) or SIGTERM, alike: 128 + SIGINT, the shell's status for
Ctrl-C. A conversation stops cleanly and its session is closed and readable."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")

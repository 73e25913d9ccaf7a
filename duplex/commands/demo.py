"""``duplex demo``: the packaged demo, a scripted user talking to the agent, with a barge-in.

Exit status: 0 the conversation ran (and its session was recorded whole); 1 the session
is incomplete (a write failed, e.g. a full disk: what was written before is kept);
2 bad input (refused before the models load); 130 stopped by SIGINT or SIGTERM (the
session is closed and readable).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from duplex.commands.common import add_config_arguments, add_session_arguments, load_cfg
from duplex.commands.run import converse

DEMO_SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "demo.toml"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_session_arguments(p, "sessions/<time>-run")
    add_config_arguments(p)


def run(args: argparse.Namespace) -> int:
    return converse(args, load_cfg(args), None, str(DEMO_SCRIPT))

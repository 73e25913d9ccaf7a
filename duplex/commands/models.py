"""``duplex models``: each configured stage, whether its weights are present, and where from.

Exit status: 0 when every stage's weights are present, 1 when one is missing. Nothing is
downloaded; an ``openai`` endpoint is probed.
"""

from __future__ import annotations

import argparse

from duplex.commands.common import EXIT_DIFFERENT, add_config_arguments, load_cfg
from duplex.resources import describe_models, render_models
from duplex.stages.openai_llm import probe_server



def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)


def run(args: argparse.Namespace) -> int:
    rows = describe_models(load_cfg(args), probe=probe_server)
    print(render_models(rows))
    return 0 if all(r.present for r in rows) else EXIT_DIFFERENT

"""``duplex models``: what each stage of a profile loads, and where it comes from.

A thin CLI adapter kept only until the commands layer (issue 14) takes it over: every
look-up lives in :mod:`duplex.resources` (``describe_models``, ``describe_profiles``,
``render_models``); this module only loads the config and prints.
"""

from __future__ import annotations

from duplex.config import Config
from duplex.resources import describe_models, render_models
from duplex.stages.openai_llm import probe_server


def models_main(cfg: Config) -> int:
    """Print the ``duplex models`` table; 0 when every stage's weights are present, else 1."""
    rows = describe_models(cfg, probe=probe_server)
    print(render_models(rows))
    return 0 if all(r.present for r in rows) else 1

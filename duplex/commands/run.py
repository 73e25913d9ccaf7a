"""``duplex run``: one conversation, headless, from a WAV or a scripted user.

Exit status: 0 the conversation ran (and its session was recorded whole); 1 the session
is incomplete (a write failed, e.g. a full disk: what was written before is kept);
2 bad input (refused before the models load); 130 stopped by SIGINT or SIGTERM (the
session is closed and readable).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from duplex.app import STOP_SIGNALS, ConsolePrinter, RunResult, format_latency, make_source, run_conversation
from duplex.audio.sink import WavSink
from duplex.commands.common import (
    EXIT_INCOMPLETE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    add_config_arguments,
    add_session_arguments,
    load_all_models,
    load_cfg,
    session_dir,
)
from duplex.config import Config
from duplex.errors import ConfigError
from duplex.simuser import load_script
from duplex.stages.speaker import mode_line


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", "-i", help="the user's audio (any WAV/FLAC; resampled to 16 kHz mono)")
    p.add_argument("--simulate", "-s", help="a simulated-user script (TOML)")
    add_session_arguments(p, "sessions/<time>-run")
    p.add_argument("--agent-wav", help="with --no-record: write what was played here")
    p.add_argument("--realtime", action="store_true", help="pace the input on the wall clock (live timing)")
    p.add_argument("--quiet", "-q", action="store_true", help="no transcript on stdout")
    add_config_arguments(p)


def run(args: argparse.Namespace) -> int:
    cfg = load_cfg(args)
    return converse(args, cfg, args.input, args.simulate, realtime=args.realtime, quiet=args.quiet,
                    agent_wav=args.agent_wav)


def converse(args: argparse.Namespace, cfg: Config, input_wav: str | None, simulate: str | None, *,
             realtime: bool = False, quiet: bool = False, agent_wav: str | None = None) -> int:
    """Check the input, load the models, hold the conversation, print what happened."""
    if not input_wav and not simulate:
        raise ConfigError("give --input USER.wav or --simulate SCRIPT.toml")
    if input_wav:
        make_source(input_wav, simulate, None, False)  # fail fast on a bad file, before loading models
    if simulate:
        load_script(simulate)
    with session_dir(args, cfg, "run") as out:
        models = load_all_models(cfg)
        if quiet or not (cfg.speaker.enabled and models.speaker_gate is not None):
            # A loaded gate announces itself in the transcript (the engine's Notice).
            print(mode_line(cfg.speaker, models.speaker_gate))  # on stdout: stderr is for problems
        source = make_source(input_wav, simulate, models, realtime)
        printer = [] if quiet else [ConsolePrinter()]
        # With a session, the recorder writes agent.wav into it; --agent-wav is for --no-record.
        sink = WavSink(agent_wav) if out is None and agent_wav else None
        result = asyncio.run(run_conversation(cfg, models, source, session_dir=out, subscribers=printer, sink=sink,
                                              stop_signals=STOP_SIGNALS))
    print_summary(result)
    return report_end(out, result.incomplete, result.stopped_by)


def print_summary(result: RunResult) -> None:
    st = result.stats
    print(f"\n{st.turns} agent turns, {st.barge_ins} barge-ins, {st.backchannels} user backchannels, "
          f"{st.agent_backchannels} agent backchannels")
    for lat in st.latencies:
        print(f"  turn {lat.turn}: {format_latency(lat)}")


def report_end(out: Path | None, incomplete: str | None, stopped_by: str | None) -> int:
    """Say how a conversation ended, honestly, and return the exit status.

    An incomplete session (a write failed) is one line on stderr and
    :data:`EXIT_INCOMPLETE`, never "session recorded"; a conversation stopped by
    SIGINT or SIGTERM is one line on stderr and :data:`EXIT_INTERRUPTED`.
    """
    stopped = f" (stopped by {stopped_by})" if stopped_by else ""
    if incomplete:
        print(f"duplex: session incomplete: {incomplete}{stopped}; what was written before it is in {out}/",
              file=sys.stderr)
        return EXIT_INCOMPLETE
    recorded = f"session recorded in {out}/ (mic.wav, agent.wav, events.jsonl, session.json)" if out else ""
    if stopped_by:
        print(f"duplex: stopped by {stopped_by}" + (f"; {recorded}" if recorded else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    if recorded:
        print(recorded)
    return EXIT_OK

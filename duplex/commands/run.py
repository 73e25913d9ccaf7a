"""``duplex run``: one conversation, headless, from a WAV or a scripted user."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from duplex.app import ConsolePrinter, RunResult, format_latency, make_source, run_conversation
from duplex.audio.sink import WavSink
from duplex.commands.common import add_config_arguments, load_all_models, load_cfg, session_dir
from duplex.config import Config
from duplex.errors import ConfigError
from duplex.simuser import load_script



def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", "-i", help="the user's audio (any WAV/FLAC; resampled to 16 kHz mono)")
    p.add_argument("--simulate", "-s", help="a simulated-user script (TOML)")
    p.add_argument("--out", "-o", help="session directory to write (default: sessions/<time>-run)")
    p.add_argument("--no-record", action="store_true", help="do not record a session")
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
    out = session_dir(args, cfg, "run")
    models = load_all_models(cfg)
    source = make_source(input_wav, simulate, models, realtime)
    printer = [] if quiet else [ConsolePrinter()]
    # With a session, the recorder writes agent.wav into it; --agent-wav is for --no-record.
    sink = WavSink(agent_wav) if out is None and agent_wav else None
    result = asyncio.run(run_conversation(cfg, models, source, session_dir=out, subscribers=printer, sink=sink))
    print_summary(result, out)
    return 0


def print_summary(result: RunResult, out: Path | None) -> None:
    st = result.stats
    print(f"\n{st.turns} agent turns, {st.barge_ins} barge-ins, {st.backchannels} user backchannels, "
          f"{st.agent_backchannels} agent backchannels")
    for lat in st.latencies:
        print(f"  turn {lat.turn}: {format_latency(lat)}")
    if out is not None:
        print(f"session recorded in {out}/ (mic.wav, agent.wav, events.jsonl, session.json)")

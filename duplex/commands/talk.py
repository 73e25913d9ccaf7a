"""``duplex talk``: the terminal UI on the microphone (or ``--simulate`` / ``--input``).

Everything a user can get wrong is checked before the models load and before the
terminal switches to the app, so it prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from duplex.app import make_source
from duplex.audio.sink import PyAudioSink
from duplex.audio.source import AudioSource, MicSource
from duplex.commands.common import (
    EXIT_USAGE,
    add_config_arguments,
    add_session_arguments,
    load_all_models,
    load_cfg,
    session_dir,
    session_failure,
)
from duplex.commands.run import report_end
from duplex.config import Config
from duplex.errors import AudioError
from duplex.simuser import load_script
from tui.cli import TuiOutcome, live_audio_available, run_tui

NO_AUDIO = "no sound card / PyAudio not available: try duplex talk --simulate examples/demo.toml"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--simulate", "-s", help="a simulated-user script instead of the microphone")
    p.add_argument("--input", "-i", help="a WAV instead of the microphone (paced in real time)")
    add_session_arguments(p, "sessions/<time>-talk")
    add_config_arguments(p)


def run(args: argparse.Namespace, pyaudio_module: Any = None) -> int:
    cfg = load_cfg(args)
    simulate, wav = getattr(args, "simulate", None), getattr(args, "input", None)
    live = not simulate and not wav
    if live and not live_audio_available(pyaudio_module):
        print(f"duplex: {NO_AUDIO}", file=sys.stderr)
        return EXIT_USAGE
    if wav:
        make_source(wav, simulate, None, True)  # a bad file or both flags fail here, before the models load
    elif simulate:
        load_script(simulate)  # a missing or invalid script fails here too
    with session_dir(args, cfg, "talk") as out:
        code = converse(cfg, out, live, wav, simulate, pyaudio_module)
    if code != 0 or out is None or not (out / "session.json").exists():
        return code
    return report_end(out, session_failure(out), None)


def converse(cfg: Config, out: Path | None, live: bool, wav: str | None, simulate: str | None,
             pyaudio_module: Any) -> int:
    """Load the models and hold the conversation in the terminal UI."""
    models = load_all_models(cfg)
    sink = None
    source: AudioSource
    if live:
        source = MicSource(max_queue=cfg.engine.mic_queue_frames, pyaudio_module=pyaudio_module)
        try:
            sink = PyAudioSink(pyaudio_module=pyaudio_module)
        except AudioError:
            print(f"duplex: {NO_AUDIO}", file=sys.stderr)
            return EXIT_USAGE
        title = "duplex talk (microphone)"
    else:
        source = make_source(wav, simulate, models, realtime=True)
        title = f"duplex talk --{'simulate' if simulate else 'input'} {Path(simulate or wav or '').name}"
    return tui_exit(run_tui(cfg, models, source, out, title, sink=sink))


def tui_exit(outcome: TuiOutcome) -> int:
    """The exit status of a terminal-UI run; a conversation that failed says why, once
    the terminal is back."""
    if outcome.error:
        print(f"duplex: error: {outcome.error}", file=sys.stderr)
        return 1
    return outcome.code

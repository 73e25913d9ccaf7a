"""``duplex talk`` (the microphone, ``--simulate`` or ``--input``) and :func:`run_tui` for replays.

Everything a user can get wrong is checked before the models load and before the
terminal switches to the app, so it prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from duplex.errors import AudioError

if TYPE_CHECKING:
    from duplex.audio.sink import AudioSink
    from duplex.audio.source import AudioSource
    from duplex.config import Config
    from duplex.engine import Models

EXIT_USAGE = 2
NO_AUDIO = "no sound card / PyAudio not available: try duplex talk --simulate examples/demo.toml"


def run_tui(cfg: Config, models: Models, source: AudioSource, session_dir: Path | None, title: str,
            sink: AudioSink | None = None) -> int:
    """Run one conversation in the terminal UI until the user quits; returns the exit code.

    Args:
        cfg: the validated profile.
        models: loaded models.
        source: the user's audio (a microphone, a paced file, a scripted user, a replay).
        session_dir: record the session here, or ``None``.
        title: shown in the state bar (e.g. ``duplex replay SESSION``).
        sink: where the agent's audio is played (default: nowhere but the recording).
    """
    from tui.app import DuplexApp
    from tui.session import LiveSession

    session = LiveSession(cfg, models, source, session_dir, sink=sink, title=title)
    app = DuplexApp(session)
    code = app.run()
    if app.finish_error:
        print(f"duplex: error: {app.finish_error}", file=sys.stderr)
        return 1
    return int(code or 0)


def live_audio_available(pyaudio_module: Any = None) -> bool:
    """PyAudio imports and sees at least one input and one output device."""
    mod = pyaudio_module
    if mod is None:
        try:
            import pyaudio as mod  # type: ignore[no-redef]
        except ImportError:
            return False
    try:
        pa = mod.PyAudio()
    except Exception:  # PortAudio raises its own errors when there is no sound system
        return False
    try:
        pa.get_default_input_device_info()
        pa.get_default_output_device_info()
        return True
    except OSError:
        return False
    finally:
        pa.terminate()


def _session_dir(args: argparse.Namespace, cfg: Config) -> Path | None:
    from duplex.app import new_session_dir

    if getattr(args, "out", None):
        return Path(args.out)
    if not cfg.recording.enabled:
        return None
    return new_session_dir(cfg.recording.dir, "talk")


def talk_main(args: argparse.Namespace, pyaudio_module: Any = None) -> int:
    """``duplex talk [--simulate SCRIPT | --input USER.wav] [--out DIR] [--no-record] ...``"""
    from duplex.app import make_source
    from duplex.cli import load_cfg
    from duplex.engine import load_models

    cfg = load_cfg(args)
    simulate, wav = getattr(args, "simulate", None), getattr(args, "input", None)
    live = not simulate and not wav
    if live and not live_audio_available(pyaudio_module):
        print(f"duplex: {NO_AUDIO}", file=sys.stderr)
        return EXIT_USAGE
    if wav:
        make_source(wav, simulate, None, True)  # a bad file or both flags fail here, before the models load
    elif simulate:
        from duplex.simuser import load_script

        load_script(simulate)  # a missing or invalid script fails here too
    out = _session_dir(args, cfg)
    print(f"duplex: loading models ({cfg.asr.backend}, {cfg.llm.backend}, {cfg.tts.backend}, "
          f"policy {cfg.policy.name})...", file=sys.stderr)
    models = load_models(cfg)
    sink = None
    if live:
        from duplex.audio.sink import PyAudioSink
        from duplex.audio.source import MicSource

        source: Any = MicSource(max_queue=cfg.engine.mic_queue_frames, pyaudio_module=pyaudio_module)
        try:
            sink = PyAudioSink(pyaudio_module=pyaudio_module)
        except AudioError:
            print(f"duplex: {NO_AUDIO}", file=sys.stderr)
            return EXIT_USAGE
        title = "duplex talk (microphone)"
    else:
        source = make_source(wav, simulate, models, realtime=True)
        title = f"duplex talk --{'simulate' if simulate else 'input'} {Path(simulate or wav).name}"
    code = run_tui(cfg, models, source, out, title, sink=sink)
    if out is not None and out.exists():
        print(f"session recorded in {out}/ (mic.wav, agent.wav, events.jsonl, session.json)")
    return code

"""How commands start the terminal UI: :func:`run_tui` (``duplex talk``, ``duplex replay
--tui``) and :func:`live_audio_available`. Argument parsing and printing live in
:mod:`duplex.commands`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from duplex.audio.sink import AudioSink
from duplex.audio.source import AudioSource
from duplex.config import Config
from duplex.stages.factory import Models
from tui.app import DuplexApp
from tui.session import LiveSession


@dataclass(frozen=True, slots=True)
class TuiOutcome:
    """How a terminal-UI run ended: the app's exit code, or why the conversation failed."""

    code: int
    error: str | None = None


def run_tui(cfg: Config, models: Models, source: AudioSource, session_dir: Path | None, title: str,
            sink: AudioSink | None = None) -> TuiOutcome:
    """Run one conversation in the terminal UI until the user quits.

    Args:
        cfg: the validated profile.
        models: loaded models.
        source: the user's audio (a microphone, a paced file, a scripted user, a replay).
        session_dir: record the session here, or ``None``.
        title: shown in the state bar (e.g. ``duplex replay SESSION``).
        sink: where the agent's audio is played (default: nowhere but the recording).
    """
    session = LiveSession(cfg, models, source, session_dir, sink=sink, title=title)
    app = DuplexApp(session)
    code = app.run()
    return TuiOutcome(int(code or 0), app.finish_error or None)


def live_audio_available(pyaudio_module: Any = None) -> bool:
    """PyAudio imports and sees at least one input and one output device."""
    mod = pyaudio_module
    if mod is None:
        try:
            import pyaudio as mod  # type: ignore[no-redef]  # optional [mic] extra
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

"""``duplex talk``: the terminal UI on the microphone (or ``--simulate`` / ``--input``).

Everything a user can get wrong is checked before the models load and before the
terminal switches to the app, so it prints one line and exits 2.

Exit status: 0 the conversation ran and its session was recorded whole (or ``q`` ended
it); 1 the conversation failed, or its session is incomplete; 2 bad input; 130 stopped
by SIGINT or SIGTERM: the conversation ends as if ``q`` were pressed, the session
closes whole, the terminal is given back, and one line says so (as ``duplex run``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from duplex.app import STOP_SIGNALS, make_source
from duplex.audio.sink import PyAudioSink
from duplex.audio.source import AudioSource, MicSource
from duplex.commands.common import (
    EXIT_INTERRUPTED,
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
from tui.app import DuplexApp
from tui.cli import TuiOutcome, live_audio_available
from tui.session import LiveSession

NO_AUDIO = "no sound card / PyAudio not available: try duplex talk --simulate examples/demo.toml"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--simulate", "-s", help="a simulated-user script instead of the microphone")
    p.add_argument("--input", "-i", help="a WAV instead of the microphone (paced in real time)")
    add_session_arguments(p, "sessions/<time>-talk")
    add_config_arguments(p)


def run(args: argparse.Namespace, pyaudio_module: Any = None, headless: bool = False) -> int:
    """``pyaudio_module`` and ``headless`` are the seams tests use: a stand-in PortAudio,
    and the app run without a terminal."""
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
    stop = TalkStop()
    with session_dir(args, cfg, "talk") as out:
        code = converse(cfg, out, live, wav, simulate, pyaudio_module, stop=stop, headless=headless)
    recorded = out is not None and (out / "session.json").exists()
    if stop.stopped_by is not None and code in (0, EXIT_INTERRUPTED):
        return report_end(out if recorded else None, session_failure(out) if recorded and out else None,
                          stop.stopped_by)
    if code != 0 or out is None or not recorded:
        return code
    return report_end(out, session_failure(out), None)


def converse(cfg: Config, out: Path | None, live: bool, wav: str | None, simulate: str | None,
             pyaudio_module: Any, *, stop: TalkStop | None = None, headless: bool = False) -> int:
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
    # tui.cli.run_tui, with the stop signals taken over while the app runs.
    session = LiveSession(cfg, models, source, out, sink=sink, title=title)
    app = DuplexApp(session)
    with stop or TalkStop() as s:
        s.bind(app, session)
        code = app.run(headless=headless)
    return tui_exit(TuiOutcome(int(code or 0), app.finish_error or None))


class TalkStop:
    """SIGINT and SIGTERM during ``duplex talk`` end the conversation as ``q`` does.

    The app owns the event loop (Textual runs it), so the handlers are plain ones: on the
    loop's thread they hand the stop to the loop (``call_soon_threadsafe``), where it
    runs between two callbacks: the app quits as on ``q`` (the conversation ends, the
    recording closes, the terminal is restored) and the session records the signal
    (``session_ended``'s reason: ``stopped by SIGTERM``). A second signal exits the app
    at once; the recorder still closes as the conversation task is cancelled. With no
    loop running yet (models loading), a signal is ``KeyboardInterrupt`` as before.
    The handlers found on entry are put back on exit.
    """

    def __init__(self, signals: Sequence[signal.Signals] = STOP_SIGNALS) -> None:
        self.signals = tuple(signals)
        self.stopped_by: str | None = None
        self._app: Any = None
        self._session: Any = None
        self._previous: dict[signal.Signals, Any] = {}

    def bind(self, app: Any, session: Any) -> None:
        self._app, self._session = app, session

    def __enter__(self) -> TalkStop:
        for sig in self.signals:
            try:
                self._previous[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread: signals stay as they are
                break
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise KeyboardInterrupt from None
        loop.call_soon_threadsafe(self.stop, signal.Signals(signum).name)

    def stop(self, name: str) -> None:
        """On the loop: the first stop quits the app as ``q`` does, a second at once."""
        app = self._app
        if self.stopped_by is not None:
            if app is not None:
                app.exit(EXIT_INTERRUPTED)
            return
        self.stopped_by = name
        if app is not None:
            app.call_later(self._quit, name)

    async def _quit(self, name: str) -> None:
        await self._app.action_quit()
        # After the app's own end ("quit by the user"), so the session says which signal.
        self._session.end(f"stopped by {name}")


def tui_exit(outcome: TuiOutcome) -> int:
    """The exit status of a terminal-UI run; a conversation that failed says why, once
    the terminal is back."""
    if outcome.error:
        print(f"duplex: error: {outcome.error}", file=sys.stderr)
        return 1
    return outcome.code

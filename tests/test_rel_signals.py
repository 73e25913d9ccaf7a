"""SIGTERM in ``duplex talk`` is handled like SIGINT (issue 16, part 3), as in ``duplex run``
(tests/test_cli_faults.py): the conversation ends, the session closes whole and says
which signal ended it, one line on stderr, exit 130, the handlers given back.

No sound card here: the microphone and the speaker are a stand-in PortAudio (the
``pyaudio_module`` seam, as in tests/test_audio_devices.py), and the Textual app runs
headless (the ``headless`` seam) on the real models.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from duplex.audio import FRAME_SAMPLES
from duplex.commands import common, guarded, talk
from duplex.commands import build_parser
from duplex.commands.parser import EXIT_INTERRUPTED
from duplex.session.store import load_session

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parent.parent
GOFORWARD = ROOT / "tests" / "data" / "goforward.wav"


class LivePortAudio:
    """A stand-in ``pyaudio`` with one microphone (speech, then silence, on the wall
    clock) and one speaker (consumes what it is given)."""

    paInt16 = 8
    paContinue = 0

    def __init__(self) -> None:
        x, _ = sf.read(GOFORWARD, dtype="float32")
        x = np.concatenate([np.zeros(8000, np.float32), x, np.zeros(16000 * 60, np.float32)])
        self.frames = [x[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES] for i in range(len(x) // FRAME_SAMPLES)]
        self.played = 0
        self.streams: list[_Stream] = []

    def PyAudio(self) -> Any:  # noqa: N802 - the module's name
        return _PA(self)


class _PA:
    def __init__(self, mod: LivePortAudio) -> None:
        self.mod = mod

    def get_default_input_device_info(self) -> dict[str, Any]:
        return {"name": "stand-in microphone"}

    def get_default_output_device_info(self) -> dict[str, Any]:
        return {"name": "stand-in speaker"}

    def get_device_count(self) -> int:
        return 2

    def open(self, **kw: Any) -> Any:
        s = _Stream(self.mod, kw)
        self.mod.streams.append(s)
        return s

    def terminate(self) -> None:
        pass


class _Stream:
    def __init__(self, mod: LivePortAudio, kw: dict[str, Any]) -> None:
        self.mod, self.kw = mod, kw
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start_stream(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        cb, n = self.kw["stream_callback"], self.kw["frames_per_buffer"]
        t0 = time.monotonic()
        for k, f in enumerate(self.mod.frames):
            if self._stop.is_set():
                return
            if self.kw.get("input"):
                cb((np.clip(f, -1, 1) * 32767).astype("<i2").tobytes(), n, {}, 0)
            else:
                cb(None, n, {}, 0)
                self.mod.played += 1
            time.sleep(max(0.0, t0 + (k + 1) * n / 16000 - time.monotonic()))

    def is_active(self) -> bool:
        return self._thread.is_alive()

    def stop_stream(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def close(self) -> None:
        pass


@pytest.fixture
def loaded(models, monkeypatch):
    monkeypatch.setattr(common, "load_models", lambda cfg, make_policy: models)
    return models


def signal_when_recording(d: Path, sig: signal.Signals, times: int = 1, seconds: float = 2.0) -> threading.Thread:
    """Send ``sig`` to this process (``times`` in a row) once ``d``'s mic.wav holds ``seconds``."""

    def watch() -> None:
        deadline = time.monotonic() + 120
        mic = d / "mic.wav"
        while time.monotonic() < deadline:
            if (d / "session.json").exists() and mic.exists() and mic.stat().st_size >= 44 + int(32000 * seconds):
                for _ in range(times):
                    os.kill(os.getpid(), sig)
                return
            time.sleep(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def talk_live(capsys, d: Path, pa: LivePortAudio) -> tuple[int, list[str]]:
    """``duplex talk --out d`` on the stand-in devices, as ``duplex.cli.main`` runs it."""
    args = build_parser("talk").parse_args(["talk", "--out", str(d), "--policy", "rules"])
    rc = guarded(lambda a: talk.run(a, pyaudio_module=pa, headless=True), args)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    return rc, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_stop_signal_ends_talk_like_run(capsys, tmp_path, loaded, sig):
    d = tmp_path / "s"
    before = {s_: signal.getsignal(s_) for s_ in (signal.SIGINT, signal.SIGTERM)}
    pa = LivePortAudio()
    watcher = signal_when_recording(d, sig)
    t0 = time.monotonic()
    rc, err = talk_live(capsys, d, pa)
    watcher.join(timeout=1)
    assert rc == EXIT_INTERRUPTED, (rc, err)
    assert not any("Traceback" in ln or "interrupted" in ln for ln in err), err
    assert err[-1] == f"duplex: stopped by {sig.name}; session recorded in {d}/ " \
                      "(mic.wav, agent.wav, events.jsonl, session.json)", err
    s = load_session(d)
    assert s.complete and not s.warnings
    assert 2.0 <= s.duration < 20, s.duration  # stopped, not at the end of the 63 s input
    assert s.events[-1].type == "session_ended" and s.events[-1].reason == f"stopped by {sig.name}"
    assert time.monotonic() - t0 < 120
    assert all(not st._thread.is_alive() for st in pa.streams), "a device stream was left running"
    assert {s_: signal.getsignal(s_) for s_ in before} == before


def test_two_signals_exit_at_once_and_the_session_is_still_whole(capsys, tmp_path, loaded):
    d = tmp_path / "s"
    watcher = signal_when_recording(d, signal.SIGTERM, times=2)
    rc, err = talk_live(capsys, d, LivePortAudio())
    watcher.join(timeout=1)
    assert rc == EXIT_INTERRUPTED, (rc, err)
    assert err[-1].startswith(f"duplex: stopped by SIGTERM; session recorded in {d}/"), err
    s = load_session(d)
    assert s.complete and not s.warnings and s.duration < 20


def test_a_signal_with_no_loop_running_is_a_keyboard_interrupt():
    """Before the app's loop runs (models loading) a signal interrupts as Ctrl-C does."""
    stop = talk.TalkStop()
    with pytest.raises(KeyboardInterrupt):
        stop._on_signal(signal.SIGTERM, None)
    assert stop.stopped_by is None

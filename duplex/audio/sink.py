"""Where played audio goes: nowhere, a WAV file, or a PyAudio output device."""

from __future__ import annotations

import collections
import logging
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from duplex.audio import CHUNK_SAMPLES, SAMPLE_RATE
from duplex.audio.wav import IncrementalWav
from duplex.errors import AudioError

log = logging.getLogger(__name__)


class AudioSink(Protocol):
    def write(self, chunk: np.ndarray) -> None: ...
    def close(self) -> None: ...


class NullSink:
    def write(self, chunk: np.ndarray) -> None:
        pass

    def close(self) -> None:
        pass


class WavSink:
    """Everything played, sample-aligned with the input (silence included)."""

    def __init__(self, path: str | Path) -> None:
        self._wav = IncrementalWav(path)

    def write(self, chunk: np.ndarray) -> None:
        self._wav.write(chunk)

    def flush(self) -> None:
        self._wav.flush()

    def close(self) -> None:
        self._wav.close()


class PyAudioSink:
    """A PortAudio output stream in callback mode fed from a small ring of chunks.

    ``write`` never blocks the loop: if the device has not consumed what it was given
    (more than ``max_chunks`` waiting) the oldest chunk is dropped and counted.
    ``pyaudio_module`` is the seam tests use to run this without a sound card.
    """

    def __init__(self, device: int | None = None, max_chunks: int = 8, pyaudio_module: Any = None) -> None:
        pa_mod = pyaudio_module
        if pa_mod is None:
            try:
                import pyaudio as pa_mod
            except ImportError as exc:
                raise AudioError(
                    "live audio needs PyAudio: apt-get install portaudio19-dev && pip install 'duplex[mic]'"
                ) from exc
        self._mod = pa_mod
        self._ring: collections.deque[bytes] = collections.deque()
        self._lock = threading.Lock()
        self.max_chunks = max_chunks
        self.dropped = 0
        self.underruns = 0
        self.consumed = 0
        self._pa = pa_mod.PyAudio()
        try:
            self._stream = self._pa.open(
                format=pa_mod.paInt16, channels=1, rate=SAMPLE_RATE, output=True,
                frames_per_buffer=CHUNK_SAMPLES, output_device_index=device, stream_callback=self._callback,
            )
        except OSError as exc:
            self._pa.terminate()
            raise AudioError(f"cannot open the speaker: {exc}") from exc
        self._stream.start_stream()

    def _callback(self, in_data: Any, frame_count: int, time_info: Any, status: int) -> tuple[bytes, int]:
        with self._lock:
            data = self._ring.popleft() if self._ring else None
        if data is None:
            self.underruns += 1
            data = b"\x00\x00" * frame_count
        self.consumed += len(data) // 2
        return (data, self._mod.paContinue)

    def write(self, chunk: np.ndarray) -> None:
        data = (np.clip(chunk, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        with self._lock:
            if len(self._ring) >= self.max_chunks:
                self._ring.popleft()
                self.dropped += 1
            self._ring.append(data)

    def flush(self) -> None:
        """Drop what the device has not played yet (barge-in)."""
        with self._lock:
            self._ring.clear()

    def close(self) -> None:
        """Stop the device; one that disappeared may refuse (PortAudio's OSError): the
        conversation is over and its session closed already, so that is only logged."""
        for step in (self._stream.stop_stream, self._stream.close, self._pa.terminate):
            try:
                step()
            except OSError as exc:
                log.warning("closing the speaker: %s", exc)

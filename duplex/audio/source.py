"""Audio sources: a WAV file (any rate, any channels) and the live microphone.

A source yields float32 frames of ``FRAME_SAMPLES`` at 16 kHz. File sources run
unpaced (as fast as the engine goes, on the simulated clock) or ``realtime`` (paced on
the event loop's clock, like a microphone). The simulated user is in
:mod:`duplex.simuser`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.audio.wav import read_audio
from duplex.errors import AudioError

log = logging.getLogger(__name__)


class AudioSource(Protocol):
    name: str
    live: bool
    """True when frames arrive on the wall clock (a microphone): the engine then uses a
    monotonic clock and never waits for compute."""

    def frames(self) -> AsyncIterator[np.ndarray]: ...


async def pace(i: int, t0: float) -> None:
    """Sleep until frame ``i`` is due on the loop's clock (started at ``t0``)."""
    loop = asyncio.get_running_loop()
    due = t0 + i * FRAME_SAMPLES / SAMPLE_RATE
    delay = due - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)


def frames_of(audio: np.ndarray) -> list[np.ndarray]:
    n = -(-len(audio) // FRAME_SAMPLES)
    padded = np.zeros(n * FRAME_SAMPLES, dtype=np.float32)
    padded[: len(audio)] = audio
    return [padded[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES] for i in range(n)]


class ArraySource:
    """Frames from audio already in memory (a WAV read, a rendered script)."""

    live = False
    finite = True

    def __init__(self, audio: np.ndarray, name: str = "array", realtime: bool = False) -> None:
        self.audio = audio.astype(np.float32, copy=False)
        self.name = name
        self.realtime = realtime

    async def frames(self) -> AsyncIterator[np.ndarray]:
        t0 = asyncio.get_running_loop().time()
        for i, f in enumerate(frames_of(self.audio)):
            if self.realtime:
                await pace(i, t0)
            yield f


class WavSource(ArraySource):
    def __init__(self, path: str | Path, realtime: bool = False) -> None:
        super().__init__(read_audio(path), name=str(path), realtime=realtime)


class MicSource:
    """The default input device through PyAudio (extra ``duplex[mic]``; Debian portaudio19-dev).

    The PortAudio callback runs on its own thread and hands frames to the loop with
    ``call_soon_threadsafe``; when the loop falls behind, frames are dropped and counted.
    ``pyaudio_module`` is the seam tests use to run this without a sound card.
    """

    live = True
    finite = False
    name = "microphone"

    def __init__(self, max_queue: int = 64, device: int | None = None, pyaudio_module: Any = None) -> None:
        self._pa_mod = pyaudio_module
        self.device = device
        self.max_queue = max_queue
        self.dropped = 0

    def _open(self) -> Any:
        pa_mod = self._pa_mod
        if pa_mod is None:
            try:
                import pyaudio as pa_mod
            except ImportError as exc:
                raise AudioError(
                    "live audio needs PyAudio: apt-get install portaudio19-dev && pip install 'duplex[mic]'"
                ) from exc
        return pa_mod

    async def frames(self) -> AsyncIterator[np.ndarray]:
        pa_mod = self._open()
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[np.ndarray] = asyncio.Queue(maxsize=self.max_queue)

        def put(frame: np.ndarray) -> None:
            if q.full():
                self.dropped += 1
                return
            q.put_nowait(frame)

        def callback(in_data: bytes, frame_count: int, time_info: Any, status: int) -> tuple[None, int]:
            frame = np.frombuffer(in_data, dtype="<i2").astype(np.float32) / 32768.0
            loop.call_soon_threadsafe(put, frame)
            return (None, pa_mod.paContinue)

        pa = pa_mod.PyAudio()
        try:
            if pa.get_device_count() == 0:
                raise AudioError("no audio input device found (no sound card?); try --simulate or --input FILE.wav")
            stream = pa.open(
                format=pa_mod.paInt16, channels=1, rate=SAMPLE_RATE, input=True,
                frames_per_buffer=FRAME_SAMPLES, input_device_index=self.device, stream_callback=callback,
            )
        except OSError as exc:
            pa.terminate()
            raise AudioError(f"cannot open the microphone: {exc}") from exc
        except AudioError:
            pa.terminate()
            raise
        try:
            stream.start_stream()
            while True:
                yield await q.get()
        finally:
            stream.stop_stream()
            stream.close()
            pa.terminate()

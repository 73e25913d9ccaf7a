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
from duplex.events import Notice, StageError

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


DEVICE_GAP_S = 0.5
"""No microphone frame for this long (16 frames): ask PortAudio whether the stream is
still alive."""
REOPEN_TRIES = 3
REOPEN_WAIT_S = 0.5
"""A lost microphone is reopened (the default device, which may now be another one) this
many times, this far apart, before the conversation ends."""


class MicSource:
    """The default input device through PyAudio (extra ``duplex[mic]``; Debian portaudio19-dev).

    The PortAudio callback runs on its own thread and hands frames to the loop with
    ``call_soon_threadsafe``; when the loop falls behind, frames are dropped and counted.
    ``pyaudio_module`` is the seam tests use to run this without a sound card.

    A device that disappears (unplugged, its driver gone) stops calling back: after
    :data:`DEVICE_GAP_S` without a frame an inactive stream counts as lost, and the
    source reopens the default input device (:data:`REOPEN_TRIES` tries). If that fails
    the source ends, so the conversation ends and its session closes whole; either way
    the bus it is attached to gets a :class:`~duplex.events.StageError` (``audio``) or a
    :class:`~duplex.events.Notice` saying what happened.
    """

    live = True
    finite = False
    name = "microphone"

    def __init__(self, max_queue: int = 64, device: int | None = None, pyaudio_module: Any = None) -> None:
        self._pa_mod = pyaudio_module
        self.device = device
        self.max_queue = max_queue
        self.dropped = 0
        self.lost = 0
        """Times the device disappeared."""
        self.delivered = 0
        self._bus: Any = None
        self._last_t = 0.0

    def attach(self, bus: Any) -> None:
        """Where to report a lost device (the conversation's event bus)."""
        self._bus = bus
        bus.subscribe(self._seen)

    def _seen(self, ev: Any) -> None:
        self._last_t = max(self._last_t, ev.t)

    def _report(self, event_type: Any, **kw: Any) -> None:
        if self._bus is not None:
            # Stamped with the session time of the engine's last event (its last tick):
            # the source has no clock of its own.
            self._bus.publish(event_type(self._last_t, **kw))

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

    def _start(self, pa_mod: Any, callback: Any) -> tuple[Any, Any]:
        """A fresh PortAudio instance and a started input stream on the device."""
        pa = pa_mod.PyAudio()
        try:
            if pa.get_device_count() == 0:
                raise AudioError("no audio input device found (no sound card?); try --simulate or --input FILE.wav")
            stream = pa.open(
                format=pa_mod.paInt16, channels=1, rate=SAMPLE_RATE, input=True,
                frames_per_buffer=FRAME_SAMPLES, input_device_index=self.device, stream_callback=callback,
            )
            stream.start_stream()
        except OSError as exc:
            pa.terminate()
            raise AudioError(f"cannot open the microphone: {exc}") from exc
        except AudioError:
            pa.terminate()
            raise
        return pa, stream

    @staticmethod
    def _alive(stream: Any) -> bool:
        try:
            return bool(stream.is_active())
        except (OSError, AttributeError):  # PortAudio's error on a dead stream; or no such call
            return False

    @staticmethod
    def _stop(pa: Any, stream: Any) -> None:
        """Close a stream whose device may be gone: PortAudio may refuse; it is closed anyway."""
        for step in (stream.stop_stream, stream.close, pa.terminate):
            try:
                step()
            except OSError as exc:
                log.debug("closing a lost microphone: %s", exc)

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

        pa, stream = self._start(pa_mod, callback)
        try:
            while True:
                try:
                    frame = await asyncio.wait_for(q.get(), DEVICE_GAP_S)
                except TimeoutError:
                    if self._alive(stream):
                        continue  # a slow device, not a lost one
                    self.lost += 1
                    self._stop(pa, stream)
                    pa = stream = None
                    pa, stream = await self._reopen(pa_mod, callback)
                    if stream is None:
                        return
                    continue
                self.delivered += 1
                yield frame
        finally:
            if stream is not None:
                self._stop(pa, stream)

    async def _reopen(self, pa_mod: Any, callback: Any) -> tuple[Any, Any]:
        """Reopen the lost microphone; (None, None) when it stays gone (reported either way)."""
        why = ""
        for _ in range(REOPEN_TRIES):
            await asyncio.sleep(REOPEN_WAIT_S)
            try:
                pa, stream = self._start(pa_mod, callback)
            except AudioError as exc:
                why = str(exc)
                continue
            log.warning("the microphone was lost and has been reopened")
            self._report(Notice, message="the microphone stopped sending audio; reopened it, listening again")
            return pa, stream
        msg = f"the microphone stopped sending audio and could not be reopened ({why}); the conversation ends"
        log.error("%s", msg)
        self._report(StageError, stage="audio", message=msg)
        return None, None

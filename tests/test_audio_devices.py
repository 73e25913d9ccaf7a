"""PyAudio input and output through their seam: a stand-in PortAudio that runs the
stream callbacks on its own thread, as the real one does. No sound card needed."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import pytest

from duplex.audio import FRAME_SAMPLES
from duplex.audio.sink import PyAudioSink
from duplex.audio.source import MicSource
from duplex.errors import AudioError


class PortAudioStandIn:
    """The subset of the ``pyaudio`` module duplex uses, driven by a thread."""

    paInt16 = 8
    paContinue = 0

    def __init__(self, devices: int = 1, frames: list[np.ndarray] | None = None, period: float = 0.002) -> None:
        self.devices = devices
        self.frames = frames or []
        self.period = period
        self.output: list[bytes] = []
        self.opened: list[dict[str, Any]] = []

    def PyAudio(self) -> Any:  # noqa: N802 - the module's name
        return _PA(self)


class _PA:
    def __init__(self, mod: PortAudioStandIn) -> None:
        self.mod = mod

    def get_device_count(self) -> int:
        return self.mod.devices

    def open(self, **kw: Any) -> Any:
        self.mod.opened.append(kw)
        return _Stream(self.mod, kw)

    def terminate(self) -> None:
        pass


class _Stream:
    def __init__(self, mod: PortAudioStandIn, kw: dict[str, Any]) -> None:
        self.mod, self.kw = mod, kw
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start_stream(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        cb = self.kw["stream_callback"]
        n = self.kw["frames_per_buffer"]
        if self.kw.get("input"):
            for f in self.mod.frames:
                if self._stop.is_set():
                    return
                cb((np.clip(f, -1, 1) * 32767).astype("<i2").tobytes(), n, {}, 0)
                time.sleep(self.mod.period)
        else:
            while not self._stop.is_set():
                data, _ = cb(None, n, {}, 0)
                self.mod.output.append(data)
                time.sleep(self.mod.period)

    def stop_stream(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def close(self) -> None:
        pass


def test_mic_source_delivers_frames_in_order_at_16k():
    frames = [np.full(FRAME_SAMPLES, k / 100, dtype=np.float32) for k in range(20)]
    pa = PortAudioStandIn(frames=frames)
    mic = MicSource(pyaudio_module=pa)

    async def take() -> list[np.ndarray]:
        out = []
        async for f in mic.frames():
            out.append(f)
            if len(out) == len(frames):
                break
        return out

    got = asyncio.run(take())
    assert [round(float(f[0]) * 100) for f in got] == list(range(20))
    assert pa.opened[0]["rate"] == 16000 and pa.opened[0]["frames_per_buffer"] == FRAME_SAMPLES
    assert mic.dropped == 0


def test_mic_source_drops_and_counts_when_the_loop_falls_behind():
    frames = [np.zeros(FRAME_SAMPLES, dtype=np.float32)] * 50
    pa = PortAudioStandIn(frames=frames, period=0.0)
    mic = MicSource(max_queue=4, pyaudio_module=pa)

    async def slow() -> int:
        n = 0
        async for _ in mic.frames():
            n += 1
            await asyncio.sleep(0.05)
            if n == 3:
                break
        return n

    asyncio.run(slow())
    assert mic.dropped > 0


def test_no_input_device_is_one_clear_error():
    mic = MicSource(pyaudio_module=PortAudioStandIn(devices=0))

    async def first() -> None:
        async for _ in mic.frames():
            break

    with pytest.raises(AudioError, match="no audio input device"):
        asyncio.run(first())


def test_speaker_sink_plays_written_chunks_and_flush_silences_it():
    pa = PortAudioStandIn(period=0.01)
    sink = PyAudioSink(pyaudio_module=pa, max_chunks=4)
    loud = np.full(FRAME_SAMPLES, 0.5, dtype=np.float32)
    sink.write(loud)
    time.sleep(0.1)
    for _ in range(4):
        sink.write(loud)
    sink.flush()
    time.sleep(0.1)
    sink.close()
    levels = [np.abs(np.frombuffer(b, dtype="<i2")).max() for b in pa.output]
    assert max(levels) > 16000  # the first chunk was played
    assert levels[-1] == 0  # after flush: silence (underruns), never the flushed chunks
    # At most one of the four can slip out between write and flush (the device thread
    # runs concurrently); without the flush all five would play.
    assert sum(1 for v in levels if v > 0) <= 2
    assert sink.underruns > 0

"""Audio constants and I/O. Every frame size is derived from these two numbers."""

from __future__ import annotations

SAMPLE_RATE = 16_000
"""Everything inside duplex runs at 16 kHz mono."""

FRAME_MS = 32
"""One engine tick. Silero VAD takes exactly 512 samples at 16 kHz, i.e. 32 ms."""

FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
"""Samples per engine tick (512)."""

CHUNK_SAMPLES = FRAME_SAMPLES
"""Playback chunk: one frame, so a barge-in stops the speaker within 32 ms."""


def samples_to_seconds(n: int) -> float:
    return n / SAMPLE_RATE


def seconds_to_samples(s: float) -> int:
    return int(round(s * SAMPLE_RATE))

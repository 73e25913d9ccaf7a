"""The simplest echo there is: the agent's own voice, delayed and attenuated, in the mic.

A mic filter for :meth:`duplex.engine.Engine.add_mic_filter`, used by scenarios with
``echo_db``/``echo_delay_ms`` (an open speaker next to the microphone, no room
reverberation). :mod:`duplex.audio.room` models real rooms.
"""

from __future__ import annotations

import numpy as np

from duplex.audio import SAMPLE_RATE


class EchoFilter:
    """``mic + 10**(gain_db/20) * played(t - delay)``; stateful, one per engine."""

    def __init__(self, gain_db: float, delay_ms: float) -> None:
        if delay_ms < 0:
            raise ValueError(f"echo delay must be >= 0 ms, got {delay_ms}")
        self.gain = float(10 ** (gain_db / 20))
        self.delay = int(round(delay_ms * SAMPLE_RATE / 1000))
        self._line = np.zeros(self.delay, dtype=np.float32)
        """The last ``delay`` samples played, not yet heard by the mic."""

    def __call__(self, mic: np.ndarray, played: np.ndarray) -> np.ndarray:
        line = np.concatenate([self._line, played.astype(np.float32)])
        heard, self._line = line[: len(played)], line[len(played):]
        return (mic + self.gain * heard).astype(np.float32)

"""Injected clocks: every timestamp in duplex comes from one of these.

Stages count time in samples; the clock turns the engine's position into seconds
for events. Every run, live or lockstep, uses a :class:`SimClock` the engine advances
one frame at a time (so event times line up with the session's audio to the sample, and
a replay of a live session can reproduce them: :mod:`duplex.pacing`); tests advance
one by hand. Compute time, which the session clock does not see, is measured with
:class:`PerfTimer`.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Seconds since the session started."""

    def now(self) -> float: ...


class SimClock:
    """A clock that moves only when told to: the engine's, and the tests'."""

    def __init__(self, start: float = 0.0) -> None:
        self._t = start

    def now(self) -> float:
        return self._t

    def set(self, t: float) -> None:
        if t < self._t:
            raise ValueError(f"SimClock cannot go backwards ({t} < {self._t})")
        self._t = t

    def advance(self, dt: float) -> None:
        self.set(self._t + dt)


class PerfTimer:
    """Measures compute durations (model latency) in wall seconds.

    Latency figures are real compute time even on the simulated clock, so they
    come from here rather than from the session clock.
    """

    @staticmethod
    def now() -> float:
        return time.perf_counter()

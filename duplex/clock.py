"""Injected clocks: every timestamp in duplex comes from one of these.

Stages count time in samples; the clock turns the engine's position into seconds
for events. Live runs use :class:`MonotonicClock`, files and replay a
:class:`SimClock` advanced by the engine one frame at a time, and tests a
:class:`SimClock` they advance by hand.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Seconds since the session started."""

    def now(self) -> float: ...


class MonotonicClock:
    """Wall-clock seconds since construction, from ``time.monotonic``."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._t0


class SimClock:
    """A clock that moves only when told to; replay and tests use it."""

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

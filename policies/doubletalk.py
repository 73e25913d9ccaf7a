"""Double-talk detection for the rule policy: is the user really talking over the agent,
or is the microphone hearing the agent's own voice?

Two detectors, both frame-level and voted over the user's speech run (a single frame
decides nothing: one loud syllable of echo, one quiet syllable of the user):

* **With echo cancellation** (``PolicyInput.raw_mic`` is set): the canceller's *echo
  reduction* on this frame, ``level(raw_mic) - level(mic)``. On echo alone it is the
  canceller's ERLE (25-50 dB with WebRTC AEC3); when the user speaks, their voice
  passes through, so the reduction collapses to the echo-to-user ratio plus a few dB
  (under ``aec_reduction_db`` for echo up to +6 dB over the user). A frame is near-end
  speech when the reduction is small *and* the cleaned microphone is above the noise
  floor, or when the agent's playback is silent.
* **Without** (Geigel, the classic): near-end when the microphone is within
  ``margin_db`` of the playback level, i.e. louder than any plausible echo.

A run passes the gate when at least ``min_share`` of its frames so far are near-end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from duplex.turn import PolicyInput


def level_db(x: np.ndarray | None) -> float:
    if x is None or x.size == 0:
        return -120.0
    p = float(np.mean(np.square(x, dtype=np.float64)))
    return max(-120.0, 10.0 * np.log10(p + 1e-12))


@dataclass(frozen=True)
class DoubleTalkConfig:
    aec_reduction_db: float = 12.0
    """With AEC: a frame whose echo reduction is below this is the user's voice."""
    floor_db: float = -58.0
    """Cleaned frames quieter than this are residue, never near-end speech."""
    playback_silent_db: float = -60.0
    """Playback quieter than this: nothing to confuse the user with."""
    margin_db: float = 6.0
    """Without AEC (Geigel): the mic must be within this of the playback level."""
    min_share: float = 0.5
    """Share of the run's frames that must be near-end."""
    min_frames: int = 2
    """...and at least this many of them."""


class DoubleTalkDetector:
    """Votes near-end frames over one speech run; call :meth:`step` once per frame of the run."""

    def __init__(self, cfg: DoubleTalkConfig | None = None) -> None:
        self.cfg = cfg or DoubleTalkConfig()
        self.reset()

    def reset(self) -> None:
        self._run = -1.0
        self._near = 0
        self._total = 0
        self.last_reduction_db: float | None = None

    def near_end(self, x: PolicyInput) -> bool:
        """Is this frame the user's voice rather than the agent's echo?"""
        c = self.cfg
        out = level_db(x.playback)
        mic = level_db(x.mic)
        if x.raw_mic is not None:
            reduction = level_db(x.raw_mic) - mic
            self.last_reduction_db = reduction
            if mic < c.floor_db:
                return False
            return out < c.playback_silent_db or reduction < c.aec_reduction_db
        if out < c.playback_silent_db:
            return True
        return mic >= out - c.margin_db

    def step(self, x: PolicyInput) -> bool:
        """Add this frame to the current run's vote; ``True`` when the run counts as the user."""
        if x.speech_run <= self._run or self._run < 0:
            self._near = 0
            self._total = 0
        self._run = x.speech_run
        self._total += 1
        self._near += self.near_end(x)
        return self._near >= self.cfg.min_frames and self._near >= self.cfg.min_share * self._total


__all__ = ["DoubleTalkConfig", "DoubleTalkDetector", "level_db"]

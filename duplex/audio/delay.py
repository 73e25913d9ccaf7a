"""Playback-to-capture delay estimation by cross-correlation, streaming.

The echo of a played sample reaches the microphone some time later: the output
device's buffer, the input device's buffer, and the air. Users should not have to know
that number, so :class:`DelayEstimator` measures it continuously from the two streams
the engine already has, the play cursor's reference and the microphone.

Every ``update_s`` it cross-correlates the last ``window_s`` of microphone against the
reference with the phase transform (GCC-PHAT: the cross-spectrum divided by its
magnitude, which whitens speech and keeps reverberation from smearing the peak). A
block only counts when the reference was active for a good share of it; a new delay is
accepted once two consecutive confident blocks agree, so double talk and noise cannot
make it jump, while a real change (a device underrun that shifts the timeline) is
followed within about a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from duplex.audio import SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class DelayEstimate:
    samples: int
    """Delay in samples: the echo of reference sample ``n`` is in microphone sample ``n + samples``."""
    confidence: float
    """Peak height over the correlation's background (its standard deviation); > ~6 is a clear peak."""

    @property
    def ms(self) -> float:
        return 1000.0 * self.samples / SAMPLE_RATE


class DelayEstimator:
    """GCC-PHAT delay tracking over a sliding window.

    Args:
        max_delay_ms: the largest delay searched.
        window_s: audio correlated per estimate.
        update_s: how often an estimate is made.
        min_confidence: a block's peak must stand this many standard deviations above
            the rest of the correlation to count.
        min_active: share of the window in which the reference must be active.
    """

    def __init__(self, max_delay_ms: float = 500.0, window_s: float = 2.0, update_s: float = 0.5,
                 min_confidence: float = 7.0, min_active: float = 0.3, sample_rate: int = SAMPLE_RATE) -> None:
        assert max_delay_ms > 0 and window_s > 0 and update_s > 0, "durations must be positive"
        self.sr = sample_rate
        self.max_lag = int(max_delay_ms * sample_rate / 1000)
        self.window = int(window_s * sample_rate)
        self.update = int(update_s * sample_rate)
        self.min_confidence = min_confidence
        self.min_active = min_active
        size = self.window + self.max_lag
        # Only lags 0..max_lag are read, and for those a circular correlation of this
        # length never wraps: i + k < window + max_lag = size.
        self.nfft = 1 << int(np.ceil(np.log2(size)))
        self._mic = np.zeros(self.window, dtype=np.float32)
        self._ref = np.zeros(size, dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        self._mic[:] = 0.0
        self._ref[:] = 0.0
        self._filled = 0
        self._since = 0
        self._candidate: int | None = None
        self.estimate: DelayEstimate | None = None
        self.blocks = 0
        """Blocks correlated so far (for tests and reports)."""

    def push(self, mic: np.ndarray, ref: np.ndarray) -> DelayEstimate | None:
        """Add one frame of each stream (same length, sample-aligned by the play cursor).

        Returns the current estimate (``None`` until a confident one exists).
        """
        assert mic.shape == ref.shape, f"mic {mic.shape} and reference {ref.shape} must match"
        n = len(mic)
        self._mic = np.concatenate([self._mic[n:], mic.astype(np.float32)])
        self._ref = np.concatenate([self._ref[n:], ref.astype(np.float32)])
        self._filled += n
        self._since += n
        if self._since >= self.update and self._filled >= self.window:
            self._since = 0
            self._block()
        return self.estimate

    def _block(self) -> None:
        # The reference window starts max_lag earlier than the microphone window:
        # mic[t] ~ ref[t - d], d in [0, max_lag].
        ref = self._ref
        act = _active_share(ref[self.max_lag:])
        if act < self.min_active:
            return
        self.blocks += 1
        mic = self._mic
        spec_m = np.fft.rfft(mic, self.nfft)
        spec_r = np.fft.rfft(ref, self.nfft)
        cross = spec_r * np.conj(spec_m)
        mag = np.abs(cross)
        cross /= mag + 1e-3 * (mag.max() + 1e-20)
        cc = np.fft.irfft(cross, self.nfft)
        # cc[k] = sum_i ref[i + k] * mic[i]; the reference window starts max_lag
        # earlier than the microphone's, so a delay d puts the peak at k = max_lag - d.
        lags = cc[: self.max_lag + 1][::-1]  # index = delay d
        peak = int(np.argmax(lags))
        guard = max(1, self.sr // 1000)
        rest = np.concatenate([lags[: max(0, peak - guard)], lags[peak + guard + 1:]])
        conf = float((lags[peak] - rest.mean()) / (rest.std() + 1e-12)) if rest.size else 0.0
        if conf < self.min_confidence:
            self._candidate = None
            return
        cur = self.estimate
        if cur is not None and abs(peak - cur.samples) <= guard:
            self.estimate = DelayEstimate(cur.samples, max(conf, 0.9 * cur.confidence))
            self._candidate = None
            return
        if self._candidate is not None and abs(peak - self._candidate) <= guard:
            self.estimate = DelayEstimate(peak, conf)
            self._candidate = None
        else:
            self._candidate = peak


def _active_share(x: np.ndarray, frame: int = 256, floor_db: float = -55.0) -> float:
    n = len(x) // frame
    if n == 0:
        return 0.0
    fr = x[: n * frame].reshape(n, frame).astype(np.float64)
    db = 10.0 * np.log10(np.mean(fr * fr, axis=1) + 1e-12)
    return float(np.mean(db > floor_db))


def estimate_delay(mic: np.ndarray, ref: np.ndarray, max_delay_ms: float = 500.0) -> DelayEstimate | None:
    """One-shot GCC-PHAT delay over whole recordings (offline tools, tests)."""
    est = DelayEstimator(max_delay_ms=max_delay_ms, window_s=min(4.0, len(mic) / SAMPLE_RATE * 0.8),
                         update_s=0.25, min_confidence=5.0)
    step = 512
    for k in range(0, len(mic) - step + 1, step):
        est.push(mic[k:k + step], ref[k:k + step])
    return est.estimate


__all__ = ["DelayEstimate", "DelayEstimator", "estimate_delay"]

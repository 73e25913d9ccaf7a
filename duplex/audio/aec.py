"""Acoustic echo cancellation in the capture path: the agent must not hear itself.

On open speakers the microphone picks up the agent's own voice. :class:`EchoCanceller`
removes it before the listener (VAD, ASR) and the turn policy see the frame. It is the
engine's ``CaptureProcessor``: each tick it gets the microphone frame and the exact
chunk the player handed to the speaker in the same tick (the *reference*; silence when
idle, so both streams advance sample for sample with the play cursor).

What happens to a frame:

1. The reference goes into a history indexed by the play cursor. The playback-to-capture
   delay (``aec.delay_ms``, or estimated continuously by GCC-PHAT, see
   :mod:`duplex.audio.delay`) picks the reference samples whose echo is in this
   microphone frame, less a few milliseconds of guard: the backend only has to model
   the room, not the device buffers.
2. The backend (a native library, see below) cancels the echo with its adaptive filter
   and suppresses the residual (non-linear) echo. Backends work in fixed blocks (WebRTC:
   10 ms), so frames pass through a block FIFO; the constant added latency is
   ``latency_samples`` (8 ms for WebRTC with 32 ms frames, 0 for Speex).
3. The echo return loss enhancement (ERLE: microphone power over cleaned power while
   the reference plays) is tracked, and :meth:`EchoCanceller.poll` turns delay and
   ERLE into :class:`~duplex.events.EchoDelay` events for the UI and the session log.

Backends, best first (measured in docs/echo.md):

* ``webrtc``: WebRTC AEC3 (the canceller in Chrome) through ``pywebrtc-audio``; a
  self-contained wheel, its own residual-echo suppressor, optional noise suppression.
* ``speex``: SpeexDSP's MDF canceller plus its preprocessor's residual-echo suppressor,
  through ``ctypes`` on the system library (``apt-get install libspeexdsp1``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Protocol

import numpy as np

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.audio.delay import DelayEstimator
from duplex.config import AEC_BACKENDS, AECConfig
from duplex.errors import AudioError
from duplex.events import EchoDelay

log = logging.getLogger(__name__)

GUARD_MS = 4.0
"""The reference is aligned this much early: an adaptive filter can model a late echo
(a longer path), never an early one."""
ACTIVE_REF_DB = -50.0
"""A reference block louder than this is agent audio (ERLE is only measured then)."""
ERLE_WINDOW_S = 6.0
"""ERLE is a high percentile over this much recent agent audio, so that double talk
(the user's voice survives cancellation, which looks like poor ERLE) does not drag it."""


class AECError(AudioError):
    """The echo canceller cannot be built (backend not installed, bad settings)."""


class EchoBackend(Protocol):
    """A native echo canceller working in fixed blocks of ``block`` samples at 16 kHz."""

    name: str
    block: int

    def process(self, mic: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """Cancel ``ref``'s echo from ``mic``; both float32, a whole number of blocks long."""
        ...

    def reset(self) -> None: ...


# --- backends ----------------------------------------------------------------------------


class WebRTCBackend:
    """WebRTC AEC3 (adaptive filter + residual echo suppressor) via ``pywebrtc-audio``."""

    name = "webrtc"
    block = SAMPLE_RATE // 100  # 10 ms

    def __init__(self, noise_suppression: bool = False) -> None:
        try:
            import pywebrtc_audio
        except ImportError as exc:
            raise AECError("aec = 'webrtc' needs pywebrtc-audio: pip install pywebrtc-audio") from exc
        self._mod = pywebrtc_audio
        self._ns = noise_suppression
        self._ap = self._new()

    def _new(self) -> object:
        # stream_delay_ms stays 0: the reference is already aligned by EchoCanceller,
        # AEC3's own delay estimator takes up what is left.
        return self._mod.AudioProcessor(sample_rate=SAMPLE_RATE, echo_cancellation=True,
                                        noise_suppression=self._ns, stream_delay_ms=0)

    def process(self, mic: np.ndarray, ref: np.ndarray) -> np.ndarray:
        return self._ap.process(mic, ref)  # type: ignore[attr-defined,no-any-return]

    def reset(self) -> None:
        self._ap = self._new()


_SPEEX_ECHO_SET_SAMPLING_RATE = 24
_SPEEX_PREPROCESS_SET_DENOISE = 0
_SPEEX_PREPROCESS_SET_ECHO_STATE = 24


def _load_speexdsp() -> ctypes.CDLL | None:
    names = [ctypes.util.find_library("speexdsp"), "libspeexdsp.so.1", "libspeexdsp.dylib", "libspeexdsp.so"]
    for name in names:
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if hasattr(lib, "speex_echo_state_init"):
            return lib
    return None


class SpeexBackend:
    """SpeexDSP's MDF echo canceller + preprocessor residual echo suppression (ctypes)."""

    name = "speex"

    def __init__(self, tail_ms: int, noise_suppression: bool = False, block: int = 256) -> None:
        self.block = block
        """256 (16 ms) by default: two per engine frame, so no added latency."""
        lib = _load_speexdsp()
        if lib is None:
            raise AECError("aec = 'speex' needs the SpeexDSP library: apt-get install libspeexdsp1 "
                           "(or brew install speexdsp)")
        self._lib = lib
        lib.speex_echo_state_init.restype = ctypes.c_void_p
        lib.speex_echo_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.speex_echo_cancellation.argtypes = [ctypes.c_void_p] + [ctypes.POINTER(ctypes.c_int16)] * 3
        lib.speex_echo_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        lib.speex_echo_state_destroy.argtypes = [ctypes.c_void_p]
        lib.speex_preprocess_state_init.restype = ctypes.c_void_p
        lib.speex_preprocess_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.speex_preprocess_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        lib.speex_preprocess_run.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int16)]
        lib.speex_preprocess_state_destroy.argtypes = [ctypes.c_void_p]
        self._tail = max(self.block, int(tail_ms * SAMPLE_RATE / 1000))
        self._ns = noise_suppression
        self._echo: int | None = None
        self._pre: int | None = None
        self._new()

    def _new(self) -> None:
        self._free()
        lib = self._lib
        self._echo = lib.speex_echo_state_init(self.block, self._tail)
        rate = ctypes.c_int(SAMPLE_RATE)
        lib.speex_echo_ctl(self._echo, _SPEEX_ECHO_SET_SAMPLING_RATE, ctypes.byref(rate))
        self._pre = lib.speex_preprocess_state_init(self.block, SAMPLE_RATE)
        lib.speex_preprocess_ctl(self._pre, _SPEEX_PREPROCESS_SET_ECHO_STATE, ctypes.c_void_p(self._echo))
        denoise = ctypes.c_int(1 if self._ns else 0)
        lib.speex_preprocess_ctl(self._pre, _SPEEX_PREPROCESS_SET_DENOISE, ctypes.byref(denoise))

    def _free(self) -> None:
        if self._pre is not None:
            self._lib.speex_preprocess_state_destroy(self._pre)
            self._pre = None
        if self._echo is not None:
            self._lib.speex_echo_state_destroy(self._echo)
            self._echo = None

    def process(self, mic: np.ndarray, ref: np.ndarray) -> np.ndarray:
        p16 = ctypes.POINTER(ctypes.c_int16)
        m = _to_pcm16(mic)
        r = _to_pcm16(ref)
        out = np.empty_like(m)
        for k in range(0, len(m), self.block):
            mk, rk, ok = m[k:k + self.block], r[k:k + self.block], out[k:k + self.block]
            self._lib.speex_echo_cancellation(self._echo, mk.ctypes.data_as(p16), rk.ctypes.data_as(p16),
                                              ok.ctypes.data_as(p16))
            self._lib.speex_preprocess_run(self._pre, ok.ctypes.data_as(p16))
        return out.astype(np.float32) / 32768.0

    def reset(self) -> None:
        self._new()

    def __del__(self) -> None:
        if hasattr(self, "_lib"):  # not when __init__ failed before loading the library
            self._free()


class HybridBackend:
    """WebRTC AEC3 decides, Speex keeps the user: full duplex through double talk.

    AEC3's residual-echo suppressor is built for calls, where losing some of the near
    end during double talk is acceptable: measured on our rooms it keeps only 25-55 %
    of the user's frames when the echo is as loud as the user (0 to +6 dB), so a
    barge-in reaches the listener chopped (short VAD runs, garbled words). Speex's
    canceller keeps 91-94 % of them, but leaves 20-30 dB ERLE, and converges in
    seconds, not one: its residue alone makes the agent interrupt itself.

    So both run on every block. While AEC3 lets nothing through but echo residue (its
    echo reduction on the block is above ``NEAR_DB``), its output is used: 40-50 dB
    ERLE, nothing for the VAD to fire on. As soon as AEC3 passes a block (the user is
    there, it lets the dominant near end through at least part of the time), the Speex
    output is used and kept for ``HANGOVER_S`` after AEC3's last near-end block, so the
    whole utterance reaches the listener; but only while Speex is known to cancel well
    (graded on blocks AEC3 is sure are echo alone), so an unconverged or diverged Speex
    never leaks echo. Switches cross-fade over one block.
    """

    name = "hybrid"
    block = SAMPLE_RATE // 100  # 10 ms, AEC3's block; Speex runs on the same blocks
    NEAR_DB = 15.0
    """AEC3 echo reduction below which a block is the near end (echo residue is 25+ dB)."""
    FLOOR_DB = -62.0
    """AEC3 output quieter than this says nothing either way."""
    HANGOVER_S = 0.6
    ECHO_ONLY_DB = 25.0
    """AEC3 echo reduction above which a block is surely echo alone: Speex is graded there."""
    SPEEX_OK_DB = 15.0
    """Speex's median echo reduction on recent echo-only blocks must reach this for its
    output to be trusted (not before it has converged, not after it has diverged)."""

    def __init__(self, tail_ms: int, noise_suppression: bool = False) -> None:
        self.webrtc = WebRTCBackend(noise_suppression)
        self.speex = SpeexBackend(tail_ms, noise_suppression, block=self.block)
        self._hang = int(self.HANGOVER_S * SAMPLE_RATE / self.block)
        self._ramp = np.linspace(0.0, 1.0, self.block, dtype=np.float32)
        # The dB thresholds as power ratios, once (process runs every engine frame).
        self._near_ratio = 10 ** (self.NEAR_DB / 10)
        self._floor = 10 ** (self.FLOOR_DB / 10)
        self._echo_only = 10 ** (self.ECHO_ONLY_DB / 10)
        self.reset_gate()

    def reset_gate(self) -> None:
        self._open = 0
        self._near = False
        self._speex_erle: deque[float] = deque(maxlen=int(2.0 * SAMPLE_RATE / self.block))
        self.near_blocks = 0
        """Blocks that went out through the Speex (near-end) path, for diagnostics."""

    @property
    def speex_ok(self) -> bool:
        """Speex has been cancelling well on recent echo-only blocks."""
        e = self._speex_erle
        return len(e) >= e.maxlen // 4 and float(np.median(np.fromiter(e, float))) >= self.SPEEX_OK_DB

    def process(self, mic: np.ndarray, ref: np.ndarray) -> np.ndarray:
        w = self.webrtc.process(mic, ref)
        s = self.speex.process(mic, ref)
        b = self.block
        out = np.empty_like(w)
        near_ratio, floor, echo_only = self._near_ratio, self._floor, self._echo_only
        for k in range(0, len(w), b):
            pm = float(np.mean(np.square(mic[k:k + b], dtype=np.float64)))
            pw = float(np.mean(np.square(w[k:k + b], dtype=np.float64)))
            if pm > floor and pm > echo_only * pw:
                ps = float(np.mean(np.square(s[k:k + b], dtype=np.float64)))
                self._speex_erle.append(10 * math.log10((pm + 1e-12) / (ps + 1e-12)))
            if pw > floor and pm < near_ratio * pw and self.speex_ok:
                self._open = self._hang
            elif self._open:
                self._open -= 1
            near = self._open > 0
            wk, sk = w[k:k + b], s[k:k + b]
            if near == self._near:
                out[k:k + b] = sk if near else wk
            else:
                g = self._ramp if near else self._ramp[::-1]
                out[k:k + b] = g * sk + (1.0 - g) * wk
            self._near = near
            self.near_blocks += near
        return out

    def reset(self) -> None:
        self.webrtc.reset()
        self.speex.reset()
        self.reset_gate()


def _to_pcm16(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16))


def available_backends() -> list[str]:
    """Backends that can be built on this machine, best first."""
    try:
        import pywebrtc_audio  # noqa: F401

        webrtc = True
    except ImportError:
        webrtc = False
    speex = _load_speexdsp() is not None
    return [name for name, ok in (("hybrid", webrtc and speex), ("webrtc", webrtc), ("speex", speex)) if ok]


def make_backend(name: str, cfg: AECConfig) -> EchoBackend:
    """Build a backend by name; raises :class:`AECError` when it is not installed."""
    if name == "webrtc":
        return WebRTCBackend(cfg.noise_suppression)
    if name == "speex":
        return SpeexBackend(cfg.tail_ms, cfg.noise_suppression)
    if name == "hybrid":
        return HybridBackend(cfg.tail_ms, cfg.noise_suppression)
    raise AECError(f"unknown echo-canceller backend {name!r} (known: {', '.join(AEC_BACKENDS)})")


# --- the canceller -----------------------------------------------------------------------


class EchoCanceller:
    """The engine's capture processor: aligned reference, native canceller, ERLE tracking.

    Args:
        backend: the native canceller.
        cfg: ``delay_ms`` (-1 to estimate), ``max_delay_ms``, ``report_every_s``.
        frame: samples per :meth:`process` call (the engine's frame).
    """

    def __init__(self, backend: EchoBackend, cfg: AECConfig | None = None, frame: int = FRAME_SAMPLES) -> None:
        self.backend = backend
        self.cfg = cfg or AECConfig(mode=backend.name)
        self.frame = frame
        b = backend.block
        # With frames of F samples and blocks of B, the FIFO never runs dry if it starts
        # B - gcd(F, B) samples ahead: the most a whole number of blocks can lag F*k.
        self.latency_samples = 0 if frame % b == 0 else b - math.gcd(frame, b)
        self._max_delay = int(self.cfg.max_delay_ms * SAMPLE_RATE / 1000)
        self._guard = int(GUARD_MS * SAMPLE_RATE / 1000)
        self._hist = max(self._max_delay + frame, 2 * frame)
        self.estimator = DelayEstimator(max_delay_ms=self.cfg.max_delay_ms) if self.cfg.delay_ms < 0 else None
        self.reset()

    @property
    def name(self) -> str:
        return self.backend.name

    def reset(self) -> None:
        """Forget everything (a new session): filter, alignment, statistics."""
        self.backend.reset()
        if self.estimator is not None:
            self.estimator.reset()
        self._ref = np.zeros(self._hist, dtype=np.float32)
        self._in_mic = np.zeros(0, dtype=np.float32)
        self._in_ref = np.zeros(0, dtype=np.float32)
        self._out = np.zeros(self.latency_samples, dtype=np.float32)
        self._erle: deque[float] = deque(maxlen=int(ERLE_WINDOW_S * SAMPLE_RATE / self.backend.block))
        self.samples = 0
        """Samples processed (the play cursor, as seen by the canceller)."""
        self.delay_samples = max(0, int(self.cfg.delay_ms * SAMPLE_RATE / 1000)) if self.cfg.delay_ms >= 0 else None
        """The playback-to-capture delay in use (``None`` until the first estimate)."""
        self.realigned = 0
        """How many times the estimated delay changed after the first estimate."""
        self._reported: tuple[float, float] | None = None
        self._last_report_t = -math.inf

    # --- CaptureProcessor ----------------------------------------------------------------

    def process(self, mic: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """One engine frame in, one cleaned frame out (``latency_samples`` late)."""
        assert mic.shape == reference.shape == (self.frame,), (
            f"expected two ({self.frame},) frames, got {mic.shape} and {reference.shape}")
        mic = mic.astype(np.float32, copy=False)
        reference = reference.astype(np.float32, copy=False)
        n = self.frame
        self._ref = np.concatenate([self._ref[n:], reference])
        self.samples += n
        if self.estimator is not None:
            est = self.estimator.push(mic, reference)
            if est is not None and est.samples != self.delay_samples:
                if self.delay_samples is not None:
                    self.realigned += 1
                    log.info("echo delay now %.1f ms (was %.1f ms)", est.ms, 1000 * self.delay_samples / SAMPLE_RATE)
                self.delay_samples = est.samples
                # A filter adapted to the old alignment is wrong for the new one, and
                # re-adapting it is slower (AEC3: ~3 s at 0 dB ERLE, measured) than
                # converging afresh (< 1 s).
                self.backend.reset()
        # The reference samples whose echo is in this microphone frame, a guard early.
        d = min(self._max_delay, max(0, (self.delay_samples or 0) - self._guard))
        end = self._hist - d
        aligned = self._ref[end - n:end]
        self._in_mic = np.concatenate([self._in_mic, mic])
        self._in_ref = np.concatenate([self._in_ref, aligned])
        b = self.backend.block
        m = (len(self._in_mic) // b) * b
        if m:
            x, r = self._in_mic[:m], self._in_ref[:m]
            y = np.asarray(self.backend.process(x, r), dtype=np.float32)
            self._track(x, r, y)
            self._out = np.concatenate([self._out, y])
            self._in_mic, self._in_ref = self._in_mic[m:], self._in_ref[m:]
        if len(self._out) < n:  # only with frames of another size than configured
            self._out = np.concatenate([np.zeros(n - len(self._out), np.float32), self._out])
        out, self._out = self._out[:n], self._out[n:]
        return out

    def _track(self, mic: np.ndarray, ref: np.ndarray, out: np.ndarray) -> None:
        b = self.backend.block
        k = len(mic) // b
        shape = (k, b)
        p_mic = np.mean(mic.reshape(shape).astype(np.float64) ** 2, axis=1)
        p_ref = np.mean(ref.reshape(shape).astype(np.float64) ** 2, axis=1)
        p_out = np.mean(out.reshape(shape).astype(np.float64) ** 2, axis=1)
        floor = 10 ** (ACTIVE_REF_DB / 10)
        for pm, pr, po in zip(p_mic, p_ref, p_out, strict=True):
            if pr > floor and pm > 1e-9:
                self._erle.append(10 * math.log10((pm + 1e-12) / (po + 1e-12)))

    # --- reports -------------------------------------------------------------------------

    @property
    def delay_ms(self) -> float | None:
        return None if self.delay_samples is None else 1000.0 * self.delay_samples / SAMPLE_RATE

    @property
    def erle_db(self) -> float | None:
        """Echo return loss enhancement over the last few seconds of agent audio (dB)."""
        if len(self._erle) < 10:
            return None
        return float(np.percentile(np.fromiter(self._erle, float), 75))

    def describe(self) -> str:
        """One line for ``duplex talk`` and the logs."""
        how = "estimated" if self.cfg.delay_ms < 0 else "fixed"
        d = self.delay_ms
        delay = f"{d:.0f} ms ({how})" if d is not None else "not yet estimated"
        return f"echo cancellation: {self.name}, delay {delay}, +{self.latency_samples / SAMPLE_RATE * 1000:.0f} ms latency"

    def poll(self, t: float) -> EchoDelay | None:
        """An :class:`EchoDelay` event when there is news: the first delay, a new delay,
        or every ``report_every_s`` while the ERLE moved by 1 dB or more. Call on the
        event loop after :meth:`process` (reads a few numbers the executor wrote)."""
        d, e = self.delay_ms, self.erle_db
        if d is None:
            return None
        erle = round(e, 1) if e is not None else 0.0
        last = self._reported
        due = t - self._last_report_t >= self.cfg.report_every_s
        if last is None or abs(d - last[0]) >= 1.0 or (due and abs(erle - last[1]) >= 1.0):
            self._reported = (d, erle)
            self._last_report_t = t
            return EchoDelay(t, delay_ms=round(d, 1), erle_db=erle, backend=self.name)
        return None


def make_aec(cfg: AECConfig, notice: Callable[[str], None] | None = None,
             frame: int = FRAME_SAMPLES) -> EchoCanceller | None:
    """The echo canceller ``cfg`` asks for, or ``None`` when it is off.

    ``auto`` takes the best installed backend; with none installed it returns ``None``
    and says so through ``notice`` (a line for the user, e.g. published as a ``Notice``).

    Raises:
        AECError: a named backend is not installed.
    """
    if cfg.mode == "off":
        return None
    if cfg.mode == "auto":
        names = available_backends()
        if not names:
            msg = ("no echo canceller installed (pip install pywebrtc-audio); echo cancellation is off: "
                   "use headphones, or the agent may hear itself")
            log.warning(msg)
            if notice is not None:
                notice(msg)
            return None
        name = names[0]
    else:
        name = cfg.mode
    aec = EchoCanceller(make_backend(name, cfg), cfg, frame)
    if notice is not None:
        hint = ""
        if cfg.mode == "auto" and name == "webrtc":
            hint = ("; install libspeexdsp1 for the hybrid canceller, which keeps the user's voice "
                    "when both talk at once")
        notice(aec.describe() + hint)
    return aec


__all__ = ["AECError", "EchoBackend", "EchoCanceller", "HybridBackend", "SpeexBackend", "WebRTCBackend",
           "available_backends", "make_aec", "make_backend"]

"""Simulated rooms: what an open-speaker microphone hears, for tests and benchmarks.

:class:`RoomSimulator` is an engine mic filter (``engine.add_mic_filter(room)``): given
the dry user audio the source produced and the chunk the player sent to the speaker in
the same tick, it returns::

    mic = user * h_user  +  g * softclip(played delayed by the device) * h_speaker  +  noise

* ``h_user``, ``h_speaker``: room impulse responses from the user and from the
  loudspeaker to the microphone; image-method rooms from ``pyroomacoustics`` when it is
  installed (``method="ism"``), else (or with ``method="synthetic"``, deterministic and
  dependency-free, what the tests use) a direct path plus early reflections plus an
  exponentially decaying diffuse tail with the room's RT60.
* the loudspeaker's non-linearity is a soft clip (``tanh``) before the room;
* ``echo_db`` sets the echo level relative to the user's at the microphone, for dry
  signals at the nominal levels ``play_db`` and ``user_db`` (dBFS of active speech);
* the device delay (``delay_ms``) is a FIFO of samples "written but not yet heard",
  which :meth:`RoomSimulator.underrun` and :meth:`RoomSimulator.drop` disturb the way a
  real output device does (a starved device plays silence and shifts the timeline;
  a flushed device discards what it had queued).

Everything streams frame by frame; :meth:`RoomSimulator.render` runs the same code over
whole signals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE

SPEED_OF_SOUND = 343.0


@dataclass(frozen=True)
class RoomSpec:
    """A shoebox room with a laptop-like device in it (microphone and loudspeaker close)."""

    name: str
    dims: tuple[float, float, float]
    rt60: float
    speaker_mic_m: float = 0.25
    """Loudspeaker to microphone distance."""
    user_mic_m: float = 1.3
    """User's mouth to microphone distance."""


ROOMS: dict[str, RoomSpec] = {
    "small": RoomSpec("small", (3.5, 3.0, 2.5), 0.25),
    "office": RoomSpec("office", (5.0, 4.0, 3.0), 0.45, user_mic_m=1.6),
    "living": RoomSpec("living", (7.0, 5.5, 3.0), 0.7, speaker_mic_m=0.35, user_mic_m=2.2),
}
"""The rooms of the tests and of ``benchmarks/echo.py``."""


def _positions(spec: RoomSpec) -> tuple[list[float], list[float], list[float]]:
    lx, ly, _ = spec.dims
    mic = [lx * 0.45, ly * 0.4, 0.9]
    spk = [mic[0] + spec.speaker_mic_m * 0.8, mic[1] + spec.speaker_mic_m * 0.6, 0.9]
    usr = [mic[0] - spec.user_mic_m * 0.6, mic[1] + spec.user_mic_m * 0.8, 1.25]
    return mic, spk, usr


def ism_rir(spec: RoomSpec, src: list[float], mic: list[float], max_order: int = 20) -> np.ndarray:
    """Image-method RIR (pyroomacoustics), energy-absorption walls matched to ``spec.rt60``."""
    import pyroomacoustics as pra

    absorption, order = pra.inverse_sabine(spec.rt60, list(spec.dims))
    room = pra.ShoeBox(list(spec.dims), fs=SAMPLE_RATE, materials=pra.Material(absorption),
                       max_order=min(order, max_order))
    room.add_source(src)
    room.add_microphone(mic)
    room.compute_rir()
    return np.asarray(room.rir[0][0], dtype=np.float64)


def synthetic_rir(spec: RoomSpec, distance: float, rng: np.random.Generator) -> np.ndarray:
    """Direct path + a few early reflections + an exponential diffuse tail (RT60)."""
    n = int(SAMPLE_RATE * spec.rt60 * 1.1) + 1
    h = np.zeros(n)
    d0 = distance / SPEED_OF_SOUND * SAMPLE_RATE
    h[int(d0)] += 1.0 / max(distance, 0.1)
    for _ in range(6):  # first-order reflections: 1-6 m longer paths, weaker
        extra = rng.uniform(1.0, 6.0)
        k = int((distance + extra) / SPEED_OF_SOUND * SAMPLE_RATE)
        if k < n:
            h[k] += rng.choice([-1, 1]) * 0.6 / (distance + extra)
    t = np.arange(n) / SAMPLE_RATE
    decay = np.exp(-6.9 * t / spec.rt60)  # -60 dB at rt60
    # Diffuse energy grows with the room's reverberance; onset after the direct path.
    tail = rng.standard_normal(n) * decay * (t > d0 / SAMPLE_RATE + 0.002)
    volume = float(np.prod(spec.dims))
    reverb_gain = np.sqrt(spec.rt60 / volume) * 2.0
    h += reverb_gain * tail / np.sqrt(SAMPLE_RATE * spec.rt60 / 13.8)
    return h


def room_irs(spec: RoomSpec, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(h_speaker, h_user)`` to the microphone, each scaled to unit energy."""
    mic, spk, usr = _positions(spec)
    if method == "auto":
        try:
            import pyroomacoustics  # noqa: F401

            method = "ism"
        except ImportError:
            method = "synthetic"
    if method == "ism":
        hs, hu = ism_rir(spec, spk, mic), ism_rir(spec, usr, mic)
    elif method == "synthetic":
        rng = np.random.default_rng(seed)
        hs, hu = synthetic_rir(spec, spec.speaker_mic_m, rng), synthetic_rir(spec, spec.user_mic_m, rng)
    else:
        raise ValueError(f"unknown RIR method {method!r} (auto, ism, synthetic)")
    return _unit(hs).astype(np.float32), _unit(hu).astype(np.float32)


def _unit(h: np.ndarray) -> np.ndarray:
    h = np.trim_zeros(h, "b")
    return h / np.sqrt(np.sum(h * h))


def soft_clip(x: np.ndarray, drive: float) -> np.ndarray:
    """A loudspeaker driven hard: unity gain for small signals, saturating at ``1/drive``."""
    if drive <= 0:
        return x
    return (np.tanh(drive * x) / drive).astype(np.float32)


class StreamConv:
    """Streaming FIR convolution (FFT overlap-add), frame in, frame out."""

    def __init__(self, h: np.ndarray, frame: int = FRAME_SAMPLES) -> None:
        self.h = np.asarray(h, dtype=np.float32)
        self.frame = frame
        self.nfft = 1 << int(np.ceil(np.log2(frame + len(self.h) - 1)))
        self._H = np.fft.rfft(self.h, self.nfft)
        self._tail = np.zeros(self.nfft, dtype=np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        assert n <= self.frame, f"frames of at most {self.frame} samples"
        y = np.fft.irfft(np.fft.rfft(x, self.nfft) * self._H, self.nfft).astype(np.float32)
        y += self._tail
        out = y[:n].copy()
        self._tail = np.concatenate([y[n:], np.zeros(n, dtype=np.float32)])
        return out


class RoomSimulator:
    """An engine mic filter adding the room, the agent's echo and noise (see module doc).

    Args:
        room: a :class:`RoomSpec` or the name of one in :data:`ROOMS`.
        echo_db: echo level relative to the user's at the microphone (dB).
        delay_ms: device delay between a chunk leaving the player and reaching the air.
        noise_db: background noise level, dBFS.
        drive: loudspeaker soft-clip drive (0: linear).
        play_db, user_db: nominal active-speech levels of the dry playback and dry user
            signals; ``echo_db`` holds for signals at these levels.
        method: RIRs from ``ism`` (pyroomacoustics), ``synthetic``, or ``auto``.
        user_reverb: convolve the user's audio with the room too.
    """

    def __init__(self, room: RoomSpec | str, echo_db: float, delay_ms: float, *, noise_db: float = -65.0,
                 drive: float = 1.5, play_db: float = -20.0, user_db: float = -20.0, method: str = "auto",
                 seed: int = 0, user_reverb: bool = True, frame: int = FRAME_SAMPLES) -> None:
        self.spec = ROOMS[room] if isinstance(room, str) else room
        assert delay_ms >= 0, "the device delay cannot be negative"
        self.echo_db = echo_db
        self.delay = int(round(delay_ms * SAMPLE_RATE / 1000))
        self.drive = drive
        self.frame = frame
        h_spk, h_user = room_irs(self.spec, method, seed)
        self.h_speaker, self.h_user = h_spk, h_user
        self.echo_gain = float(10 ** ((echo_db + user_db - play_db) / 20))
        self.noise_gain = float(10 ** (noise_db / 20))
        self._echo = StreamConv(h_spk, frame)
        self._user = StreamConv(h_user, frame) if user_reverb else None
        self._line = np.zeros(self.delay, dtype=np.float32)
        self._rng = np.random.default_rng(seed + 1)
        self._pink = np.zeros(1)
        self.last_echo = np.zeros(frame, dtype=np.float32)
        """The echo component of the last frame (for ERLE measurements)."""
        self.last_user = np.zeros(frame, dtype=np.float32)

    @property
    def delay_samples(self) -> int:
        """Current device delay: samples written to the speaker and not yet heard."""
        return len(self._line)

    def __call__(self, mic: np.ndarray, played: np.ndarray) -> np.ndarray:
        line = np.concatenate([self._line, played.astype(np.float32)])
        n = len(played)
        heard, self._line = line[:n], line[n:]
        echo = self.echo_gain * self._echo(soft_clip(heard, self.drive))
        user = self._user(mic) if self._user is not None else mic.astype(np.float32)
        noise = self._noise(n)
        self.last_echo, self.last_user = echo, user
        return (user + echo + noise).astype(np.float32)

    def _noise(self, n: int) -> np.ndarray:
        # Pink-ish: white noise through a one-pole low-pass (rooms hum low).
        from scipy.signal import lfilter

        w = self._rng.standard_normal(n)
        # 0.3122 = sqrt(1 - 0.95**2) keeps unit variance.
        out, self._pink = lfilter([0.3122], [1.0, -0.95], w, zi=self._pink)
        return (self.noise_gain * out).astype(np.float32)

    def underrun(self, n: int) -> None:
        """The output device ran dry for ``n`` samples: it played silence, and everything
        written afterwards is heard ``n`` samples later (the echo delay grows)."""
        self._line = np.concatenate([self._line, np.zeros(n, dtype=np.float32)])

    def drop(self, n: int) -> None:
        """The output device discarded the last ``n`` samples it had queued (a flush):
        they are never heard and the echo delay shrinks."""
        n = min(n, len(self._line))
        self._line = self._line[: len(self._line) - n]

    def render(self, user: np.ndarray, playback: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Whole signals through the streaming path: ``(mic, echo, user_at_mic)``."""
        n = min(len(user), len(playback)) // self.frame * self.frame
        mic = np.zeros(n, np.float32)
        echo = np.zeros(n, np.float32)
        usr = np.zeros(n, np.float32)
        for k in range(0, n, self.frame):
            sl = slice(k, k + self.frame)
            mic[sl] = self(user[sl], playback[sl])
            echo[sl], usr[sl] = self.last_echo, self.last_user
        return mic, echo, usr


def active_level_db(x: np.ndarray, frame: int = FRAME_SAMPLES, floor_db: float = -50.0) -> float:
    """RMS level (dBFS) over the frames louder than ``floor_db`` (speech, not pauses)."""
    n = len(x) // frame
    if n == 0:
        return -120.0
    fr = x[: n * frame].reshape(n, frame).astype(np.float64)
    p = np.mean(fr * fr, axis=1)
    act = p > 10 ** (floor_db / 10)
    if not act.any():
        return -120.0
    return float(10 * np.log10(np.mean(p[act])))


__all__ = ["ROOMS", "RoomSimulator", "RoomSpec", "StreamConv", "active_level_db", "ism_rir", "room_irs",
           "soft_clip", "synthetic_rir"]

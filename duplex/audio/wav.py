"""Reading, resampling and incrementally writing audio files."""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from duplex.audio import SAMPLE_RATE
from duplex.errors import AudioError

MIN_RATE = 8_000
"""The lowest sample rate read (telephone audio); below it a file is not speech audio."""
MAX_RATE = 384_000
MAX_CHANNELS = 64
MAX_AUDIO_S = 4 * 3600.0
"""The longest audio file read (and what a header may claim): longer is refused before
anything is allocated."""
_POLY_MAX = 1_000
"""Polyphase factors above this (an odd rate such as 44101 Hz) resample by FFT instead:
resample_poly's filter grows with the factor."""


def resample(x: np.ndarray, sr_from: int, sr_to: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling of a mono float32 signal."""
    if sr_from == sr_to or x.size == 0:
        return x.astype(np.float32, copy=False)
    g = math.gcd(sr_from, sr_to)
    up, down = sr_to // g, sr_from // g
    if max(up, down) > _POLY_MAX:
        from scipy.signal import resample as fft_resample

        n = max(1, int(round(len(x) * sr_to / sr_from)))
        return np.asarray(fft_resample(x, n), dtype=np.float32)
    return resample_poly(x, up, down).astype(np.float32)


def read_audio(path: str | Path, channels: str = "mix") -> np.ndarray:
    """Read any audio file soundfile knows (WAV of any format, FLAC, OGG) as 16 kHz mono.

    Args:
        path: the file.
        channels: ``mix`` averages channels; ``all`` keeps them (returns ``(n, ch)``).

    Raises:
        AudioError: the file is missing, empty, not audio, headerless (``.raw``), at a
            sample rate outside ``MIN_RATE``..``MAX_RATE``, longer than ``MAX_AUDIO_S``
            or holding non-finite samples (a float WAV's NaN).
    """
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise AudioError(f"audio file not found: {p}")
    if p.is_dir():
        raise AudioError(f"expected an audio file, got a directory: {p}")
    if p.suffix.lower() in (".raw", ".pcm"):
        raise AudioError(f"{p}: headerless audio has no sample rate or format; convert it to WAV first, "
                         f"e.g. sox -t raw -r 16000 -e signed -b 16 -c 1 {p.name} {p.stem}.wav")
    try:
        info = sf.info(str(p))
        _check_info(p, info.samplerate, info.channels, info.frames)
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, ValueError, TypeError, MemoryError, OSError) as exc:
        # TypeError: soundfile asks for a rate when it cannot find a header.
        raise AudioError(f"cannot read audio file {p}: {_first_line(exc)}") from exc
    if data.shape[0] == 0:
        raise AudioError(f"audio file is empty (a header and no samples): {p}")
    if not np.isfinite(data).all():
        raise AudioError(f"{p}: holds NaN or infinite samples; not usable audio")
    if channels == "all":
        return np.stack([resample(data[:, c], sr) for c in range(data.shape[1])], axis=1)
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return resample(mono, sr)


def _check_info(p: Path, sr: int, channels: int, frames: int) -> None:
    if not MIN_RATE <= sr <= MAX_RATE:
        raise AudioError(f"{p}: sample rate {sr} Hz is outside {MIN_RATE}..{MAX_RATE} Hz; not speech audio")
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioError(f"{p}: {channels} channels; duplex reads 1..{MAX_CHANNELS}")
    if frames / sr > MAX_AUDIO_S:
        raise AudioError(f"{p}: {frames / sr:.0f} s of audio (as its header says) is more than the "
                         f"{MAX_AUDIO_S:.0f} s duplex reads")


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write float32 audio (mono ``(n,)`` or ``(n, ch)``) as 16-bit PCM WAV."""
    import soundfile as sf

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16")


def to_pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


class IncrementalWav:
    """A 16-bit PCM WAV written as audio arrives, its header kept valid at each flush.

    After ``kill -9`` the file is at worst missing the samples since the last flush and
    carries a stale length in its header; :func:`repair_wav_header` fixes that.
    """

    def __init__(self, path: str | Path, sample_rate: int = SAMPLE_RATE, channels: int = 1) -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.channels = channels
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._n_bytes = 0
        self._f.write(_wav_header(0, sample_rate, channels))
        self._f.flush()

    @property
    def n_samples(self) -> int:
        return self._n_bytes // (2 * self.channels)

    def write(self, audio: np.ndarray) -> None:
        data = to_pcm16(audio)
        self._f.write(data)
        self._n_bytes += len(data)

    def flush(self) -> None:
        if self._f.closed:
            return
        pos = self._f.tell()
        self._f.seek(0)
        self._f.write(_wav_header(self._n_bytes, self.sample_rate, self.channels))
        self._f.seek(pos)
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self.flush()
            self._f.close()


def _wav_header(n_bytes: int, sr: int, ch: int) -> bytes:
    return (
        b"RIFF"
        + struct.pack("<I", 36 + n_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, ch, sr, sr * ch * 2, ch * 2, 16)
        + b"data"
        + struct.pack("<I", n_bytes)
    )


def repair_wav_header(path: str | Path) -> bool:
    """Make a PCM16 WAV's header agree with the file's size; returns True if it changed."""
    p = Path(path)
    size = p.stat().st_size
    if size < 44:
        raise AudioError(f"{p} is too short to be a WAV file ({size} bytes)")
    with open(p, "r+b") as f:
        head = f.read(44)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE" or head[36:40] != b"data":
            raise AudioError(f"{p} is not a WAV file written by duplex")
        ch, sr = struct.unpack("<HI", head[22:28])
        n_bytes = size - 44
        n_bytes -= n_bytes % (2 * ch)
        want = _wav_header(n_bytes, sr, ch)
        if head == want:
            return False
        f.seek(0)
        f.write(want)
        f.truncate(44 + n_bytes)
    return True


def level_db(x: np.ndarray) -> float:
    """RMS level in dBFS (floor −120)."""
    if x.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return max(-120.0, 20.0 * math.log10(rms + 1e-12))


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__

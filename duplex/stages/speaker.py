"""Who is speaking: a GE2E speaker encoder and a running user / agent / other gate.

The encoder is Resemblyzer's voice encoder (Wan et al., "Generalized end-to-end loss
for speaker verification", 2018): a 3-layer LSTM over 40-band mel power frames
(25 ms window, 10 ms hop, 16 kHz) whose last hidden state, projected and L2-normed, is
a 256-dim d-vector. Its weights ship inside the ``resemblyzer`` wheel
(``resemblyzer/pretrained.pt``, Apache-2.0). We load them with torch directly and
compute the mel frames here instead of importing ``resemblyzer``: its audio module
imports ``webrtcvad`` (an sdist that needs a C compiler and imports ``pkg_resources``)
and ``librosa`` at import time, neither of which the encoder needs.

:class:`SpeakerGate` is fed the frames of one speech run (what the VAD calls speech,
typically while the agent is talking), embeds the last 0.4-1.6 s a few times per
second and keeps a running cosine similarity to the enrolled user's profile (if any)
and to the agent's own TTS voice, and says ``user``, ``agent``, ``other_speaker`` or
``unknown`` with a confidence. Embedding costs a few ms (see benchmarks/speaker.py);
the gate is thread-safe so the engine can call it from an executor.
"""

from __future__ import annotations

import hashlib
import logging
import math
import pickle
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.config import SpeakerConfig
from duplex.errors import ModelError, SpeakerError
from duplex.resources import resolve_model_path
from duplex.speaker_profiles import ProfileStore, VoiceProfile
from duplex.stages.vad import SileroVAD

log = logging.getLogger(__name__)

# --- the model's front end (GE2E / Resemblyzer hyper-parameters) -----------------------

MEL_WINDOW_MS = 25
MEL_HOP_MS = 10
N_MELS = 40
MEL_WINDOW = SAMPLE_RATE * MEL_WINDOW_MS // 1000  # 400 samples
MEL_HOP = SAMPLE_RATE * MEL_HOP_MS // 1000  # 160 samples
PARTIAL_FRAMES = 160
"""Mel frames in one training partial utterance (1.6 s)."""
PARTIAL_SAMPLES = PARTIAL_FRAMES * MEL_HOP  # 25600 = 1.6 s
PARTIAL_HOP = PARTIAL_SAMPLES // 2
"""Long audio is cut into 1.6 s partials every 0.8 s, and their embeddings averaged."""
HIDDEN = 256
EMBED_DIM = 256
N_LAYERS = 3
TARGET_DBFS = -30.0
"""Each window is scaled to this RMS level before the mel frames (Resemblyzer's level)."""
SILENCE_DBFS = -60.0
"""A window quieter than this has no voice to embed."""

ENCODER_ID = "resemblyzer-ge2e-0.1.4"
"""Stored with every profile: embeddings from another encoder are not comparable."""
DEFAULT_WEIGHTS = "package:resemblyzer/pretrained.pt"

SpeakerLabel = Literal["user", "agent", "other_speaker", "unknown"]

AGENT_SENTENCES = (
    "Sure, I can help with that. Let me check the weather for tomorrow morning.",
    "That sounds like a great plan. Would you like me to set a reminder for it?",
    "Here is what I found: the shop opens at nine and closes at six on weekdays.",
    "I'm sorry, I didn't catch that. Could you say it once more, a little slower?",
)
"""What the agent says to itself at start-up to learn its own voice's embedding."""


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    # Slaney's auditory-toolbox scale (librosa's default, htk=False): linear below 1 kHz, log above.
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    above = f >= min_log_hz
    mels[above] = min_log_mel + np.log(f[above] / min_log_hz) / logstep
    return mels


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * m
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    above = m >= min_log_mel
    freqs[above] = min_log_hz * np.exp(logstep * (m[above] - min_log_mel))
    return freqs


def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = MEL_WINDOW, n_mels: int = N_MELS) -> np.ndarray:
    """Slaney-normalised triangular mel filters, ``(n_mels, 1 + n_fft // 2)`` (= librosa.filters.mel)."""
    fft_freqs = np.linspace(0.0, sr / 2, 1 + n_fft // 2)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([sr / 2]))[0], n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


_MEL_BASIS = mel_filterbank()
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(MEL_WINDOW) / MEL_WINDOW)).astype(np.float32)  # periodic Hann


def mel_frames(audio: np.ndarray) -> np.ndarray:
    """Mel power frames ``(T, 40)`` of 16 kHz audio, as the encoder was trained on.

    Centred STFT (reflect padding), periodic Hann window of 25 ms, 10 ms hop, power
    spectrum through Slaney mel filters; not a log spectrum (GE2E's training input).
    """
    x = np.pad(audio.astype(np.float32), MEL_WINDOW // 2, mode="reflect")
    n = 1 + (len(x) - MEL_WINDOW) // MEL_HOP
    frames = np.lib.stride_tricks.as_strided(
        x, shape=(n, MEL_WINDOW), strides=(x.strides[0] * MEL_HOP, x.strides[0]), writeable=False
    )
    spec = np.abs(np.fft.rfft(frames * _WINDOW, axis=1)) ** 2  # (T, 201)
    return (spec.astype(np.float32) @ _MEL_BASIS.T).astype(np.float32)  # (T, 40)


def level_dbfs(audio: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    return 20.0 * math.log10(max(rms, 1e-10))


def normalize_level(audio: np.ndarray, target_dbfs: float = TARGET_DBFS) -> np.ndarray:
    """Scale to ``target_dbfs`` RMS: the encoder reads linear mel power, so level matters."""
    gain = 10.0 ** ((target_dbfs - level_dbfs(audio)) / 20.0)
    return (audio * gain).astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))


# --- the encoder -----------------------------------------------------------------------


class SpeakerEncoder:
    """GE2E d-vectors: ``embed(audio_16k) -> (256,)``, L2-normed, non-negative.

    Args:
        weights: ``package:resemblyzer/pretrained.pt`` (default) or a path to a
            Resemblyzer-format checkpoint (``{"model_state": {...}}``).

    Thread-safe: forward passes are serialised by a lock. Each thread that runs the
    encoder first sets its own intra-op thread count to ``threads``: OpenMP settings are
    per thread, and a fresh executor thread otherwise uses every core; on a loaded 2-core
    machine that measured 0.2-0.7 s per 1.6 s window instead of 0.03 s.
    """

    def __init__(self, weights: str = DEFAULT_WEIGHTS, threads: int = 1) -> None:
        import torch
        from torch import nn

        try:
            path = resolve_model_path(weights)
        except ModelError as exc:
            raise SpeakerError(f"speaker encoder weights not found ({weights}): pip install --no-deps resemblyzer==0.1.4 "
                              "(the wheel is only needed for its pretrained.pt)") from exc
        try:
            ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, ValueError, pickle.UnpicklingError, EOFError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise SpeakerError(f"cannot load speaker encoder weights {path}: {first}") from exc
        state = ckpt.get("model_state", ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(state, dict):
            raise SpeakerError(f"{path} is not a Resemblyzer voice-encoder checkpoint")
        self._torch = torch
        self.lstm = nn.LSTM(N_MELS, HIDDEN, N_LAYERS, batch_first=True)
        self.linear = nn.Linear(HIDDEN, EMBED_DIM)
        wanted = {k: v for k, v in state.items() if k.startswith(("lstm.", "linear."))}
        try:
            self.lstm.load_state_dict({k[5:]: v for k, v in wanted.items() if k.startswith("lstm.")})
            self.linear.load_state_dict({k[7:]: v for k, v in wanted.items() if k.startswith("linear.")})
        except RuntimeError as exc:
            raise SpeakerError(f"{path}: weights do not fit the GE2E encoder: {exc}") from exc
        self.lstm.eval()
        self.linear.eval()
        self.weights_path = path
        self.id = ENCODER_ID
        self.threads = threads
        self._lock = threading.Lock()
        self._local = threading.local()

    def _forward(self, mels: np.ndarray) -> np.ndarray:
        """``(B, T, 40)`` mel frames → ``(B, 256)`` unit embeddings."""
        torch = self._torch
        if getattr(self._local, "threads", None) != self.threads:
            torch.set_num_threads(self.threads)
            self._local.threads = self.threads
        with self._lock, torch.inference_mode():
            _, (hidden, _) = self.lstm(torch.from_numpy(mels))  # hidden: (layers, B, 256)
            raw = torch.relu(self.linear(hidden[-1]))  # (B, 256)
            out = raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return out.numpy().astype(np.float32)

    def embed(self, audio: np.ndarray) -> np.ndarray:
        """One 16 kHz window (0.4 s or more of speech) → ``(256,)``.

        Up to 1.6 s is one pass over its own frames (no padding); longer audio is cut
        into 1.6 s partials every 0.8 s whose embeddings are averaged and renormed.

        Raises:
            SpeakerError: the window is shorter than 0.1 s or silent.
        """
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if len(audio) < SAMPLE_RATE // 10:
            raise SpeakerError(f"speaker window too short: {len(audio) / SAMPLE_RATE:.2f} s (need 0.4 s or more)")
        if level_dbfs(audio) < SILENCE_DBFS:
            raise SpeakerError(f"speaker window is silent ({level_dbfs(audio):.0f} dBFS)")
        audio = normalize_level(audio)
        if len(audio) <= PARTIAL_SAMPLES:
            mel = mel_frames(audio)[None]  # (1, T, 40)
            return self._forward(mel)[0]
        mel = mel_frames(audio)  # (T, 40)
        starts = range(0, max(1, mel.shape[0] - PARTIAL_FRAMES + 1), PARTIAL_HOP // MEL_HOP)
        parts = np.stack([mel[s : s + PARTIAL_FRAMES] for s in starts])  # (B, 160, 40)
        e = self._forward(parts).mean(axis=0)
        return (e / max(float(np.linalg.norm(e)), 1e-12)).astype(np.float32)

    def embed_partials(self, audio: np.ndarray) -> np.ndarray:
        """Long audio → ``(B, 256)``: one embedding per 1.6 s partial (0.8 s apart)."""
        audio = normalize_level(np.asarray(audio, dtype=np.float32).reshape(-1))
        if len(audio) < PARTIAL_SAMPLES:
            return self.embed(audio)[None]
        mel = mel_frames(audio)
        starts = range(0, mel.shape[0] - PARTIAL_FRAMES + 1, PARTIAL_HOP // MEL_HOP)
        return self._forward(np.stack([mel[s : s + PARTIAL_FRAMES] for s in starts]))


# --- profiles from audio ---------------------------------------------------------------


class _Synth(Protocol):
    def synthesize(self, text: str) -> Iterable[np.ndarray]: ...


def speech_only(audio: np.ndarray, vad_probs: np.ndarray, threshold: float = 0.5, pad_frames: int = 2) -> np.ndarray:
    """The frames of ``audio`` the VAD calls speech (each run padded by ``pad_frames``), joined."""
    voiced = vad_probs >= threshold
    if pad_frames:
        k = np.ones(2 * pad_frames + 1)
        voiced = np.convolve(voiced.astype(float), k, mode="same") > 0
    frames = [audio[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES] for i in np.flatnonzero(voiced)]
    return np.concatenate(frames).astype(np.float32) if frames else np.zeros(0, np.float32)


def profile_from_speech(encoder: SpeakerEncoder, speech: np.ndarray, name: str, *, source: str = "",
                        min_speech_s: float = 2.0) -> VoiceProfile:
    """A voice profile from speech-only 16 kHz audio (silences already removed).

    Raises:
        SpeakerError: less than ``min_speech_s`` of speech.
    """
    seconds = len(speech) / SAMPLE_RATE
    if seconds < min_speech_s:
        raise SpeakerError(
            f"only {seconds:.1f} s of speech{' in ' + source if source else ''}; "
            f"enrolment needs at least {min_speech_s:.0f} s (10 s or more works best): record a longer sample"
        )
    parts = encoder.embed_partials(speech)  # (B, 256)
    centroid = parts.mean(axis=0)
    centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
    sims = parts @ centroid
    return VoiceProfile(
        name=name,
        embedding=centroid.astype(np.float32),
        encoder=encoder.id,
        speech_s=round(seconds, 2),
        n_windows=int(parts.shape[0]),
        self_sim_mean=round(float(sims.mean()), 4),
        self_sim_min=round(float(sims.min()), 4),
        level_dbfs=round(level_dbfs(speech), 1),
        source=source,
    )


def profile_from_recording(encoder: SpeakerEncoder, audio: np.ndarray, name: str, *, source: str = "",
                           min_speech_s: float = 2.0) -> tuple[VoiceProfile, np.ndarray]:
    """A voice profile from a recording of the user alone, and the speech it was made of:
    silero VAD keeps the speech, then :func:`profile_from_speech`. Slow (the VAD and the
    encoder): call it off the loop."""
    speech = speech_only(audio, SileroVAD().probabilities(audio))
    return profile_from_speech(encoder, speech, name, source=source, min_speech_s=min_speech_s), speech


def agent_profile(encoder: SpeakerEncoder, tts: _Synth, sentences: Sequence[str] = AGENT_SENTENCES,
                  name: str = "agent") -> VoiceProfile:
    """The agent's own voice: embed a few sentences synthesised with the configured TTS."""
    audio = [np.concatenate(list(tts.synthesize(s))) for s in sentences]
    speech = np.concatenate([a for a in audio if a.size]).astype(np.float32)
    # TTS output has short pauses only; trim digital silence so it does not dilute the partials.
    frames = speech[: len(speech) // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
    loud = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)) > 10 ** (-50 / 20)
    return profile_from_speech(encoder, frames[loud].reshape(-1), name, source="tts", min_speech_s=2.0)


# --- the gate --------------------------------------------------------------------------


GateConfig = SpeakerConfig
"""The gate's windowing and thresholds are the ``[speaker]`` config section."""

MIN_FORCED_S = 0.2
"""The shortest speech a forced embedding judges (a short run that ended before ``min_window_s``)."""
REFERENCE_WINDOW_S = PARTIAL_SAMPLES / SAMPLE_RATE
"""Thresholds are stated for 1.6 s windows; shorter windows' similarities are adjusted up."""


def length_adjustment(window_s: float, cfg: SpeakerConfig) -> float:
    """What to add to a ``window_s`` window's similarity to compare it with 1.6 s thresholds.

    Same-speaker similarity falls as the window shortens (less of the voice is heard);
    measured on real speech it falls by about 0.1 per second below 1.6 s.
    """
    return cfg.length_slope * max(0.0, REFERENCE_WINDOW_S - window_s)


@dataclass(frozen=True, slots=True)
class SpeakerVerdict:
    """The gate's reading of the current speech run at ``t`` (session clock)."""

    t: float
    label: SpeakerLabel
    confidence: float
    """0..1: how far the running similarity lies from the threshold it was judged by."""
    sim_user: float | None
    """Running similarity to the enrolled user, 1.6 s-equivalent (None without enrolment)."""
    sim_agent: float | None
    """Running similarity to the agent's voice, 1.6 s-equivalent (None without an agent profile)."""
    window_s: float
    """Seconds of speech heard in this run so far."""
    n_embeddings: int


UNKNOWN = SpeakerVerdict(0.0, "unknown", 0.0, None, None, 0.0, 0)


def _conf(distance: float, slope: float) -> float:
    # 0 at the threshold, ->1 far from it: 2*sigmoid(d/slope) - 1.
    return round(float(np.tanh(abs(distance) / (2 * slope))), 3)


def decide(sim_user: float | None, sim_agent: float | None, cfg: SpeakerConfig,
           agent_possible: bool = True) -> tuple[SpeakerLabel, float]:
    """Label and confidence from running similarities (pure: the policy of the gate)."""
    if agent_possible and sim_agent is not None and sim_agent >= cfg.agent_threshold and (
        sim_user is None or sim_agent - sim_user >= cfg.margin
    ):
        d = sim_agent - cfg.agent_threshold if sim_user is None else min(sim_agent - cfg.agent_threshold,
                                                                        sim_agent - sim_user)
        return "agent", _conf(d, cfg.slope)
    if sim_user is None:
        # No enrolment: the gate can only tell the agent's own voice from "someone".
        d = (cfg.agent_threshold - sim_agent) if sim_agent is not None else 0.0
        return "unknown", _conf(d, cfg.slope) if agent_possible else 0.0
    if sim_user >= cfg.user_threshold:
        return "user", _conf(sim_user - cfg.user_threshold, cfg.slope)
    if sim_user < cfg.other_threshold:
        return "other_speaker", _conf(cfg.other_threshold - sim_user, cfg.slope)
    mid = (cfg.user_threshold + cfg.other_threshold) / 2
    return "unknown", round(1.0 - _conf(sim_user - mid, cfg.slope), 3)


class SpeakerGate:
    """Running speaker decision over one speech run at a time.

    Feed it the frames the VAD calls speech with :meth:`push`; call :meth:`reset` when
    the run ends. Every ``every_s`` (once ``min_window_s`` of speech is buffered) it
    embeds the last ``max_window_s`` and updates the running similarities, which are the
    duration-weighted mean of the window similarities in this run, each adjusted to its
    1.6 s equivalent (:func:`length_adjustment`). ``agent`` and ``other_speaker`` also
    need the latest window to say the same (a speaker change inside a run, the user
    talking into the agent's echo, is ``unknown``, never rejected). All methods are
    thread-safe; :meth:`push` (= :meth:`feed` + :meth:`update`) runs the encoder, so call
    it from an executor.

    Args:
        encoder: the speaker encoder.
        user: the enrolled user's profile, or None (agent-voice rejection only).
        agent: the agent's TTS voice profile, or None.
        cfg: windowing and thresholds.
    """

    def __init__(self, encoder: SpeakerEncoder, user: VoiceProfile | None, agent: VoiceProfile | None,
                 cfg: SpeakerConfig | None = None) -> None:
        self.cfg = cfg or SpeakerConfig()
        for p in (user, agent):
            if p is not None and p.encoder != encoder.id:
                raise SpeakerError(
                    f"voice profile '{p.name}' was made with {p.encoder}, not {encoder.id}: enrol again"
                )
        self.encoder = encoder
        self.user = user
        self.agent = agent
        self._max = int(round(self.cfg.max_window_s * SAMPLE_RATE))
        self._min = int(round(self.cfg.min_window_s * SAMPLE_RATE))
        self._every = int(round(self.cfg.every_s * SAMPLE_RATE))
        self._lock = threading.Lock()
        self.embed_count = 0
        """Embeddings computed since construction (for cost accounting)."""
        self._run = 0
        self.reset()

    def reset(self) -> None:
        """Forget the current speech run (call when it ends)."""
        with self._lock:
            self._run += 1
            self._buf: deque[np.ndarray] = deque()
            self._buffered = 0
            self._run_samples = 0
            self._since = 0
            self._w = 0.0
            self._su = 0.0
            self._sa = 0.0
            self._n = 0
            self._agent_heard = False
            self._agent_recent = False
            self._verdict = UNKNOWN

    @property
    def verdict(self) -> SpeakerVerdict:
        with self._lock:
            return self._verdict

    def push(self, frame: np.ndarray, t: float, agent_speaking: bool = True) -> SpeakerVerdict | None:
        """:meth:`feed` one speech frame, then :meth:`update` if an embedding is due.

        Returns the new verdict when an embedding was computed, else None. Runs the
        encoder: call it from an executor (or use ``feed`` on the frame path and
        ``update`` on a worker of its own).
        """
        return self.update(t) if self.feed(frame, agent_speaking) else None

    def feed(self, frame: np.ndarray, agent_speaking: bool = True) -> bool:
        """Add one speech frame (cheap); True when an embedding is due.

        Args:
            frame: float32 16 kHz audio (any length; the engine's frame).
            agent_speaking: the agent's audio was playing: only then can speech be its echo.
        """
        frame = np.asarray(frame, dtype=np.float32).reshape(-1)
        with self._lock:
            self._buf.append(frame)
            self._buffered += len(frame)
            self._run_samples += len(frame)
            self._since += len(frame)
            self._agent_heard = self._agent_heard or agent_speaking
            self._agent_recent = agent_speaking
            while self._buffered - len(self._buf[0]) >= self._max:
                self._buffered -= len(self._buf.popleft())
            return self._buffered >= self._min and (self._n == 0 or self._since >= self._every)

    def update(self, t: float, force: bool = False) -> SpeakerVerdict | None:
        """Embed the last ``max_window_s`` of the run and update the verdict (slow part).

        The lock is not held during the forward pass, so ``feed`` never waits for it; a
        result that arrives after :meth:`reset` is dropped.

        Args:
            t: session-clock time the verdict is stamped with (the last fed frame's end).
            force: embed a run shorter than ``min_window_s`` too (down to
                :data:`MIN_FORCED_S`): a short run that ended is judged on what it had.
        """
        with self._lock:
            if self._buffered < (min(self._min, int(MIN_FORCED_S * SAMPLE_RATE)) if force else self._min):
                return None
            window = np.concatenate(self._buf)[-self._max :]
            run_s = round(self._run_samples / SAMPLE_RATE, 3)
            self._since = 0
            run = self._run
            agent_now = self._agent_recent
        if level_dbfs(window) < SILENCE_DBFS:
            return None
        e = self.encoder.embed(window)  # (256,)
        w = len(window) / SAMPLE_RATE
        adj = length_adjustment(w, self.cfg)
        su1 = cosine(e, self.user.embedding) + adj if self.user is not None else 0.0
        sa1 = cosine(e, self.agent.embedding) + adj if self.agent is not None else 0.0
        with self._lock:
            self.embed_count += 1
            if run != self._run:
                return None
            self._w += w
            self._n += 1
            self._su += w * su1
            self._sa += w * sa1
            su = round(self._su / self._w, 4) if self.user is not None else None
            sa = round(self._sa / self._w, 4) if self.agent is not None else None
            label, conf = decide(su, sa, self.cfg, agent_possible=self._agent_heard)
            if label in ("agent", "other_speaker"):
                # Rejecting needs the latest window to agree with the run so far: a run the
                # agent's echo opened and the user then talked into is not the agent's any more.
                now, now_conf = decide(su1 if self.user is not None else None,
                                       sa1 if self.agent is not None else None, self.cfg,
                                       agent_possible=agent_now)
                if now != label:
                    label, conf = "unknown", 0.0
                else:
                    conf = min(conf, now_conf)
            self._verdict = SpeakerVerdict(t, label, conf, su, sa, run_s, self._n)
            return self._verdict

    def fresh(self) -> SpeakerGate:
        """A gate with the same encoder, profiles and config, and no run heard (one per engine)."""
        return SpeakerGate(self.encoder, self.user, self.agent, self.cfg)

    @property
    def mode(self) -> str:
        """``user+agent``, ``agent`` (no enrolment: agent-voice rejection only), ``user`` or ``none``."""
        return {(True, True): "user+agent", (False, True): "agent", (True, False): "user"}.get(
            (self.user is not None, self.agent is not None), "none")

    def describe(self) -> str:
        """One line for ``duplex run``: what the gate can and cannot tell."""
        if self.user is None and self.agent is None:
            return "speaker gate: no profiles, every voice is 'unknown'"
        if self.user is None:
            why = (f"voice '{self.cfg.profile}' is not enrolled (duplex enroll --name {self.cfg.profile})"
                   if self.cfg.profile else "no enrolled user ([speaker] profile = NAME after duplex enroll)")
            return (f"speaker gate: {why}, so only the agent's own voice is recognised; "
                    "other voices count as the user")
        agent = ", agent voice known" if self.agent is not None else ""
        return f"speaker gate: user '{self.user.name}' enrolled ({self.user.speech_s:.0f} s){agent}"


class SpeakerTrack:
    """The engine's side of the gate: which frames it hears, and the verdict per speech run.

    Called once per frame from the engine's executor hop (so embeddings run in step with
    the frames: the same input gives the same verdicts, live or in replay). It feeds the
    gate the frames of a speech run while the agent speaks or is paused, and, with a
    user enrolled and ``screen_turns``, every speech run. The frames the VAD needed to
    confirm an onset are fed too (kept in a short ring). When a run ends its verdict is
    kept as :attr:`last` until the next run starts, so an end of turn decided in the
    silence after it can be screened.
    """

    RING_FRAMES = 8
    """Frames kept before an onset is confirmed (the VAD's min_speech, 256 ms at most)."""

    def __init__(self, gate: SpeakerGate) -> None:
        self.gate = gate
        self.screen_turns = gate.cfg.screen_turns and gate.user is not None
        self._ring: deque[np.ndarray] = deque(maxlen=self.RING_FRAMES)
        self._feeding = False
        self.last: SpeakerVerdict | None = None
        """The finished run's verdict (None once a new run starts, or if it had none)."""

    def reset(self) -> None:
        self.gate.reset()
        self._ring.clear()
        self._feeding = False
        self.last = None

    def step(self, frame: np.ndarray, *, t: float, speaking: bool, voiced: bool, started: bool, speech_run: float,
             agent_speaking: bool, agent_audible: bool) -> tuple[SpeakerVerdict | None, bool]:
        """One frame; returns (the verdict that applies now, whether it is new this frame).

        Args:
            frame: the microphone frame after echo cancellation.
            t: the frame's end on the session clock.
            speaking: the VAD segmenter's state (a run in progress, its hangover included).
            voiced: the VAD calls this frame speech (only such frames are embedded).
            started: the run was confirmed on this frame.
            speech_run: seconds of the run so far (to replay the onset from the ring).
            agent_speaking: a reply holds the floor (playing or paused).
            agent_audible: the agent's audio is playing now (only then can speech be its echo).
        """
        frame = np.asarray(frame, dtype=np.float32)
        if started:
            self.last = None
        if not speaking:
            forced = None
            if self._feeding:
                v = self.gate.verdict
                if not v.n_embeddings:  # a short run: judge it on what it had
                    v = forced = self.gate.update(t, force=True) or v
                self.last = v if v.n_embeddings else None
                self.gate.reset()
                self._feeding = False
            self._ring.append(frame)
            return self.last, forced is not None
        new: SpeakerVerdict | None = None
        if not self._feeding and (agent_speaking or self.screen_turns):
            self._feeding = True
            # The run began before it was confirmed (or before the agent spoke): its earlier
            # frames are in the ring.
            back = min(len(self._ring), max(0, int(round(speech_run * SAMPLE_RATE / FRAME_SAMPLES)) - 1))
            for old in list(self._ring)[len(self._ring) - back:] if back else []:
                self.gate.feed(old, agent_audible)
        self._ring.append(frame)
        if self._feeding and voiced:
            new = self.gate.push(frame, t, agent_audible)
        v = self.gate.verdict if self._feeding else None
        return (v if v is not None and v.n_embeddings else None), new is not None


def gate_record(gate: SpeakerGate | None) -> dict[str, Any] | None:
    """What a session records of the gate (``session.json``'s ``speaker_gate``): its mode
    and both voice profiles, embeddings included, so a replay hears with the same voices
    even after the user enrols again or on another machine."""
    if gate is None:
        return None
    return {
        "mode": gate.mode,
        "encoder": gate.encoder.id,
        "user": gate.user.to_dict() if gate.user is not None else None,
        "agent": gate.agent.to_dict() if gate.agent is not None else None,
    }


def recorded_gate(record: dict[str, Any], gate: SpeakerGate) -> SpeakerGate:
    """``gate`` (the replay's, with its encoder and config) with the profiles ``record``
    (:func:`gate_record`) holds. Raises :class:`SpeakerError` if they cannot be used
    (another encoder, a corrupt profile)."""
    if not isinstance(record, dict):
        raise SpeakerError("session.json: speaker_gate is not a mapping")
    user = VoiceProfile.from_dict(record["user"], "the recorded user profile") if record.get("user") else None
    agent = VoiceProfile.from_dict(record["agent"], "the recorded agent profile") if record.get("agent") else None
    return SpeakerGate(gate.encoder, user, agent, gate.cfg)


def mode_line(cfg: SpeakerConfig, gate: SpeakerGate | None) -> str:
    """One line for ``duplex run``: whether the speaker gate is on, and what it can tell."""
    if not cfg.enabled:
        return "speaker gate: off (speaker.enabled = false): any voice can barge in or end a turn"
    if gate is None:
        return "speaker gate: enabled but not loaded: any voice can barge in or end a turn"
    return gate.describe()


def agent_cache_key(voice: str, speed: float, sentences: Sequence[str] = AGENT_SENTENCES) -> str:
    """A profile name for the agent voice's cached embedding (changes with the voice or the text)."""
    h = hashlib.sha1(f"{ENCODER_ID}|{voice}|{speed}|{'|'.join(sentences)}".encode()).hexdigest()[:16]
    return f"agent-{h}"


def make_speaker_gate(cfg: SpeakerConfig, tts: _Synth | None, *, tts_voice: str = "", tts_speed: float = 1.0,
                      store: ProfileStore | None = None, encoder: SpeakerEncoder | None = None) -> SpeakerGate | None:
    """The gate the config asks for (None when ``speaker.enabled`` is false).

    The user's profile is ``cfg.profile`` from the voices directory, or None when none is
    named or it is not enrolled (then only the agent's own voice is recognised: :meth:`SpeakerGate.describe`
    says so). The agent's profile is synthesised with ``tts`` once and cached in the
    voices directory's ``agent/`` folder, keyed by ``tts_voice`` and ``tts_speed``.
    Slow (loads the encoder, may synthesise a few sentences): call it from an executor
    at start-up, never on the event loop.
    """
    if not cfg.enabled:
        return None
    store = store or ProfileStore()
    encoder = encoder or SpeakerEncoder(threads=cfg.threads)
    user = store.load(cfg.profile) if cfg.profile and store.exists(cfg.profile) else None
    agent = None
    if tts is not None:
        cache = ProfileStore(store.root / "agent")
        key = agent_cache_key(tts_voice or type(tts).__name__, tts_speed)
        if cache.exists(key):
            agent = cache.load(key)
        else:
            agent = agent_profile(encoder, tts, name=key)
            try:
                cache.save(agent)
            except SpeakerError as exc:  # a read-only home still gets a working gate
                log.warning("agent voice profile not cached: %s", exc)
    return SpeakerGate(encoder, user, agent, cfg)


__all__ = [
    "AGENT_SENTENCES",
    "ENCODER_ID",
    "GateConfig",
    "gate_record",
    "profile_from_recording",
    "recorded_gate",
    "REFERENCE_WINDOW_S",
    "SpeakerEncoder",
    "SpeakerGate",
    "SpeakerLabel",
    "SpeakerTrack",
    "SpeakerVerdict",
    "agent_profile",
    "cosine",
    "decide",
    "length_adjustment",
    "agent_cache_key",
    "make_speaker_gate",
    "mode_line",
    "mel_filterbank",
    "mel_frames",
    "profile_from_speech",
    "speech_only",
]

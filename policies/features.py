"""Per-frame features of both sides of the conversation, computed from one PolicyInput.

The same :class:`Featurizer` runs at training time (over harness-built inputs) and in
:class:`policies.predictor.PredictorPolicy`, so the model never sees a feature it was
not trained on. Everything is causal: a frame's features depend on it and the frame
before (a 64 ms analysis window for the spectra and the pitch).

Layout of the vector (``N_FEATURES`` floats), all roughly in [-3, 3] before the
model's own normalisation:

* microphone: ``N_MEL`` log-mel bands, level, voicing strength and log-pitch;
* playback (the echo reference): ``N_MEL_PLAY`` log-mel bands, level, mic-minus-playback;
* listener: VAD probability, user_speaking, speech_run, silence;
* agent: agent_speaking, agent_spoken;
* lexical, from the ASR partial: word count, backchannel share, stop word, a trailing
  word that asks for more (``and``, ``to``, ``um``...), a partial at all.
"""

from __future__ import annotations

import numpy as np

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.turn import PolicyInput, backchannel_score, has_stop_word, words

N_FFT = 2 * FRAME_SAMPLES
N_MEL = 24
N_MEL_PLAY = 12
CONTINUATION_WORDS = frozenset(
    "and but or so because the a an to of for with in on at my your um uh er like if that "
    "then which who when is are was were i we you".split()
)
"""Words after which an utterance is rarely complete."""

FEATURE_NAMES: tuple[str, ...] = (
    *(f"mic_mel{i}" for i in range(N_MEL)),
    "mic_db",
    "mic_voicing",
    "mic_logf0",
    *(f"play_mel{i}" for i in range(N_MEL_PLAY)),
    "play_db",
    "mic_minus_play_db",
    "vad",
    "user_speaking",
    "speech_run",
    "silence",
    "agent_speaking",
    "agent_spoken",
    "lex_words",
    "lex_backchannel",
    "lex_stop",
    "lex_continuation",
    "lex_any",
)
N_FEATURES = len(FEATURE_NAMES)
LEXICAL = slice(FEATURE_NAMES.index("lex_words"), N_FEATURES)


def mel_filterbank(n_mels: int, n_fft: int = N_FFT, fmin: float = 60.0, fmax: float = 7600.0) -> np.ndarray:
    """Triangular mel filters, ``(n_mels, n_fft // 2 + 1)``, HTK mel scale."""

    def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    freqs = np.linspace(0, SAMPLE_RATE / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fb = np.zeros((n_mels, len(freqs)), dtype=np.float32)
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        up = (freqs - lo) / max(mid - lo, 1e-6)
        down = (hi - freqs) / max(hi - mid, 1e-6)
        fb[m] = np.maximum(0.0, np.minimum(up, down))
    fb /= np.maximum(fb.sum(axis=1, keepdims=True), 1e-6)
    return fb


_WINDOW = np.hanning(N_FFT).astype(np.float32)
_MEL = mel_filterbank(N_MEL)
_MEL_PLAY = mel_filterbank(N_MEL_PLAY)
_LAG_MIN = SAMPLE_RATE // 400  # 400 Hz
_LAG_MAX = SAMPLE_RATE // 60  # 60 Hz


def _db(x: np.ndarray) -> float:
    return float(10.0 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-12))


class Featurizer:
    """Turns each :class:`PolicyInput` into a ``(N_FEATURES,)`` float32 vector, causally."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._mic = np.zeros(N_FFT, dtype=np.float32)
        self._play = np.zeros(N_FFT, dtype=np.float32)
        self._partial: str | None = None
        self._lex = np.zeros(5, dtype=np.float32)

    def _lexical(self, partial: str) -> np.ndarray:
        # Partials change every few frames at most; the regexes run once per change.
        if partial != self._partial:
            ws = words(partial)
            self._lex = np.array(
                [np.log1p(len(ws)), backchannel_score(partial), float(has_stop_word(partial)),
                 float(bool(ws) and ws[-1] in CONTINUATION_WORDS), float(bool(ws))],
                dtype=np.float32,
            )
            self._partial = partial
        return self._lex

    def __call__(self, x: PolicyInput) -> np.ndarray:
        self._mic[:FRAME_SAMPLES] = self._mic[FRAME_SAMPLES:]
        self._mic[FRAME_SAMPLES:] = x.mic
        self._play[:FRAME_SAMPLES] = self._play[FRAME_SAMPLES:]
        self._play[FRAME_SAMPLES:] = x.playback
        out = np.empty(N_FEATURES, dtype=np.float32)
        k = 0
        spec = np.fft.rfft(self._mic * _WINDOW)
        power = (spec.real**2 + spec.imag**2).astype(np.float32)  # (N_FFT/2+1,)
        out[k : k + N_MEL] = (np.log10(_MEL @ power + 1e-9) + 4.0) / 3.0
        k += N_MEL
        mic_db = _db(x.mic)
        out[k] = (mic_db + 50.0) / 25.0
        # Autocorrelation pitch: voicing strength and log F0 (0 when unvoiced).
        ac = np.fft.irfft(power)
        r0 = float(ac[0]) + 1e-9
        seg = ac[_LAG_MIN:_LAG_MAX]
        lag = int(np.argmax(seg))
        voicing = float(seg[lag]) / r0 if mic_db > -65.0 else 0.0
        out[k + 1] = voicing
        out[k + 2] = np.log2(SAMPLE_RATE / (lag + _LAG_MIN) / 150.0) if voicing > 0.3 else 0.0
        k += 3
        pspec = np.fft.rfft(self._play * _WINDOW)
        ppow = (pspec.real**2 + pspec.imag**2).astype(np.float32)
        out[k : k + N_MEL_PLAY] = (np.log10(_MEL_PLAY @ ppow + 1e-9) + 4.0) / 3.0
        k += N_MEL_PLAY
        play_db = _db(x.playback)
        out[k] = (play_db + 50.0) / 25.0
        out[k + 1] = float(np.clip(mic_db - play_db, -60.0, 60.0)) / 20.0
        k += 2
        out[k] = x.vad
        out[k + 1] = float(x.user_speaking)
        out[k + 2] = min(x.speech_run, 4.0) / 2.0
        out[k + 3] = min(x.silence, 3.0) / 1.5
        out[k + 4] = float(x.agent_speaking)
        out[k + 5] = min(x.agent_spoken, 6.0) / 3.0
        k += 6
        out[k : k + 5] = self._lexical(x.partial)
        assert k + 5 == N_FEATURES, (k, N_FEATURES)
        return out

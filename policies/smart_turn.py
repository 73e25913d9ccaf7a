"""Baseline: smart-turn v3.2 (pipecat's open end-of-turn model) for the end of turn.

The ONNX model ships inside the ``pipecat-ai`` wheel
(``pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx``). We run it the way
pipecat's ``LocalSmartTurnAnalyzerV3`` does: once the user has been silent for
``smart_turn_trigger_ms`` (pipecat pairs smart-turn with a 0.2 s VAD stop time), the
user's audio since their speech began (plus 0.5 s before) is cut to its last 8 s,
left-padded with zeros, turned into Whisper's log-mel features (80 x 800) and scored; a
probability above 0.5 ends the turn. Otherwise the turn ends after
``smart_turn_max_silence_ms`` of silence (pipecat's ``stop_secs``, 3 s). Everything
while the agent speaks is left to :class:`policies.rules.RulePolicy`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.config import RulesConfig
from duplex.errors import PolicyError
from duplex.events import Decision
from duplex.turn import PolicyInput, PolicyOutput
from policies.rules import RulePolicy

log = logging.getLogger(__name__)

MODEL_FILE = "smart-turn-v3.2-cpu.onnx"
CACHE_COPY = Path(__file__).resolve().parent / "data" / "cache" / MODEL_FILE
INSTALL_HINT = "pip install --no-deps pipecat-ai (smart-turn v3.2 ships inside its wheel)"
WINDOW_S = 8
PRE_SPEECH_S = 0.5

# Whisper's feature extractor (80 mel bins, 25 ms window, 10 ms hop), as pipecat vendors
# it from Hugging Face transformers for smart-turn v3.
_N_FFT = 400
_HOP = 160
_N_MELS = 80


def find_model() -> Path:
    """The smart-turn ONNX file: inside an installed pipecat-ai, else the data cache.

    Raises:
        PolicyError: neither is there.
    """
    import importlib.util

    spec = importlib.util.find_spec("pipecat")
    if spec is not None and spec.submodule_search_locations:
        p = Path(list(spec.submodule_search_locations)[0]) / "audio" / "turn" / "smart_turn" / "data" / MODEL_FILE
        if p.exists():
            return p
    if CACHE_COPY.exists():
        return CACHE_COPY
    raise PolicyError(f"smart-turn v3.2 model not found: {INSTALL_HINT}")


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    f = np.atleast_1d(np.asarray(f, dtype=np.float64))
    m = 3.0 * f / 200.0
    log_region = f >= 1000.0
    m[log_region] = 15.0 + np.log(f[log_region] / 1000.0) * (27.0 / np.log(6.4))
    return m


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.atleast_1d(np.asarray(m, dtype=np.float64))
    f = 200.0 * m / 3.0
    log_region = m >= 15.0
    f[log_region] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m[log_region] - 15.0))
    return f


def _slaney_filters() -> np.ndarray:
    """``(n_fft//2 + 1, 80)`` Slaney-normalised mel filters, 0-8 kHz."""
    mel = np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([SAMPLE_RATE / 2]))[0], _N_MELS + 2)
    fpts = _mel_to_hz(mel)
    fft_freqs = np.linspace(0, SAMPLE_RATE // 2, _N_FFT // 2 + 1)
    diff = np.diff(fpts)
    slopes = fpts[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    return filters * (2.0 / (fpts[2 : _N_MELS + 2] - fpts[:_N_MELS]))[None, :]


_FILTERS = _slaney_filters()
_HANN = np.hanning(_N_FFT + 1)[:-1]


def whisper_log_mel(audio: np.ndarray) -> np.ndarray:
    """Whisper log-mel of exactly 8 s of 16 kHz audio: ``(80, 800)`` float32."""
    from numpy.lib.stride_tricks import sliding_window_view

    n = SAMPLE_RATE * WINDOW_S
    x = np.asarray(audio, dtype=np.float32)
    x = np.pad(x, (0, n - x.size)) if x.size < n else x[:n]
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x.astype(np.float64), (_N_FFT // 2, _N_FFT // 2), mode="reflect")
    frames = sliding_window_view(padded, _N_FFT)[::_HOP]  # (801, 400)
    power = np.abs(np.fft.rfft(frames * _HANN, axis=-1)) ** 2  # (801, 201)
    log_spec = np.log10(np.maximum(1e-10, power @ _FILTERS)).T[:, :-1]  # (80, 800)
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


class SmartTurnModel:
    """smart-turn v3.2 on onnxruntime: audio → probability that the turn is complete."""

    def __init__(self, path: Path | None = None) -> None:
        import onnxruntime as ort

        path = path or find_model()
        opts = ort.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise PolicyError(f"cannot load smart-turn model {path}: {exc}") from exc

    def __call__(self, audio: np.ndarray) -> float:
        n = SAMPLE_RATE * WINDOW_S
        audio = audio[-n:]
        if audio.size < n:
            audio = np.pad(audio, (n - audio.size, 0))  # left-pad, as pipecat does
        feats = whisper_log_mel(audio)[None]  # (1, 80, 800)
        out = self.session.run(None, {"input_features": feats})[0]
        return float(np.asarray(out).reshape(-1)[0])


class SmartTurnPolicy:
    """End of turn from smart-turn v3.2; barge-in and backchannel from the rules."""

    name = "smart-turn"

    def __init__(self, rules_cfg: RulesConfig | None = None, model: SmartTurnModel | None = None) -> None:
        self.cfg = rules_cfg or RulesConfig()
        self.rules = RulePolicy(self.cfg)
        self.model = model or SmartTurnModel()
        self._ring = np.zeros(SAMPLE_RATE * (WINDOW_S + 2), dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        self.rules.reset()
        self._ring[:] = 0.0
        self._frames = 0
        self._turn_start: int | None = None
        self._scored_pause = False
        self._complete = False
        self._prob = 0.0

    def _push(self, mic: np.ndarray) -> None:
        self._ring = np.roll(self._ring, -FRAME_SAMPLES)
        self._ring[-FRAME_SAMPLES:] = mic
        self._frames += 1

    def step(self, x: PolicyInput) -> PolicyOutput:
        self._push(np.asarray(x.mic, dtype=np.float32))
        if x.agent_speaking or not x.user_turn_open:
            self._turn_start = None
            self._scored_pause = False
            out = self.rules.step(x)
            return PolicyOutput(out.decision, {**out.probs, "end_of_turn": 0.0})
        self.rules.step(x)  # keep its state in step; its end-of-turn rule is replaced
        if x.user_speaking and self._turn_start is None:
            back = int((x.speech_run + PRE_SPEECH_S) * SAMPLE_RATE / FRAME_SAMPLES)
            self._turn_start = max(0, self._frames - back)
        if x.silence <= 0.0:
            self._scored_pause = False
            self._complete = False
            return PolicyOutput(Decision.HOLD, {"end_of_turn": self._prob})
        if not self._scored_pause and x.silence * 1000 >= self.cfg.smart_turn_trigger_ms:
            self._scored_pause = True
            start = self._turn_start if self._turn_start is not None else self._frames - 1
            n = min((self._frames - start) * FRAME_SAMPLES, self._ring.size)
            self._prob = self.model(self._ring[-n:])
            self._complete = self._prob > 0.5
        if self._complete or x.silence * 1000 >= self.cfg.smart_turn_max_silence_ms:
            self._turn_start = None
            self._complete = False
            return PolicyOutput(Decision.END_OF_TURN, {"end_of_turn": max(self._prob, 0.5)})
        return PolicyOutput(Decision.HOLD, {"end_of_turn": self._prob})

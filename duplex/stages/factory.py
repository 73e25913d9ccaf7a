"""Build stages from configuration, and the :class:`Models` bundle an engine runs on.

Backends are imported lazily, so a missing optional package only matters when its
backend is chosen (and a heavy one, torch or CTranslate2, is not loaded until then).
Turn policies are not built here: ``duplex/`` never imports ``policies/``. The caller
(the command layer, a test fixture) hands :func:`load_models` a policy factory, usually
``policies.make_policy``, and the engine builds and switches policies through it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from duplex.config import PolicyConfig
from duplex.errors import ConfigError
from duplex.stages.asr import StreamingASR
from duplex.stages.llm import LLM
from duplex.stages.speaker import SpeakerGate, make_speaker_gate
from duplex.stages.tts import TTS
from duplex.stages.vad import VAD, SileroVAD
from duplex.turn import TurnPolicy

if TYPE_CHECKING:
    from duplex.config import ASRConfig, Config, LLMConfig, TTSConfig

PolicyFactory = Callable[[PolicyConfig], TurnPolicy]
"""Builds the turn policy a :class:`PolicyConfig` names (``policies.make_policy``)."""


@dataclass
class Models:
    """Loaded models, shared by every engine built from them (replays reuse them).

    ``make_policy`` builds a fresh turn policy per conversation (policies keep state);
    ``None`` only for engines built by hand with a policy object.
    """

    vad: VAD
    asr: StreamingASR
    llm: LLM
    tts: TTS
    backchannel_clip: np.ndarray | None = None
    make_policy: PolicyFactory | None = None
    speaker_gate: SpeakerGate | None = None
    """The speaker gate's encoder and profiles (``speaker.enabled``); each engine runs a
    :meth:`~duplex.stages.speaker.SpeakerGate.fresh` copy of it."""


def load_models(cfg: Config, make_policy: PolicyFactory | None, warmup: bool = True) -> Models:
    """Load every stage's model as configured (slow: seconds)."""
    vad = SileroVAD()
    asr = make_asr(cfg.asr)
    llm = make_llm(cfg.llm)
    tts = make_tts(cfg.tts)
    clip_parts = list(tts.synthesize("Mm-hmm."))
    clip = np.concatenate(clip_parts) if clip_parts else None
    if warmup:
        llm.warmup()
    gate = make_speaker_gate(cfg.speaker, tts, tts_voice=cfg.tts.voice, tts_speed=cfg.tts.speed)
    if gate is not None and warmup:
        gate.encoder.embed(clip if clip is not None and clip.size >= 6400 else np.full(6400, 0.01, np.float32))
    return Models(vad, asr, llm, tts, clip, make_policy, gate)


def make_asr(cfg: ASRConfig) -> StreamingASR:
    if cfg.backend == "pocketsphinx":
        from duplex.stages.asr import PocketSphinxASR

        return PocketSphinxASR()
    if cfg.backend == "faster-whisper":
        from duplex.stages.whisper_asr import WhisperASR, WhisperFinalsASR

        return WhisperFinalsASR.from_config(cfg) if cfg.partials == "pocketsphinx" else WhisperASR(cfg)
    raise ConfigError(f"unknown asr.backend {cfg.backend!r}")


def make_llm(cfg: LLMConfig) -> LLM:
    if cfg.backend == "llama-cpp":
        from duplex.stages.llm import LlamaCppLLM

        return LlamaCppLLM(cfg)
    if cfg.backend == "transformers":
        from duplex.stages.transformers_llm import TransformersLLM

        return TransformersLLM(cfg)
    if cfg.backend == "openai":
        from duplex.stages.openai_llm import OpenAILLM

        return OpenAILLM(cfg)
    raise ConfigError(f"unknown llm.backend {cfg.backend!r}")


def make_tts(cfg: TTSConfig) -> TTS:
    if cfg.backend == "piper":
        from duplex.stages.tts import PiperTTS

        return PiperTTS(cfg.voice, cfg.speed, cfg.noise_scale, cfg.noise_w)
    if cfg.backend == "kokoro":
        from duplex.stages.kokoro_tts import KokoroTTS

        return KokoroTTS(cfg)
    if cfg.backend == "kokoro-onnx":
        from duplex.stages.kokoro_tts import KokoroOnnxTTS

        return KokoroOnnxTTS(cfg)
    raise ConfigError(f"unknown tts.backend {cfg.backend!r}")

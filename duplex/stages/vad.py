"""Voice activity: silero-vad's shipped ONNX model, one 32 ms frame at a time."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.errors import VADError
from duplex.resources import package_dir

CONTEXT_SAMPLES = 64
"""Silero v5+ expects each 512-sample frame prefixed by the last 64 samples it saw."""


class VAD(Protocol):
    def reset(self) -> None: ...
    def __call__(self, frame: np.ndarray) -> float:
        """Speech probability of one ``FRAME_SAMPLES`` frame (float32, 16 kHz)."""
        ...


class SileroVAD:
    """Streaming silero VAD on onnxruntime (no torch needed at run time)."""

    def __init__(self, model_file: str = "silero_vad.onnx") -> None:
        import onnxruntime as ort

        path = package_dir("silero_vad") / "data" / model_file
        if not path.exists():
            raise VADError(f"silero-vad model not found at {path} (pip install silero-vad)")
        opts = ort.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"], sess_options=opts)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise VADError(f"cannot load silero-vad model {path}: {exc}") from exc
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, CONTEXT_SAMPLES), dtype=np.float32)

    def __call__(self, frame: np.ndarray) -> float:
        assert frame.shape == (FRAME_SAMPLES,), f"VAD takes {FRAME_SAMPLES} samples, got {frame.shape}"
        x = np.concatenate([self._context, frame.astype(np.float32)[None, :]], axis=1)  # (1, 576)
        out, self._state = self._session.run(None, {"input": x, "state": self._state, "sr": self._sr})
        self._context = x[:, -CONTEXT_SAMPLES:]
        return float(out[0, 0])

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Probabilities for every whole frame of ``audio`` (resets state first)."""
        self.reset()
        n = len(audio) // FRAME_SAMPLES
        return np.array([self(audio[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]) for i in range(n)], dtype=np.float32)


class SpeechSegmenter:
    """Hysteresis on VAD probabilities: declares speech onsets and offsets.

    Counts in frames; an onset needs ``min_speech`` frames above threshold, an offset
    ``hangover`` frames below ``threshold - 0.15`` (silero's recommended hysteresis).
    """

    def __init__(self, threshold: float, min_speech_frames: int, hangover_frames: int) -> None:
        self.threshold = threshold
        self.off_threshold = max(0.01, threshold - 0.15)
        self.min_speech = max(1, min_speech_frames)
        self.hangover = max(1, hangover_frames)
        self.reset()

    def reset(self) -> None:
        self.speaking = False
        self._above = 0
        self._below = 0
        self.run_frames = 0
        """Frames since the current speech run began (onset back-dated by ``min_speech``)."""
        self.silence_frames = 0
        """Frames since the last speech frame (0 while speaking)."""

    def step(self, prob: float) -> str | None:
        """Feed one frame; returns ``"start"``, ``"end"`` or ``None``."""
        if prob >= self.threshold:
            self._above += 1
            self._below = 0
            self.silence_frames = 0
        else:
            self._above = 0
            self.silence_frames += 1
            if prob < self.off_threshold or not self.speaking:
                self._below += 1
        if self.speaking:
            self.run_frames += 1
            if self._below >= self.hangover:
                self.speaking = False
                return "end"
        elif self._above >= self.min_speech:
            self.speaking = True
            self.run_frames = self._above
            self._below = 0
            return "start"
        return None

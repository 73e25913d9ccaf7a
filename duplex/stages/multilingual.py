"""Replying in the user's language: the prompt instruction and a matching voice.

When the recogniser reports a language (``asr.language`` after ``finish()``), the engine
adds :func:`reply_language_instruction` to the system prompt and asks
:func:`voice_for_language` for a voice. A voice comes, in order, from ``tts.voices``
(``"es=ef_dora,de=/voices/de_DE-thorsten-medium.onnx"``), from Kokoro's own voices
(en, en-gb, es, fr, hi, it, pt-br, ja, zh: see :mod:`duplex.stages.kokoro_tts`), or, for
piper, from the language written in the voice's ``.onnx.json``. Otherwise the reply is
spoken in the default voice and the caller gets a notice to show.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging

from duplex.config import TTSConfig
from duplex.errors import ModelError
from duplex.resources import KOKORO_EXTRA_G2P as _EXTRA_G2P, KOKORO_LANGUAGES, kokoro_voice_path, locate_kokoro, resolve_model_path

log = logging.getLogger(__name__)

LANGUAGE_NAMES = {
    "en": "English", "zh": "Chinese", "de": "German", "es": "Spanish", "ru": "Russian", "ko": "Korean",
    "fr": "French", "ja": "Japanese", "pt": "Portuguese", "tr": "Turkish", "pl": "Polish", "ca": "Catalan",
    "nl": "Dutch", "ar": "Arabic", "sv": "Swedish", "it": "Italian", "id": "Indonesian", "hi": "Hindi",
    "fi": "Finnish", "vi": "Vietnamese", "he": "Hebrew", "uk": "Ukrainian", "el": "Greek", "ms": "Malay",
    "cs": "Czech", "ro": "Romanian", "da": "Danish", "hu": "Hungarian", "ta": "Tamil", "no": "Norwegian",
    "th": "Thai", "ur": "Urdu", "hr": "Croatian", "bg": "Bulgarian", "lt": "Lithuanian", "la": "Latin",
    "mi": "Maori", "ml": "Malayalam", "cy": "Welsh", "sk": "Slovak", "te": "Telugu", "fa": "Persian",
    "lv": "Latvian", "bn": "Bengali", "sr": "Serbian", "az": "Azerbaijani", "sl": "Slovenian",
    "kn": "Kannada", "et": "Estonian", "mk": "Macedonian", "br": "Breton", "eu": "Basque",
    "is": "Icelandic", "hy": "Armenian", "ne": "Nepali", "mn": "Mongolian", "bs": "Bosnian",
    "kk": "Kazakh", "sq": "Albanian", "sw": "Swahili", "gl": "Galician", "mr": "Marathi",
    "pa": "Punjabi", "si": "Sinhala", "km": "Khmer", "sn": "Shona", "yo": "Yoruba", "so": "Somali",
    "af": "Afrikaans", "oc": "Occitan", "ka": "Georgian", "be": "Belarusian", "tg": "Tajik",
    "sd": "Sindhi", "gu": "Gujarati", "am": "Amharic", "yi": "Yiddish", "lo": "Lao", "uz": "Uzbek",
    "fo": "Faroese", "ht": "Haitian Creole", "ps": "Pashto", "tk": "Turkmen", "nn": "Nynorsk",
    "mt": "Maltese", "sa": "Sanskrit", "lb": "Luxembourgish", "my": "Myanmar", "bo": "Tibetan",
    "tl": "Tagalog", "mg": "Malagasy", "as": "Assamese", "tt": "Tatar", "haw": "Hawaiian",
    "ln": "Lingala", "ha": "Hausa", "ba": "Bashkir", "jw": "Javanese", "su": "Sundanese",
    "yue": "Cantonese",
}
"""Whisper's language codes and their English names."""


def base_language(lang: str | None) -> str:
    """``en_US``, ``en-us`` or ``EN`` → ``en``."""
    return (lang or "").replace("_", "-").split("-")[0].lower()


def language_name(lang: str) -> str:
    return LANGUAGE_NAMES.get(base_language(lang), lang)


def reply_language_instruction(lang: str | None) -> str:
    """Text to append to the system prompt so the reply comes in ``lang`` ("" for no language)."""
    if not lang:
        return ""
    name = language_name(lang)
    return f"The user speaks {name}. Always answer in {name}."


LANGUAGE_FLOOR = 0.5
"""Whisper's language probability below which a detection is not evidence at all."""
LANGUAGE_SWITCH_AFTER = 2
"""Confident detections of a new language, in a row, before the reply language follows."""
LANGUAGE_SWITCH_NOW = 0.9
LANGUAGE_SWITCH_NOW_WORDS = 4
"""...or one detection at least this sure, on a turn of at least this many words."""


class LanguageTracker:
    """The user's language, turn by turn, with a confidence floor and hysteresis.

    Whisper detects a language per utterance; a short "okay" or a name can come out as
    another language with a middling probability. The tracked language changes only on
    :data:`LANGUAGE_SWITCH_AFTER` confident detections of the same new language in a row,
    or on one very sure detection of a real sentence; the first confident detection sets
    it. Anything under :data:`LANGUAGE_FLOOR` is ignored.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.language: str | None = None
        self.probability = 0.0
        self._candidate: str | None = None
        self._count = 0

    def update(self, lang: str | None, prob: float, words: int) -> str | None:
        """Feed one utterance's detection; returns the tracked language."""
        if not lang or prob < LANGUAGE_FLOOR:
            return self.language
        if self.language is None or lang == self.language:
            self.language, self._candidate, self._count = lang, None, 0
            self.probability = prob
            return self.language
        if lang == self._candidate:
            self._count += 1
        else:
            self._candidate, self._count = lang, 1
        if self._count >= LANGUAGE_SWITCH_AFTER or (prob >= LANGUAGE_SWITCH_NOW and words >= LANGUAGE_SWITCH_NOW_WORDS):
            self.language, self.probability = lang, prob
            self._candidate, self._count = None, 0
        return self.language


def parse_voices(spec: str) -> dict[str, str]:
    """``"es=ef_dora, de=/v/de.onnx"`` → ``{"es": "ef_dora", "de": "/v/de.onnx"}``."""
    out: dict[str, str] = {}
    for item in spec.split(","):
        if "=" in item:
            lang, _, voice = item.partition("=")
            if lang.strip() and voice.strip():
                out[lang.strip().lower()] = voice.strip()
    return out


def piper_voice_language(voice: str) -> str | None:
    """The language a piper voice speaks, from its ``.onnx.json`` (``None`` if unreadable)."""
    try:
        path = resolve_model_path(voice)
        meta = json.loads(path.with_suffix(path.suffix + ".json").read_text(encoding="utf-8"))
    except (ModelError, OSError, ValueError):
        return None
    lang = meta.get("language") or {}
    code = lang.get("code") if isinstance(lang, dict) else None
    code = code or meta.get("espeak", {}).get("voice")
    return base_language(code) if code else None


def current_language(cfg: TTSConfig) -> str:
    """The language the configured voice speaks."""
    if cfg.backend == "piper":
        return piper_voice_language(cfg.voice) or base_language(cfg.language)
    return base_language(cfg.language)


def voice_for_language(tts_cfg: TTSConfig, lang: str | None) -> tuple[TTSConfig | None, str | None]:
    """A TTS config that speaks ``lang``, or ``(None, notice)`` to keep the default voice.

    Returns ``(tts_cfg, None)`` unchanged when the configured voice already speaks it. A
    voice is only offered when its files are on disk (nothing is downloaded), so building
    a TTS from the returned config fails only if the files are corrupt.
    """
    base = base_language(lang)
    if not base or base == current_language(tts_cfg):
        return tts_cfg, None
    name = language_name(base)
    voices = parse_voices(tts_cfg.voices)
    voice = voices.get((lang or "").lower()) or voices.get(base)
    if voice:
        language = base if tts_cfg.backend != "kokoro" or base in _kokoro_languages() else tts_cfg.language
        chosen = dataclasses.replace(tts_cfg, voice=voice, language=language)
        missing = _missing_voice(chosen)
        return (None, f"{missing}; replying in the default voice") if missing else (chosen, None)
    if tts_cfg.backend == "kokoro-onnx":
        # Kokoro's voices are speaker styles: the same packaged voice speaks another language
        # through espeak-ng's phonemes for it (kana only for Japanese, not kanji).
        if base in KOKORO_ONNX_LANGUAGES:
            return dataclasses.replace(tts_cfg, language=base), None
        return None, f"Kokoro ONNX has no {name} phonemiser; replying in the default voice"
    if tts_cfg.backend == "kokoro":
        if base in KOKORO_LANGUAGES:
            code, default_voice = KOKORO_LANGUAGES[base]
            if code in _EXTRA_G2P and importlib.util.find_spec(_EXTRA_G2P[code][0]) is None:
                return None, (
                    f"Kokoro's {name} voice needs pip install '{_EXTRA_G2P[code][1]}'; "
                    "replying in the default voice"
                )
            chosen = dataclasses.replace(tts_cfg, voice=default_voice, language=base)
            missing = _missing_voice(chosen)
            return (None, f"{missing}; replying in the default voice") if missing else (chosen, None)
        return None, f"Kokoro has no {name} voice; replying in {name} with the default voice"
    return None, (
        f"no {name} voice configured: add tts.voices = \"{base}=/path/to/voice.onnx\"; "
        "replying with the default voice"
    )


KOKORO_ONNX_LANGUAGES = frozenset({"en", "es", "fr", "hi", "it", "pt", "ja", "zh", "sv", "de"})
"""Languages the kokoro-onnx backend has an espeak-ng phonemiser set for (kokoro_tts.KOKORO_ONNX_ESPEAK)."""


def _missing_voice(cfg: TTSConfig) -> str | None:
    """Why the voice of ``cfg`` cannot be loaded from disk (``None`` when it can)."""
    if cfg.backend == "kokoro-onnx":
        return None  # one packaged voice pack; KokoroOnnxTTS names the voices it has
    if cfg.backend == "kokoro":
        try:
            kokoro_voice_path(locate_kokoro(cfg), cfg.voice)
        except ModelError as exc:
            return str(exc)
        return None
    try:
        path = resolve_model_path(cfg.voice)
    except ModelError as exc:
        return f"piper voice {cfg.voice} not found ({exc})"
    if not path.with_suffix(path.suffix + ".json").exists():
        return f"piper voice {path} has no {path.name}.json beside it"
    return None


def _kokoro_languages() -> set[str]:
    return set(KOKORO_LANGUAGES)

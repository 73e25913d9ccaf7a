"""Property-based fuzzing of every loader (issue 16 §2).

The property, for every generated input: the loader returns a valid object, or raises a
:class:`DuplexError` subclass whose message is one non-empty line. Any other exception
(a traceback at the CLI) fails the test, and hypothesis shrinks it to a small example.

Loaders: WAV bytes (``read_audio``), a session directory (``load_session`` and what
replay and export compute from it), a profile's TOML and ``--set`` strings
(``load_config``), scenario TOML, simulated-user scripts, MQTT command payloads.

The fast tests run ~200 examples per loader; ``test_fuzz_everything_slow`` (``-m slow``)
runs ``FUZZ_SLOW_EXAMPLES`` (default 1,700) per loader, over 10,000 cases in all:

    nice -n 10 .venv/bin/python -m pytest -q -p no:cacheprovider -m slow tests/test_fuzz.py -s

Derandomized, so CI sees the same cases every run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.config import Config, load_config, parse_override
from duplex.errors import DuplexError

FAST = 200
SLOW = int(os.environ.get("FUZZ_SLOW_EXAMPLES", "1700"))
CASES: Counter[str] = Counter()
"""Examples run per loader in this process (the slow test reports and checks them)."""
OUTCOMES: Counter[str] = Counter()


def fuzz_settings(n: int) -> settings:
    return settings(max_examples=n, deadline=None, derandomize=True, database=None, print_blob=False,
                    suppress_health_check=list(HealthCheck))


def holds(name: str, fn: Callable[[], Any]) -> Any:
    """Run one case: a value, or a one-line DuplexError; anything else propagates."""
    CASES[name] += 1
    try:
        out = fn()
    except DuplexError as exc:
        msg = str(exc)
        assert msg.strip(), f"{name}: {type(exc).__name__} with an empty message"
        assert "\n" not in msg and "\r" not in msg, f"{name}: a message of several lines: {msg!r}"
        OUTCOMES[f"{name}: refused"] += 1
        return None
    OUTCOMES[f"{name}: accepted"] += 1
    return out


@pytest.fixture(scope="module")
def workdir():
    d = Path(tempfile.mkdtemp(prefix="duplex-fuzz-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _fresh(root: Path, name: str) -> Path:
    d = root / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    return d


# --- value strategies ------------------------------------------------------------------------

NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-5, max_value=5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 0.0, -0.0, 1e308, -1e308, 5e-324, 2**31, 2**32, 2**63, 10**30, 10**400]),
)
SCALARS = st.one_of(NUMBERS, st.booleans(), st.text(max_size=30), st.none())
JSONISH = st.recursive(SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
                       max_leaves=12)
TOMLISH = st.recursive(SCALARS.filter(lambda v: v is not None),
                       lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
                       max_leaves=12)


def toml_value(v: Any) -> str:
    """A Python value as TOML text (nan and inf included; ints of any size)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v) if abs(v) < 10**4000 else "1" + "0" * 4000
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string, escapes and all
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def toml_text(data: dict[str, Any]) -> str:
    return "\n".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in data.items()) + "\n"


# --- config: profiles and --set ----------------------------------------------------------------


def _config_keys() -> list[str]:
    import dataclasses
    import typing

    out: list[str] = []

    def walk(cls: Any, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            tp = typing.get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, f"{prefix}{f.name}.")
            else:
                out.append(prefix + f.name)

    walk(Config, "")
    return out


CONFIG_KEYS = _config_keys()


def _boundary_values() -> list[tuple[str, Any]]:
    """Each ranged key at its default, its bounds, and just past them (both sides of every edge)."""
    import dataclasses
    import typing

    from duplex.config import Range

    out: list[tuple[str, Any]] = []

    def walk(cls: Any, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            tp = typing.get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, f"{prefix}{f.name}.")
                continue
            r = f.metadata.get("range")
            if not isinstance(r, Range):
                continue
            step = 1 if tp is int else 1e-6
            vals = [f.default, *(s for s, _ in r.special)]
            for b in (r.lo, r.hi):
                if b is not None:
                    vals += [b - step, b, b + step]
            out.extend((prefix + f.name, tp(v)) for v in vals)

    walk(Config, "")
    return out


BOUNDARY = _boundary_values()
KEYS = st.one_of(st.sampled_from(CONFIG_KEYS), st.sampled_from(CONFIG_KEYS).map(lambda k: k + ".x"),
                 st.text(max_size=20))
# Values a key could plausibly take: most are in range, so the accepting path is fuzzed too.
PLAUSIBLE = st.one_of(st.integers(0, 3000), st.floats(0, 1), st.booleans(), st.sampled_from(["rules", "predictor", "auto"]))
RAW_VALUES = st.one_of(TOMLISH.map(toml_value), st.text(max_size=40), PLAUSIBLE.map(toml_value), PLAUSIBLE.map(toml_value),
                       st.sampled_from(["nan", "inf", "-inf", "1e999", "0x10", "1_000", "[[[", "'", '"', "",
                                        "true", "1979-05-27", "{a=1}", "= =", "9" * 5000]))


def _nest(key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cur = out
    parts = key.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return out


PROFILE = st.one_of(
    st.lists(st.tuples(st.sampled_from(CONFIG_KEYS), TOMLISH), max_size=6).map(
        lambda kvs: "\n".join(f"{k} = {toml_value(v)}" for k, v in kvs) + "\n"),
    st.lists(st.tuples(st.sampled_from(CONFIG_KEYS), PLAUSIBLE), max_size=3).map(
        lambda kvs: "\n".join(f"{k} = {toml_value(v)}" for k, v in kvs) + "\n"),
    st.lists(st.sampled_from(BOUNDARY), max_size=3, unique_by=lambda kv: kv[0]).map(
        lambda kvs: "\n".join(f"{k} = {toml_value(v)}" for k, v in kvs) + "\n"),
    st.text(max_size=300),
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
)
SETS = st.lists(st.tuples(KEYS, RAW_VALUES).map(lambda kv: f"{kv[0]}={kv[1]}") | st.text(max_size=40)
                | st.sampled_from(BOUNDARY).map(lambda kv: f"{kv[0]}={toml_value(kv[1])}"), max_size=3)


def check_config(root: Path, profile: str | None, sets: list[str]) -> None:
    path = None
    if profile is not None:
        path = root / "profile.toml"
        path.write_text(profile, encoding="utf-8", errors="surrogatepass")

    def load() -> Config:
        cfg = load_config(path, [parse_override(s) for s in sets])
        assert isinstance(cfg, Config)
        return cfg

    holds("config", load)


def fuzz_config(root: Path, n: int) -> None:
    @fuzz_settings(n)
    @given(profile=st.none() | PROFILE, sets=SETS)
    def prop(profile: str | None, sets: list[str]) -> None:
        check_config(root, profile, sets)

    prop()


# --- WAV ----------------------------------------------------------------------------------------


def wav_header(fmt: int, ch: int, sr: int, bits: int, declared: int, riff: int | None = None) -> bytes:
    block = max(0, min(65535, ch * bits // 8))
    return (b"RIFF" + struct.pack("<I", (riff if riff is not None else 36 + declared) & 0xFFFFFFFF) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, fmt & 0xFFFF, ch & 0xFFFF, sr & 0xFFFFFFFF, (sr * block) & 0xFFFFFFFF,
                          block, bits & 0xFFFF)
            + b"data" + struct.pack("<I", declared & 0xFFFFFFFF))


def _good_wav(sr: int, ch: int, subtype: str, n: int, seed: int) -> bytes:
    import io

    import soundfile as sf

    x = np.random.default_rng(seed).uniform(-1, 1, (n, ch)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


GOOD_WAV = st.builds(_good_wav, st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000, 7999, 44101, 1, 384001]),
                     st.integers(1, 3), st.sampled_from(["PCM_16", "PCM_U8", "FLOAT", "DOUBLE", "PCM_24", "ULAW"]),
                     st.integers(0, 3000), st.integers(0, 3))


@st.composite
def mutated(draw: Any, base: st.SearchStrategy[bytes]) -> bytes:
    """A file with some bytes flipped, cut short or extended."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 6))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    if draw(st.booleans()):
        data = data[:cut]
    return bytes(data) + draw(st.binary(max_size=16))


STRUCTURED_WAV = st.builds(
    lambda h, body: h + body,
    st.builds(wav_header, st.sampled_from([1, 3, 6, 7, 0, 2, 0xFFFE, 65535]), st.integers(0, 70),
              st.one_of(st.sampled_from([0, 1, 8000, 16000, 48000, 2**32 - 1]), st.integers(0, 2**32 - 1)),
              st.sampled_from([0, 1, 8, 16, 24, 32, 64, 7, 65535]), st.integers(0, 2**32 - 1),
              st.none() | st.integers(0, 2**32 - 1)),
    st.binary(max_size=2048),
)
WAV_FILES = st.tuples(
    st.one_of(STRUCTURED_WAV, mutated(GOOD_WAV), GOOD_WAV, st.binary(max_size=512)),
    st.sampled_from([".wav", ".WAV", ".raw", ".flac", ".ogg", ".aiff", "", ".txt"]),
)


def check_wav(root: Path, data: bytes, ext: str) -> None:
    from duplex.audio.wav import read_audio

    p = root / f"input{ext}"
    p.write_bytes(data)

    def load() -> np.ndarray:
        x = read_audio(p)
        assert x.dtype == np.float32 and x.ndim == 1 and len(x) > 0
        assert np.isfinite(x).all()
        return x

    holds("wav", load)


def fuzz_wav(root: Path, n: int) -> None:
    @fuzz_settings(n)
    @given(WAV_FILES)
    def prop(f: tuple[bytes, str]) -> None:
        check_wav(root, *f)

    prop()


# --- sessions -------------------------------------------------------------------------------------


def _template(root: Path) -> dict[str, bytes]:
    """A real recorded session's files (the Recorder on a default config), as bytes."""
    from duplex.events import AgentStopped, AgentTurnStarted, BargeIn, EndOfTurn, Notice, UserSpeechStarted
    from duplex.session.recorder import Recorder

    d = root / "template"
    if d.exists():
        shutil.rmtree(d)
    cfg = load_config(None, [{"policy": {"name": "rules"}}])
    rec = Recorder(d, cfg, source="fuzz")
    rng = np.random.default_rng(0)
    for i in range(12):
        rec.on_audio(i * FRAME_SAMPLES / SAMPLE_RATE, rng.uniform(-0.5, 0.5, FRAME_SAMPLES).astype(np.float32),
                     rng.uniform(-0.1, 0.1, FRAME_SAMPLES).astype(np.float32))
    for ev in [Notice(0.0, message="echo cancellation: off"), UserSpeechStarted(0.032, agent_speaking=False),
               EndOfTurn(0.128, turn=1, delay=0.064, text="hello"), AgentTurnStarted(0.128, turn=1, prompt="hello"),
               UserSpeechStarted(0.2, agent_speaking=True), BargeIn(0.25, turn=1, onset=0.2, reaction=0.05, text="wait"),
               AgentStopped(0.26, turn=1)]:
        rec.on_event(ev)
    rec.close()
    return {n: (d / n).read_bytes() for n in ("session.json", "mic.wav", "agent.wav", "events.jsonl")}


EVENT_LINES = st.one_of(
    st.builds(lambda t, extra: json.dumps({"type": t, **extra}),
              st.sampled_from(["notice", "barge_in", "end_of_turn", "agent_turn_started", "user_speech_started",
                               "state_changed", "audio_played", "backchannel", "session_ended", "muted", "bogus"]),
              st.dictionaries(st.sampled_from(["t", "turn", "onset", "reaction", "text", "message", "state", "delay",
                                               "prompt", "agent_speaking", "n_samples", "who", "reason", "muted",
                                               "probs"]), JSONISH, max_size=6)),
    st.text(max_size=60),
    st.sampled_from(['{"type":"notice","t":NaN,"message":"x"}', '{"type":"notice","t":-1,"message":"x"}',
                     '{"type":"notice","t":1e400,"message":"x"}', '{"type":"notice","t":' + "9" * 500 + ',"message":"x"}',
                     "[" * 50000]),
)


@st.composite
def session_files(draw: Any, template: dict[str, bytes]) -> dict[str, bytes | None]:
    files: dict[str, bytes | None] = dict(template)
    meta = json.loads(template["session.json"])
    for _ in range(draw(st.integers(0, 3))):
        # Replace a value somewhere in session.json: top level, or a config key.
        where = draw(st.sampled_from(["top", "config", "sha"]))
        value = draw(JSONISH)
        if where == "top":
            meta[draw(st.sampled_from(sorted(meta) + ["extra"]))] = value
        elif where == "config":
            key = draw(st.sampled_from(CONFIG_KEYS)).split(".")
            cur = meta.get("config")
            if isinstance(cur, dict):
                for k in key[:-1]:
                    nxt = cur.get(k)
                    if not isinstance(nxt, dict):
                        break
                    cur = nxt
                else:
                    cur[key[-1]] = value
        elif isinstance(meta.get("sha256"), dict):
            meta["sha256"][draw(st.sampled_from(["mic.wav", "agent.wav"]))] = value
    files["session.json"] = draw(st.one_of(
        st.just(json.dumps(meta, allow_nan=True).encode()),
        st.just(json.dumps(meta, allow_nan=True).encode()),
        mutated(st.just(template["session.json"])),
    ))
    if draw(st.booleans()):
        lines = template["events.jsonl"].decode().splitlines()
        for _ in range(draw(st.integers(1, 3))):
            lines.insert(draw(st.integers(0, len(lines))), draw(EVENT_LINES))
        files["events.jsonl"] = ("\n".join(lines) + draw(st.sampled_from(["\n", ""]))).encode()
    for wav in ("mic.wav", "agent.wav"):
        match draw(st.sampled_from(["keep", "keep", "mutate", "header", "structured", "drop"])):
            case "mutate":
                files[wav] = draw(mutated(st.just(template[wav])))
            case "header":
                files[wav] = template[wav][:44]
            case "structured":
                files[wav] = draw(STRUCTURED_WAV)
            case "drop":
                files[wav] = None
    if draw(st.booleans()):
        # The checksums no longer vouch for the WAVs: test what lies behind them too.
        m = json.loads(files["session.json"]) if files["session.json"] == json.dumps(meta, allow_nan=True).encode() else None
        if isinstance(m, dict):
            m.pop("sha256", None)
            files["session.json"] = json.dumps(m, allow_nan=True).encode()
    if draw(st.integers(0, 20)) == 0:
        files[draw(st.sampled_from(sorted(files)))] = None
    return files


def check_session(root: Path, files: dict[str, bytes | None]) -> None:
    from duplex.session.export import session_labels
    from duplex.session.replay import recorded_commands, session_config
    from duplex.session.report import build_report
    from duplex.session.store import Session, load_session

    d = _fresh(root, "session")
    for name, data in files.items():
        if data is not None:
            (d / name).write_bytes(data)

    def load() -> Session:
        s = load_session(d)
        assert s.n_frames > 0 and s.mic.shape == s.agent.shape and np.isfinite(s.mic).all()
        # What replay and export compute from a loaded session, before any model loads.
        session_config(s)
        recorded_commands(s.events, s.n_frames)
        build_report(s.events)
        session_labels(s.events, 0.192, s.duration)
        return s

    holds("session", load)


def fuzz_session(root: Path, n: int) -> None:
    template = _template(root)

    @fuzz_settings(n)
    @given(session_files(template))
    def prop(files: dict[str, bytes | None]) -> None:
        check_session(root, files)

    prop()


# --- scenarios and simulated-user scripts -----------------------------------------------------------

LINE_KEYS = ["text", "sound", "noise", "at", "after_agent_speech", "after_agent_done", "after_previous",
             "after_agent_sentence", "with_agent_start", "after_end_of_turn", "gain_db", "offset", "clip",
             "expect", "stop_within_ms", "respond_within_ms"]
LINE_VALUES = st.one_of(
    NUMBERS, TOMLISH,
    st.sampled_from(["hi there", "a [pause 99999999999] b", "x [pause 500] y", "cough", "knock", "trumpet", "",
                     "stops", "responds", "waits", "missing.wav", "one_hz.wav", "good.wav", "../good.wav",
                     "\x00", "[pause 600001]"]),
    st.lists(NUMBERS, min_size=2, max_size=2),
)
LINE = st.dictionaries(st.sampled_from(LINE_KEYS) | st.text(max_size=8), LINE_VALUES, max_size=6)
# Lines that pass the checks more often: one source, one trigger, then a little noise.
PLAUSIBLE_LINE = st.builds(
    lambda src, trig, extra: {**extra, **src, **trig},
    st.one_of(st.builds(lambda v: {"text": v}, st.text(max_size=30) | st.sampled_from(["a [pause 99999999999] b", "hi"])),
              st.builds(lambda v: {"noise": v}, st.sampled_from(["cough", "clap", "static", "bell"])),
              st.builds(lambda v, c: {"sound": v, **c}, st.sampled_from(["good.wav", "one_hz.wav", "missing.wav"]),
                        st.just({}) | st.builds(lambda a, b: {"clip": [a, b]}, NUMBERS, NUMBERS))),
    st.builds(lambda k, v: {k: v}, st.sampled_from(LINE_KEYS[3:10]), NUMBERS | st.integers(1, 3) | st.floats(0, 30)),
    st.just({}) | st.just({}) | st.dictionaries(st.sampled_from(LINE_KEYS[10:]), LINE_VALUES, max_size=2),
)
SCENARIO_TOP = st.dictionaries(
    st.sampled_from(["name", "description", "voice", "agent_says", "tail_s", "max_wait_s", "echo_db",
                     "echo_delay_ms", "tags", "known_failure", "expect", "config", "extra"]),
    st.one_of(NUMBERS, TOMLISH, st.sampled_from(["piper", "espeak:en-us", "robot"]),
              st.builds(lambda k, v: _nest(k, v), st.sampled_from([k for k in CONFIG_KEYS if k.split(".")[0] in
                                                                    ("policy", "engine", "vad")] + ["llm.seed"]),
                        NUMBERS),
              st.dictionaries(st.sampled_from(["barge_ins", "end_of_turns", "agent_turns", "x"]), NUMBERS, max_size=2)),
    max_size=5,
)
SCENARIO_DATA = st.one_of(
    st.builds(lambda top, says: {**top, "say": says}, st.just({}) | SCENARIO_TOP, st.lists(PLAUSIBLE_LINE, max_size=3)),
    st.builds(lambda top, says: {**top, "say": says}, SCENARIO_TOP, st.lists(PLAUSIBLE_LINE | LINE, max_size=4)),
    SCENARIO_TOP,
)


def _sound_files(root: Path) -> None:
    import soundfile as sf

    sf.write(root / "good.wav", np.zeros(16000, np.float32), 16000, subtype="PCM_16")
    (root / "one_hz.wav").write_bytes(wav_header(1, 1, 1, 16, 200) + b"\x00" * 200)


def check_scenario(root: Path, data: dict[str, Any], as_file: bool, script: bool) -> None:
    from duplex.session.scenario import Scenario, load_scenario, parse_scenario
    from duplex.simuser import load_script, parse_script

    if as_file:
        p = root / "case.toml"
        p.write_text(toml_text(data), encoding="utf-8", errors="surrogatepass")

        def load() -> Any:
            return load_script(p) if script else load_scenario(p)
    else:
        def load() -> Any:
            return parse_script(data, "s.toml") if script else parse_scenario(data, "x.toml")

    out = holds("script" if script else "scenario", load)
    if out is not None and not script:
        assert isinstance(out, Scenario) and out.lines
        for ln in out.lines:
            u = ln.utterance
            assert math.isfinite(u.value) and math.isfinite(u.gain_db) and math.isfinite(out.tail_s)


def fuzz_scenarios(root: Path, n: int, script: bool) -> None:
    _sound_files(root)

    @fuzz_settings(n)
    @given(SCENARIO_DATA, st.booleans())
    def prop(data: dict[str, Any], as_file: bool) -> None:
        if script:
            data = {k: v for k, v in data.items() if k in ("voice", "say") or k == "extra"}
        check_scenario(root, data, as_file, script)

    prop()


def fuzz_toml_text(root: Path, n: int) -> None:
    """Arbitrary text where a scenario or a script is expected."""
    from duplex.session.scenario import load_scenario
    from duplex.simuser import load_script

    p = root / "text.toml"

    @fuzz_settings(n)
    @given(PROFILE, st.booleans())
    def prop(text: str, script: bool) -> None:
        p.write_text(text, encoding="utf-8", errors="surrogatepass")
        holds("script" if script else "scenario", lambda: load_script(p) if script else load_scenario(p))

    prop()


# --- MQTT command payloads ---------------------------------------------------------------------------

COMMAND_JSON = st.dictionaries(st.sampled_from(["command", "text", "reason", "id", "extra"]),
                               st.one_of(st.sampled_from(["mute", "unmute", "say", "end", "MUTE", ""]), JSONISH),
                               max_size=4).map(lambda d: json.dumps(d, allow_nan=True).encode())
PAYLOADS = st.one_of(
    st.binary(max_size=300), COMMAND_JSON,
    st.builds(lambda w, rest: f"{w} {rest}".encode("utf-8", "surrogatepass"),
              st.sampled_from(["mute", "unmute", "say", "end", "SAY", "Mute", "bogus"]), st.text(max_size=40)),
    st.sampled_from([b"[" * 5000, b"{" * 5000, b'{"command": "say", "text": "' + b"x" * 1001 + b'"}',
                     b"say " + b"x" * 5000, b"\xff\xfe", b'say "', b"say ''"]),
)


def check_command(payload: bytes) -> None:
    from duplex.mqtt.payloads import Command, parse_command

    def load() -> Command:
        c = parse_command(payload)
        assert isinstance(c, Command)
        return c

    holds("mqtt", load)


def fuzz_mqtt(n: int) -> None:
    @fuzz_settings(n)
    @given(PAYLOADS)
    def prop(payload: bytes) -> None:
        check_command(payload)

    prop()


# --- the tests ----------------------------------------------------------------------------------------


def test_fuzz_config(workdir):
    fuzz_config(workdir, FAST)


def test_fuzz_wav(workdir):
    fuzz_wav(workdir, FAST)


def test_fuzz_session(workdir):
    fuzz_session(workdir, FAST)


def test_fuzz_scenario(workdir):
    fuzz_scenarios(workdir, FAST, script=False)


def test_fuzz_script(workdir):
    fuzz_scenarios(workdir, FAST, script=True)


def test_fuzz_toml_text(workdir):
    fuzz_toml_text(workdir, FAST // 2)


def test_fuzz_mqtt_commands():
    fuzz_mqtt(FAST)


@pytest.mark.slow
def test_fuzz_everything_slow(workdir):
    """Every loader, ``SLOW`` examples each: at least 10,000 cases, no traceback."""
    before = sum(CASES.values())
    fuzz_config(workdir, SLOW)
    fuzz_wav(workdir, SLOW)
    fuzz_session(workdir, SLOW)
    fuzz_scenarios(workdir, SLOW, script=False)
    fuzz_scenarios(workdir, SLOW, script=True)
    fuzz_toml_text(workdir, SLOW // 2)
    fuzz_mqtt(SLOW)
    ran = sum(CASES.values()) - before
    print(f"\nfuzzed {ran} cases, 0 tracebacks: " + ", ".join(f"{k} {v}" for k, v in sorted(OUTCOMES.items())))
    if SLOW >= 1700:
        assert ran >= 10_000, ran

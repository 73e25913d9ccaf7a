"""Loaders refuse what they cannot use, with one line that says why, before any model loads.

Issue 16 §2: WAV files (headerless, 1 Hz, header only, NaN samples, absurd lengths),
simulated-user scripts and scenarios (huge pauses, nan/inf times and gains), sessions
(checksums, header-only audio, non-finite times) and the place a session is recorded
into. The fuzzing of the same loaders is in ``test_fuzz.py``.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.audio.wav import MAX_AUDIO_S, read_audio
from duplex.errors import AudioError, ScenarioError, SessionError
from duplex.events import BargeIn, Notice
from duplex.session.recorder import Recorder, file_sha256
from duplex.session.scenario import load_scenario, parse_scenario
from duplex.session.store import load_session, prepare_session_dir
from duplex.simuser import load_script, parse_script

FRAME_S = FRAME_SAMPLES / SAMPLE_RATE


def one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg, repr(msg)
    return msg


def wav_bytes(n_samples: int, sr: int = SAMPLE_RATE, ch: int = 1, declared: int | None = None,
              fmt: int = 1, bits: int = 16, data: bytes | None = None) -> bytes:
    """A canonical 44-byte-header WAV, its fields as given (to build broken ones)."""
    nbytes = n_samples * ch * bits // 8
    body = data if data is not None else b"\x00" * nbytes
    size = declared if declared is not None else len(body)
    return (b"RIFF" + struct.pack("<I", min(36 + size, 0xFFFFFFFF)) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, fmt, ch, sr, sr * ch * bits // 8, ch * bits // 8, bits)
            + b"data" + struct.pack("<I", size) + body)


# --- WAV ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, content, message", [
    ("x.raw", b"\x01\x02" * 8000, "headerless audio has no sample rate"),
    ("x.pcm", b"\x01\x02" * 8000, "convert it to WAV first"),
    ("one_hz.wav", wav_bytes(100, sr=1), "sample rate 1 Hz is outside 8000..384000 Hz"),
    ("header_only.wav", wav_bytes(0), "empty"),
    ("empty.wav", b"", "cannot read audio file"),
    ("garbage.wav", b"not a wav at all" * 10, "cannot read audio file"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 20 else "")
def test_wav_loader_refuses_what_it_cannot_use(tmp_path, name, content, message):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(AudioError, match=message) as info:
        read_audio(p)
    assert name in one_line(info.value)


def test_wav_with_nan_samples_is_refused(tmp_path):
    import soundfile as sf

    x = np.zeros(1600, np.float32)
    x[100] = np.nan
    sf.write(tmp_path / "nan.wav", x, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite samples"):
        read_audio(tmp_path / "nan.wav")
    x[100] = np.inf
    sf.write(tmp_path / "inf.wav", x, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite samples"):
        read_audio(tmp_path / "inf.wav")


def test_wav_longer_than_the_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    import duplex.audio.wav as wav

    p = tmp_path / "long.wav"
    p.write_bytes(wav_bytes(8000 * 3, sr=8000))  # 3 s
    monkeypatch.setattr(wav, "MAX_AUDIO_S", 2.0)
    with pytest.raises(AudioError, match=r"3 s of audio .* more than the 2 s"):
        read_audio(p)
    assert MAX_AUDIO_S >= 3600, "an hour-long recording must still load"
    # A header claiming 4 GiB over 64 bytes of data: libsndfile reads what is there.
    p.write_bytes(wav_bytes(0, sr=8000, declared=0xFFFFFFF0, data=b"\x00" * 64))
    assert len(read_audio(p)) == 64




def test_odd_sample_rates_resample_quickly_and_to_the_right_length(tmp_path):
    import soundfile as sf

    # 44101 Hz has no small polyphase factor against 16 kHz; resample_poly's filter
    # would have ~880k taps.
    sf.write(tmp_path / "odd.wav", np.zeros(44101, np.float32), 44101, subtype="PCM_16")
    x = read_audio(tmp_path / "odd.wav")
    assert abs(len(x) - SAMPLE_RATE) <= 1


# --- scripts and scenarios -------------------------------------------------------------------

SCENARIO = {"name": "t", "say": [{"text": "hi", "at": 0.5}]}


@pytest.mark.parametrize("patch, message", [
    ({"say": [{"text": "a [pause 99999999999] b", "at": 0.5}]}, "[pause 99999999999] is longer than the 600000 ms"),
    ({"say": [{"text": "hi", "at": math.nan}]}, "at must be a number in 0..86400, got nan"),
    ({"say": [{"text": "hi", "at": math.inf}]}, "at must be a number in 0..86400, got inf"),
    ({"say": [{"text": "hi", "at": -1}]}, "at must be a number in 0..86400, got -1"),
    ({"say": [{"text": "hi", "at": 10**400}]}, "at must be a number in 0..86400"),
    ({"say": [{"text": "hi", "at": 1, "gain_db": math.nan}]}, "gain_db must be a number in -120..40, got nan"),
    ({"say": [{"text": "hi", "at": 1, "gain_db": 400}]}, "gain_db must be a number in -120..40"),
    ({"say": [{"text": "hi", "after_previous": -0.5}]}, "after_previous must be a number in 0..86400"),
    ({"say": [{"text": "hi", "after_agent_sentence": 10**6}]}, "whole number in 1..1000"),
    ({"say": [{"sound": "x.wav", "at": 1, "clip": [0, math.inf]}]}, "clip must be a number in 0..86400, got inf"),
    ({"say": [{"text": "x" * 10_001, "at": 1}]}, "the limit is 10000"),
    ({"tail_s": math.inf}, "tail_s must be a number in 0.1..3600, got inf"),
    ({"tail_s": math.nan}, "tail_s must be a number in 0.1..3600, got nan"),
    ({"max_wait_s": 1e12}, "max_wait_s must be a number in 1..3600"),
    ({"echo_db": math.nan}, "echo_db must be a number in -120..40, got nan"),
    ({"echo_delay_ms": -5}, "echo_delay_ms must be a number in 0..2000"),
    ({"voice": "robot"}, "unknown user voice 'robot'"),
    ({"config": {"vad": {"threshold": math.nan}}}, "[config]: vad.threshold must be a number > 0 and < 1, got nan"),
    ({"config": {"engine": {"mic_queue_frames": 0}}}, "[config]: engine.mic_queue_frames must be an integer in 1..1000000"),
    ({"say": [{"text": "hi", "at": 1, "expect": "stops", "stop_within_ms": math.nan}]}, "stop_within_ms must be a number"),
    ({"weird\nkey": 1}, "unknown key(s) 'weird\\nkey'"),
])
def test_scenarios_refuse_out_of_range_values_with_the_bounds(patch, message):
    with pytest.raises(ScenarioError) as info:
        parse_scenario({**SCENARIO, **patch}, "x.toml")
    msg = one_line(info.value)
    assert message in msg and msg.startswith("x.toml"), msg


@pytest.mark.parametrize("script, message", [
    ({"say": [{"text": "a [pause 99999999999] b", "at": 0.5}]}, "is longer than the 600000 ms a pause may last"),
    ({"say": [{"text": "hi", "at": math.nan}]}, "at must be a number in 0..86400, got nan"),
    ({"say": [{"text": "hi", "after_agent_done": math.inf}]}, "after_agent_done must be a number in 0..86400, got inf"),
    ({"voice": "espeak:", "say": [{"text": "hi", "at": 1}]}, "unknown user voice"),
    ({"tail_s": 3, "say": [{"text": "hi", "at": 1}]}, "unknown key(s) tail_s"),
])
def test_scripts_refuse_out_of_range_values(script, message):
    with pytest.raises(ScenarioError) as info:
        parse_script(script, "s.toml")
    assert message in one_line(info.value)


def test_a_script_s_sound_files_are_checked_when_it_loads(tmp_path):
    """Before models load, not when the line is rendered after 20 s of loading."""
    (tmp_path / "one_hz.wav").write_bytes(wav_bytes(100, sr=1))
    for name, where in [("s.toml", load_script), ("scn.toml", load_scenario)]:
        p = tmp_path / name
        p.write_text('[[say]]\nsound = "one_hz.wav"\nat = 0.5\n', encoding="utf-8")
        with pytest.raises(ScenarioError, match=r"say #1: sound for line <one_hz.wav>: .*sample rate 1 Hz") as info:
            where(p)
        one_line(info.value)
        p.write_text('[[say]]\nsound = "missing.wav"\nat = 0.5\n', encoding="utf-8")
        with pytest.raises(ScenarioError, match="not found"):
            where(p)


def test_the_packaged_demo_and_benchmark_scripts_still_load():
    root = Path(__file__).resolve().parent.parent
    for p in [root / "examples" / "demo.toml", *sorted((root / "benchmarks" / "scripts").glob("*.toml"))]:
        voice, utts = load_script(p)
        assert utts, p


# --- sessions ---------------------------------------------------------------------------------


def record(path: Path, cfg, n_frames: int = 10, events=()) -> None:
    rng = np.random.default_rng(3)
    rec = Recorder(path, cfg, source="test")
    for i in range(n_frames):
        rec.on_audio(i * FRAME_S, rng.uniform(-0.3, 0.3, FRAME_SAMPLES).astype(np.float32),
                     np.zeros(FRAME_SAMPLES, np.float32))
    for ev in events:
        rec.on_event(ev)
    rec.close()


def test_the_recorder_writes_a_checksum_per_wav_and_the_loader_checks_it(tmp_path, cfg):
    d = tmp_path / "s"
    record(d, cfg)
    meta = json.loads((d / "session.json").read_text())
    assert meta["sha256"] == {"mic.wav": file_sha256(d / "mic.wav"), "agent.wav": file_sha256(d / "agent.wav")}
    assert load_session(d).complete
    raw = bytearray((d / "mic.wav").read_bytes())
    raw[1000] ^= 0x40  # one flipped bit in the audio: still a valid WAV
    (d / "mic.wav").write_bytes(bytes(raw))
    with pytest.raises(SessionError, match="mic.wav: does not match the SHA-256") as info:
        load_session(d)
    one_line(info.value)


def test_a_header_only_mic_wav_is_refused_not_replayed_in_no_time(tmp_path, cfg):
    d = tmp_path / "s"
    record(d, cfg)
    (d / "mic.wav").write_bytes(wav_bytes(0))
    with pytest.raises(SessionError, match="does not match the SHA-256"):
        load_session(d)
    # Without a checksum (a crashed recording), still refused: nothing to replay.
    meta = json.loads((d / "session.json").read_text())
    del meta["sha256"]
    (d / "session.json").write_text(json.dumps(meta))
    with pytest.raises(SessionError, match="no audio to replay") as info:
        load_session(d)
    one_line(info.value)


@pytest.mark.parametrize("line, message", [
    ('{"type":"notice","t":NaN,"message":"x"}', "notice.t must be a finite number, got nan"),
    ('{"type":"notice","t":Infinity,"message":"x"}', "notice.t must be a finite number, got inf"),
    ('{"type":"notice","t":-1.5,"message":"x"}', "notice.t must be a time in 0..604800 s, got -1.5"),
    ('{"type":"notice","t":10000000000,"message":"x"}', "notice.t must be a time in 0..604800 s, got 10000000000"),
    ('{"type":"barge_in","t":1.0,"turn":1,"onset":NaN,"reaction":0.1}', "barge_in.onset must be a finite number"),
    ('[' * 100_000 + ']' * 100_000, "line 2"),
])
def test_negative_and_non_finite_event_times_are_refused(tmp_path, cfg, line, message):
    d = tmp_path / "s"
    record(d, cfg, events=[Notice(0.0, message="a")])
    p = d / "events.jsonl"
    p.write_text(p.read_text() + line + "\n" + '{"type":"notice","t":0.5,"message":"b"}\n')
    with pytest.raises(SessionError, match="events.jsonl") as info:
        load_session(d)
    assert message in one_line(info.value)


@pytest.mark.parametrize("change, message", [
    ({"duration_s": float("nan")}, "'duration_s' must be a non-negative number"),
    ({"duration_s": -3}, "'duration_s' must be a non-negative number"),
    ({"sha256": "abc"}, "'sha256' must map each WAV file"),
    ({"sha256": {"mic.wav": 5}}, "'sha256' must map each WAV file"),
])
def test_session_json_values_are_checked(tmp_path, cfg, change, message):
    d = tmp_path / "s"
    record(d, cfg)
    meta = json.loads((d / "session.json").read_text())
    meta.update(change)
    (d / "session.json").write_text(json.dumps(meta))
    with pytest.raises(SessionError, match="session.json") as info:
        load_session(d)
    assert message in one_line(info.value)


def test_a_recorded_config_now_out_of_range_is_a_session_error(tmp_path, cfg):
    from duplex.session.replay import session_config

    d = tmp_path / "s"
    record(d, cfg)
    meta = json.loads((d / "session.json").read_text())
    meta["config"]["tts"]["speed"] = 0.0
    (d / "session.json").write_text(json.dumps(meta))
    with pytest.raises(SessionError, match=r"session.json: config: tts.speed must be a number in 0.25..4, got 0.0"):
        session_config(load_session(d))


def test_a_recording_that_failed_is_not_marked_complete(tmp_path, cfg):
    d = tmp_path / "s"
    rec = Recorder(d, cfg, source="test")
    rec.on_audio(0.0, np.zeros(FRAME_SAMPLES, np.float32), np.zeros(FRAME_SAMPLES, np.float32))
    rec._fail(OSError(28, "No space left on device"))  # what a full disk does mid-write
    rec.close()
    meta = json.loads((d / "session.json").read_text())
    assert meta["complete"] is False and "No space left" in meta["failed"] and "sha256" not in meta


# --- where a session is recorded ----------------------------------------------------------------


def test_prepare_session_dir_refuses_a_file_a_session_and_an_unwritable_place(tmp_path, cfg):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(SessionError, match="it is a file, not a directory") as info:
        prepare_session_dir(f)
    one_line(info.value)
    with pytest.raises(SessionError, match="cannot record into"):
        prepare_session_dir(f / "under-a-file")
    d = tmp_path / "s"
    record(d, cfg)
    with pytest.raises(SessionError, match="already holds a session"):
        prepare_session_dir(d)
    assert prepare_session_dir(d, overwrite=True) == d
    fresh = tmp_path / "a" / "b"
    assert prepare_session_dir(fresh) == fresh and fresh.is_dir() and not any(fresh.iterdir())
    if os.geteuid() != 0:  # root writes anywhere; a read-only place needs another user
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(SessionError, match="cannot record into"):
            prepare_session_dir(ro / "s")
    proc = Path("/proc/self/new-session")
    with pytest.raises(SessionError, match="cannot record into") as info:
        prepare_session_dir(proc)
    one_line(info.value)


def test_the_recorder_itself_raises_a_session_error_where_it_cannot_write(tmp_path, cfg):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(SessionError, match="cannot record a session in"):
        Recorder(f / "s", cfg)


def test_bad_events_round_trip(tmp_path, cfg):
    """A valid session with decisions still loads exactly (the checks refuse only junk)."""
    d = tmp_path / "s"
    evs = [Notice(0.0, message="a"), BargeIn(0.5, turn=1, onset=0.1, reaction=0.4, text="wait")]
    record(d, cfg, events=evs)
    s = load_session(d)
    assert [e.to_json() for e in s.events] == [e.to_json() for e in evs] and not s.warnings


# --- end to end: the CLI refuses before it loads a model ------------------------------------------


def _cli(capsys, argv: list[str]) -> tuple[int, list[str]]:
    from duplex.cli import main

    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


@pytest.mark.parametrize("setting", [
    "vad.threshold=nan", "vad.threshold=-1", "vad.threshold=2", "tts.speed=0", "tts.speed=-1",
    "llm.max_tokens=-1", "llm.n_ctx=1", "llm.temperature=inf", "llm.history_turns=-1", "llm.threads=-1",
    "vad.hangover_ms=-1", "vad.min_speech_ms=-1", "recording.flush_ms=-1", "engine.mic_queue_frames=0",
    "mqtt.outbox_size=0", "asr.cpu_threads=-1", "engine.max_pending_audio_s=-1",
])
def test_the_seventeen_silent_values_now_exit_2_with_one_line(tmp_path, capsys, setting):
    import soundfile as sf

    wav = tmp_path / "in.wav"
    sf.write(wav, np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE, subtype="PCM_16")
    rc, err = _cli(capsys, ["run", "--input", str(wav), "--no-record", "--set", setting])
    assert rc == 2 and len(err) == 1 and err[0].startswith("duplex: error:"), err
    assert setting.split("=")[0] in err[0] and " must be " in err[0]


def test_bad_inputs_exit_2_before_models_load(tmp_path, capsys, cfg):
    (tmp_path / "x.raw").write_bytes(b"\x00\x01" * 16000)
    (tmp_path / "pause.toml").write_text('[[say]]\ntext = "a [pause 99999999999] b"\nat = 0.5\n', encoding="utf-8")
    record(tmp_path / "s", cfg)
    (tmp_path / "s" / "mic.wav").write_bytes(wav_bytes(0))  # once "1616522304x real time"
    for argv in (["run", "--input", str(tmp_path / "x.raw"), "--no-record"],
                 ["run", "--simulate", str(tmp_path / "pause.toml"), "--no-record"],
                 ["replay", str(tmp_path / "s")]):
        rc, err = _cli(capsys, argv)
        assert rc == 2 and len(err) == 1 and err[0].startswith("duplex: error:"), (argv, err)


def test_disk_full_mid_recording_keeps_what_was_written_and_says_incomplete(tmp_path, cfg, monkeypatch, caplog):
    """Fault injection at the WAV writer: the conversation side never sees the error, the
    audio up to the fault loads, and session.json says why the session is incomplete."""
    import errno

    from duplex.audio.wav import IncrementalWav

    real_write = IncrementalWav.write
    written = {"n": 0}

    def write(self, audio):
        if self.path.name == "mic.wav":
            written["n"] += 1
            if written["n"] > 6:
                raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, audio)

    monkeypatch.setattr(IncrementalWav, "write", write)
    d = tmp_path / "s"
    rec = Recorder(d, cfg, source="test")
    frames = [np.full(FRAME_SAMPLES, 0.01 * (i + 1), np.float32) for i in range(10)]
    for i, f in enumerate(frames):
        rec.on_audio(i * FRAME_S, f, np.zeros(FRAME_SAMPLES, np.float32))  # never raises
        rec.on_event(Notice(i * FRAME_S, message=f"frame {i}"))
    rec.close()
    assert rec.failed and "No space left" in rec.failed
    meta = json.loads((d / "session.json").read_text())
    assert meta["complete"] is False and "No space left" in meta["failed"]
    s = load_session(d)
    assert not s.complete and s.n_frames == 6
    assert np.allclose(s.mic[-FRAME_SAMPLES:], frames[5], atol=1e-4)  # the last frame before the fault

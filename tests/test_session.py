"""Recorded sessions: format, crash safety, loading errors, deterministic replay, reports, export.

Fast tests build sessions with the Recorder alone; the replay tests record one short
scenario on the real models (once per module) and replay it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.cli import build_parser
from duplex.cli import main as duplex_main
from duplex.errors import SessionError
from duplex.events import (
    AgentStopped,
    AgentTurnEnded,
    AgentTurnStarted,
    ASRFinal,
    AudioPlayed,
    Backchannel,
    BargeIn,
    EndOfTurn,
    Muted,
    Notice,
    OverlapIgnored,
    SessionEnded,
    UserSpeechEnded,
    UserSpeechStarted,
)
from duplex.session.recorder import Recorder, as_recorded
from duplex.session.store import load_session

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "tests" / "scenarios"
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE


def write_session(path: Path, cfg, n_frames: int = 20, events=()) -> np.ndarray:
    """A session written by the real Recorder: noise on the mic, a tone on the speaker."""
    rng = np.random.default_rng(7)
    rec = Recorder(path, cfg, source="test")
    mics = []
    for i in range(n_frames):
        mic = rng.uniform(-0.3, 0.3, FRAME_SAMPLES).astype(np.float32)
        played = (0.2 * np.sin(np.arange(FRAME_SAMPLES) * 0.1)).astype(np.float32)
        rec.on_audio(i * FRAME_S, mic, played)
        mics.append(mic)
    for ev in events:
        rec.on_event(ev)
    rec.close()
    return np.concatenate(mics)


# --- format and loading ---------------------------------------------------------------------


def test_session_round_trips_audio_and_events_exactly(tmp_path, cfg):
    events = [UserSpeechStarted(0.1, agent_speaking=True), BargeIn(0.5, turn=1, onset=0.1, reaction=0.4, text="wait")]
    mic = write_session(tmp_path / "s", cfg, events=events)
    s = load_session(tmp_path / "s")
    assert s.complete and not s.warnings
    assert s.meta["format"] == 1 and s.meta["sample_rate"] == SAMPLE_RATE and s.meta["clock"] == "simulated"
    assert {"vad", "asr", "llm", "tts", "policy", "packages"} <= set(s.meta["models"])
    assert s.mic.shape == s.agent.shape == (20 * FRAME_SAMPLES,)
    # What was loaded is exactly what the listener heard when the recorder's filter ran.
    assert np.array_equal(s.mic, as_recorded(mic))
    assert [e.to_json() for e in s.events] == [e.to_json() for e in events]


def test_as_recorded_is_what_mic_wav_gives_back(tmp_path, cfg):
    x = np.random.default_rng(1).uniform(-1.5, 1.5, 40 * FRAME_SAMPLES).astype(np.float32)
    once = as_recorded(x)
    assert np.array_equal(as_recorded(once), once)  # idempotent: replays of replays stay exact
    rec = Recorder(tmp_path / "s", cfg)
    for i in range(40):
        rec.on_audio(i * FRAME_S, x[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES], np.zeros(FRAME_SAMPLES, np.float32))
    rec.close()
    assert np.array_equal(load_session(tmp_path / "s").mic, once)


def test_truncated_last_line_is_ignored_with_a_warning(tmp_path, cfg):
    write_session(tmp_path / "s", cfg, events=[Notice(0.0, message="a"), Notice(0.1, message="b")])
    p = tmp_path / "s" / "events.jsonl"
    p.write_text(p.read_text() + '{"type":"notice","t":0.2,"mess', encoding="utf-8")
    s = load_session(tmp_path / "s")
    assert [e.message for e in s.events] == ["a", "b"]
    assert any("cut short" in w for w in s.warnings)


def test_stale_wav_header_is_repaired_on_load(tmp_path, cfg):
    write_session(tmp_path / "s", cfg)
    # A crash: the recorder never closed, so session.json has no checksums and says incomplete.
    meta = json.loads((tmp_path / "s" / "session.json").read_text())
    del meta["sha256"]
    meta["complete"] = False
    (tmp_path / "s" / "session.json").write_text(json.dumps(meta))
    wav = tmp_path / "s" / "mic.wav"
    raw = bytearray(wav.read_bytes())
    raw[40:44] = (FRAME_SAMPLES * 2 * 3).to_bytes(4, "little")  # header says 3 frames
    wav.write_bytes(bytes(raw))
    s = load_session(tmp_path / "s")
    assert s.n_frames == 20
    assert any("header says" in w for w in s.warnings)
    assert not load_session(tmp_path / "s").warnings  # rewritten in place


KILL_CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from duplex.config import load_config
    from duplex.events import Levels, Notice
    from duplex.session.recorder import Recorder
    rec = Recorder(sys.argv[1], load_config(), source="kill test")
    rng = np.random.default_rng(0)
    t0 = time.monotonic()
    i = 0
    while True:
        t = i * 512 / 16000
        time.sleep(max(0.0, t0 + t - time.monotonic()))
        rec.on_event(Levels(t, mic_db=-20.0, out_db=-30.0, vad=0.5))
        rec.on_event(Notice(t, message="x" * 300))  # long lines: the buffer spills mid-line
        rec.on_audio(t, rng.uniform(-0.5, 0.5, 512).astype(np.float32), np.zeros(512, np.float32))
        print(f"{t + 512 / 16000:.3f}", flush=True)  # audio handed to the recorder so far
        i += 1
""")


def test_kill_9_during_a_recording_loses_less_than_200_ms(tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(out)], stdout=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)
    handed = 0.0
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            handed = float(line)
            if handed >= 1.5:
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(10)
    assert handed >= 1.5, "the child never got going"
    s = load_session(out)
    assert not s.complete
    # The child kept going a little while the parent read; what it handed over by the
    # kill is at least `handed`, so this bound is on the safe side.
    assert s.duration >= handed - 0.2, (s.duration, handed, s.warnings)
    assert s.events and all(e.t <= s.duration + 0.5 for e in s.events)


# --- corrupt sessions: one line, exit 2 -------------------------------------------------------


def _corrupt(kind: str, d: Path) -> None:
    meta = d / "session.json"
    match kind:
        case "missing":
            import shutil

            shutil.rmtree(d)
        case "not-json":
            meta.write_text("{ this is not json", encoding="utf-8")
        case "future-format":
            m = json.loads(meta.read_text())
            m["format"] = 99
            meta.write_text(json.dumps(m))
        case "bad-config-type":
            m = json.loads(meta.read_text())
            m["config"]["vad"]["threshold"] = "high"
            meta.write_text(json.dumps(m))
        case "mic-not-wav":
            (d / "mic.wav").write_bytes(b"hello, not audio at all" * 10)
        case "mic-stereo":
            import soundfile as sf

            sf.write(str(d / "mic.wav"), np.zeros((16000, 2), np.float32), 16000, subtype="PCM_16")
        case "agent-missing":
            (d / "agent.wav").unlink()
        case "bad-middle-line":
            p = d / "events.jsonl"
            lines = p.read_text().splitlines()
            lines.insert(1, "{oops")
            p.write_text("\n".join(lines) + "\n")
        case "edited-field-type":
            p = d / "events.jsonl"
            p.write_text(p.read_text().replace('"reaction":0.4', '"reaction":"fast"'))
        case "bad-enum":
            p = d / "events.jsonl"
            p.write_text(p.read_text() + '{"type":"state_changed","t":1.0,"state":"dancing"}\n')


@pytest.mark.parametrize("kind", ["missing", "not-json", "future-format", "bad-config-type", "mic-not-wav",
                                  "mic-stereo", "agent-missing", "bad-middle-line", "edited-field-type", "bad-enum"])
@pytest.mark.parametrize("command", ["replay", "export-case"])
def test_corrupt_session_gives_one_line_and_exit_2(tmp_path, cfg, capsys, kind, command):
    d = tmp_path / "s"
    write_session(d, cfg, events=[Notice(0.0, message="a"), BargeIn(0.5, turn=1, onset=0.1, reaction=0.4),
                                  Notice(0.6, message="b")])
    _corrupt(kind, d)
    if command == "export-case" and kind == "bad-config-type":
        pytest.skip("export reads no config")
    argv = [command, str(d)] + ([str(tmp_path / "case")] if command == "export-case" else [])
    rc = duplex_main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("duplex: error:"), err
    assert "Traceback" not in err[0]


def test_session_json_with_unknown_config_keys_still_replays(tmp_path, cfg):
    from duplex.session.replay import session_config

    d = tmp_path / "s"
    write_session(d, cfg)
    m = json.loads((d / "session.json").read_text())
    m["config"]["vad"]["some_future_knob"] = 3
    m["config"]["future_section"] = {"x": 1}
    m["config"]["mqtt"]["enabled"] = True
    (d / "session.json").write_text(json.dumps(m))
    c = session_config(load_session(d), overrides=[{"policy": {"name": "rules"}}])
    assert c.vad.threshold == cfg.vad.threshold and not c.mqtt.enabled
    with pytest.raises(SessionError):
        m["config"]["vad"]["threshold"] = [1]
        (d / "session.json").write_text(json.dumps(m))
        session_config(load_session(d))


# --- recorded commands, reports, labels (synthetic events) --------------------------------------


def test_recorded_commands_are_reconstructed():
    from duplex.session.replay import recorded_commands

    events = [
        AgentTurnStarted(0.0, turn=1, prompt="Hello there."),  # a say: no end of turn with it
        Muted(0.64, muted=True),
        Muted(1.28, muted=False),
        EndOfTurn(2.016, turn=2, delay=0.64, text="hi"),
        AgentTurnStarted(2.016, turn=2, prompt="hi"),  # an LLM reply: not a command
        Notice(3.2, message="policy switched to predictor"),
        SessionEnded(4.0, reason="scenario over"),
    ]
    cmds = [(c.frame, c.name, c.arg) for c in recorded_commands(events, n_frames=125)]
    assert cmds == [(0, "say", "Hello there."), (20, "mute", ""), (40, "unmute", ""),
                    (100, "policy", "predictor"), (124, "end", "scenario over")]


SYNTHETIC = [
    AgentTurnStarted(0.0, turn=1, prompt="The moon is far. It is bright."),
    AudioPlayed(0.5, turn=1, n_samples=512, text="The moon"),
    UserSpeechStarted(1.0, agent_speaking=True),
    AudioPlayed(1.1, turn=1, n_samples=512, text="is"),
    UserSpeechEnded(1.5, duration=0.5),
    ASRFinal(1.5, text="okay", utterance=1),
    Backchannel(1.5, who="user", text="okay", onset=1.0),
    UserSpeechStarted(2.0, agent_speaking=True),
    UserSpeechEnded(2.3, duration=0.3),
    ASRFinal(2.3, text="", utterance=2),
    OverlapIgnored(2.3, onset=2.0, duration=0.3),
    UserSpeechStarted(3.0, agent_speaking=True),
    BargeIn(3.4, turn=1, onset=3.0, reaction=0.4, text="wait"),
    AgentTurnEnded(3.4, turn=1, interrupted=True, generated="The moon is far. It is bright.", heard="The moon is"),
    AgentStopped(3.432, turn=1, latency=0.432),
    UserSpeechEnded(4.2, duration=1.2),
    ASRFinal(4.2, text="wait how far", utterance=3),
    UserSpeechStarted(4.8, agent_speaking=False),
    UserSpeechEnded(5.5, duration=0.7),
    ASRFinal(5.5, text="is it", utterance=4),
    EndOfTurn(5.948, turn=2, delay=0.64, text="wait how far is it"),
    AgentTurnStarted(5.948, turn=2, prompt="wait how far is it"),
    AudioPlayed(6.0, turn=2, n_samples=512, text=""),
]


def test_interruption_report_lists_every_overlap_and_end_of_turn():
    from duplex.session.report import build_report

    r = build_report(SYNTHETIC)
    assert [(o.onset, o.decision, o.user_said) for o in r.overlaps] == [
        (1.0, "backchannel", "okay"), (2.0, "continue", ""), (3.0, "barge-in", "wait how far")]
    bc, noise, barge = r.overlaps
    assert bc.reaction == pytest.approx(0.5) and bc.heard_before == "The moon"
    assert barge.reaction == pytest.approx(0.4) and barge.stopped_after == pytest.approx(0.432)
    assert barge.heard == "The moon is" and barge.generated.endswith("bright.")
    assert [(e.turn, e.delay, e.user_said) for e in r.end_of_turns] == [(2, 0.64, "wait how far is it")]
    table = r.format()
    assert "barge-in" in table and "never heard: 'far. It is bright.'" in table
    json.dumps(r.to_dict())


def test_labels_from_decisions():
    from duplex.session.export import session_labels

    labels = [(round(x.start, 3), round(x.end, 3), x.label) for x in session_labels(SYNTHETIC, 0.192, 7.0)]
    assert labels == [
        (1.0, 1.308, "backchannel"),
        (2.0, 2.108, "noise"),
        (3.0, 4.008, "barge_in"),
        (4.008, 4.8, "hold"),  # the user paused after the barge-in and went on
        (5.308, 6.0, "end_of_turn"),  # from the user's last word to the agent's first audio
    ]


# --- real models: record, replay, compare ------------------------------------------------------


RECORD = {
    "name": "replay-fixture",
    "agent_says": "The next train leaves at ten past nine from platform four. It takes about four hours.",
    "say": [
        {"text": "Okay.", "after_agent_speech": 0.8},
        {"text": "Wait, which platform was that?", "after_agent_speech": 2.2},
    ],
    "tail_s": 1.2,
}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, cfg, models):
    """One short scenario session recorded on the real models (backchannel, barge-in, end of turn)."""
    from duplex.session.scenario import ScenarioRunner, parse_scenario

    keep = tmp_path_factory.mktemp("sessions")
    res = ScenarioRunner(cfg, models, keep_dir=keep).run(parse_scenario(RECORD))
    return res


def test_record_then_replay_twice_gives_identical_decisions(recorded, cfg, models):
    from duplex.session.replay import replay, session_config
    from duplex.session.report import compare_decisions, decision_lines

    session = load_session(recorded.session_dir)
    types = {e.type for e in session.decisions()}
    assert {"backchannel", "barge_in", "end_of_turn"} <= types, types  # the fixture exercises all three
    rcfg = session_config(session)
    first = asyncio.run(replay(session, rcfg, models))
    second = asyncio.run(replay(session, rcfg, models))
    a = [e.decision_key() for e in first.events if e.DECISION]
    b = [e.decision_key() for e in second.events if e.DECISION]
    assert a == b  # byte-identical (less the LLM's speed-dependent `generated`)
    assert compare_decisions(session.events, first.events) == []  # and the same as the recording
    assert decision_lines(session.events)


def _replay_args(*argv: str):
    return build_parser().parse_args(["replay", *argv])


def test_replay_cli_compare_passes_then_fails_on_a_broken_policy(recorded, models, tmp_path, capsys):
    from duplex.commands.replay import run as replay_main

    out = tmp_path / "report.json"
    assert replay_main(_replay_args(str(recorded.session_dir), "--compare", "--json", str(out)), models) == 0
    text = capsys.readouterr().out
    assert "decisions identical to the recording" in text and "barge-in" in text
    report = json.loads(out.read_text())
    assert report["compare"]["identical"] and report["report"]["overlaps"]
    # A deliberately broken policy: it never lets the user interrupt.
    broken = ["--set", "policy.rules.barge_in_min_speech_ms=100000", "--set", "policy.rules.backchannel_max_ms=100000",
              "--set", "policy.rules.stop_word_min_ms=100000"]
    assert replay_main(_replay_args(str(recorded.session_dir), "--compare", *broken), models) == 1
    text = capsys.readouterr().out
    assert "decisions DIFFER" in text and '-{"onset"' in text


def test_replay_can_record_itself_exactly(recorded, models, tmp_path, capsys):
    from duplex.commands.replay import run as replay_main
    from duplex.session.report import compare_decisions

    again = tmp_path / "again"
    assert replay_main(_replay_args(str(recorded.session_dir), "--out", str(again)), models) == 0
    original, copy = load_session(recorded.session_dir), load_session(again)
    assert np.array_equal(original.mic, copy.mic[: len(original.mic)])
    assert compare_decisions(original.events, copy.events) == []


def test_export_case_reads_back_as_an_evaluation_case(recorded, tmp_path, capsys):
    from policies.harness import load_case

    rc = duplex_main(["export-case", str(recorded.session_dir), str(tmp_path / "case")])
    assert rc == 0, capsys.readouterr()
    case = load_case(tmp_path / "case.wav")
    session = load_session(recorded.session_dir)
    assert case.audio.shape == (len(session.mic), 2)
    assert np.abs(case.audio[:, 0] - session.agent).max() < 1e-3  # channel 0 = what was played
    assert np.abs(case.audio[:, 1] - session.mic).max() < 1e-3  # channel 1 = the microphone
    assert {e.label for e in case.events} >= {"backchannel", "barge_in", "end_of_turn"}


def test_a_pipeline_error_never_loses_the_recording(tmp_path, cfg, models):
    from duplex.app import run_conversation
    from duplex.audio.source import ArraySource

    audio = np.random.default_rng(3).uniform(-0.01, 0.01, SAMPLE_RATE * 3).astype(np.float32)

    frames = 0

    def explode_at_2s(mic, played):
        nonlocal frames
        frames += 1
        if frames * FRAME_S > 2.0:
            raise RuntimeError("a stage blew up")
        return mic

    with pytest.raises(RuntimeError, match="blew up"):
        asyncio.run(run_conversation(cfg, models, ArraySource(audio), session_dir=tmp_path / "s",
                                     on_engine=lambda e: e.add_mic_filter(explode_at_2s)))
    s = load_session(tmp_path / "s")
    assert s.complete and not s.warnings
    assert s.duration >= 2.0 - FRAME_S


@pytest.mark.parametrize("opened_by", ["run_conversation", "caller"])
def test_a_recorded_run_s_listener_hears_exactly_what_mic_wav_holds(tmp_path, cfg, models, opened_by):
    """Any recording (not only replays and scenarios; also one the caller opened, as the
    TUI does) feeds the listener the 16-bit samples it writes, so its replay hears bit
    for bit the same audio."""
    from duplex.app import run_conversation
    from duplex.audio.source import ArraySource
    from duplex.session.recorder import Recorder

    audio = np.random.default_rng(5).uniform(-0.05, 0.05, SAMPLE_RATE * 2).astype(np.float32)
    heard: list[np.ndarray] = []

    def spy_on_listener(engine):
        step = engine.listener.step

        def spying(mic):
            heard.append(mic.copy())
            return step(mic)

        engine.listener.step = spying

    if opened_by == "caller":
        recorder = Recorder(tmp_path / "s", cfg)
        asyncio.run(run_conversation(cfg, models, ArraySource(audio), recording=recorder, on_engine=spy_on_listener))
        recorder.close()
    else:
        asyncio.run(run_conversation(cfg, models, ArraySource(audio), session_dir=tmp_path / "s",
                                     on_engine=spy_on_listener))
    s = load_session(tmp_path / "s")
    got = np.concatenate(heard)
    assert not np.array_equal(got[: len(audio)], audio[: len(got)])  # the float input was quantised...
    assert np.array_equal(got, s.mic[: len(got)])  # ...to exactly what mic.wav holds


@pytest.mark.slow
def test_kill_9_during_duplex_run(tmp_path):
    """The real command, paced in real time, killed while it records."""
    import time

    out = tmp_path / "killed"
    wav = SCENARIOS / "sounds" / "jfk.wav"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "duplex.cli", "run", "--input", str(wav), "--realtime",
                             "--out", str(out), "--quiet"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (out / "mic.wav").exists():
            assert proc.poll() is None, "duplex run exited early"
            assert time.monotonic() < deadline, "duplex run never started recording"
            time.sleep(0.01)
        started = time.monotonic()  # the recorder exists: the realtime source starts now
        time.sleep(3.0)
        elapsed = time.monotonic() - started
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(10)
    s = load_session(out)
    assert not s.complete
    # Events carry the live (wall) clock: everything up to the last flush before the kill
    # is on disk (flush interval 200 ms, plus start-up and a frame of slack).
    last_t = max(e.t for e in s.events)
    assert last_t >= elapsed - 0.2 - 0.15, (last_t, elapsed, s.warnings)
    # The audio is there for every frame the engine had processed (one Levels event per
    # frame), even when a loaded machine made it fall behind the wall clock.
    frames = sum(1 for e in s.events if e.type == "levels")
    assert s.duration >= frames * FRAME_SAMPLES / SAMPLE_RATE - 0.2 - 0.04, (s.duration, frames, s.warnings)


# --- replay determinism with barge-ins: the LLM's cache after an interrupted reply ---------------


def test_the_next_reply_does_not_depend_on_whether_the_interrupted_one_had_finished(models):
    """Issue 16 §1. On the simulated clock a barge-in lands at a fixed session time, but
    whether the LLM thread had *finished* the reply by then depends on machine load. The
    reply after it must be the same either way (it used to differ: its cache entries came
    from one-token decodes in one case and one batch in the other)."""
    import threading

    from duplex.history import History

    llm = models.llm
    if getattr(llm, "name", "") != "llama-cpp":
        pytest.skip("the in-process llama.cpp cache")
    h = History(llm.cfg.system_prompt, llm.cfg.history_turns)
    h.add_user("Hello there. Can you tell me something interesting about the moon?")
    first = h.messages()

    def reply(messages, flag=None, cancel_after=None):
        flag = flag or threading.Event()
        out = []
        for i, piece in enumerate(llm.stream(messages, flag)):
            out.append(piece)
            if cancel_after is not None and i + 1 >= cancel_after:
                flag.set()
        return "".join(out)

    llm.warmup()
    full = reply(first)
    h.add_agent(" ".join(full.split()[:5]), interrupted=True)
    h.add_user("Wait, stop, sorry. How far away is it from the earth?")
    second = h.messages()
    seconds = []
    for cut in (None, 3, 8):  # the thread finished before the barge-in; or it was 3 or 8 pieces in
        llm.warmup()
        flag = threading.Event()
        reply(first, flag, cut)
        flag.set()  # the barge-in
        seconds.append(reply(second))
    assert len(set(seconds)) == 1, seconds
    llm.warmup()
    assert reply(second) == seconds[0]  # and it is what a cold cache gives

"""Policy evaluation: case I/O, the harness's engine flags, and metrics on hand-made cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.cli import main as cli_main
from duplex.audio.wav import write_wav
from duplex.errors import PolicyError
from duplex.events import Decision
from duplex.listener import ListenerFrame
from duplex.turn import PolicyInput, PolicyOutput
from policies import eval as peval
from policies.harness import FRAME_S, CaseRunner, LabelledEvent, agent_activity, read_events, write_events

DATA = Path(__file__).parent / "data" / "policy"


class Scripted:
    """A policy that makes given decisions at given frame times (seconds, frame end)."""

    name = "scripted"

    def __init__(self, plan: dict[float, Decision]) -> None:
        self.plan = {round(t / FRAME_S): d for t, d in plan.items()}
        self.seen: list[PolicyInput] = []

    def reset(self) -> None:
        self.seen = []

    def step(self, x: PolicyInput) -> PolicyOutput:
        self.seen.append(x)
        return PolicyOutput(self.plan.get(round(x.t / FRAME_S)))


def frames(n: int, speaking: set[int] = frozenset()) -> list[ListenerFrame]:
    return [
        ListenerFrame(vad=1.0 if i in speaking else 0.0, user_speaking=i in speaking, speech_run=0.0,
                      silence=0.0 if i in speaking else 0.1, partial="", utterance=0)
        for i in range(n)
    ]


def stereo(seconds: float, agent_spans: list[tuple[float, float]]) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE) // FRAME_SAMPLES * FRAME_SAMPLES
    audio = np.zeros((n, 2), dtype=np.float32)
    rng = np.random.default_rng(0)
    for a, b in agent_spans:
        i, j = int(a * SAMPLE_RATE), int(b * SAMPLE_RATE)
        audio[i:j, 0] = rng.standard_normal(j - i) * 0.1
    return audio


def test_tsv_round_trip_and_errors(tmp_path: Path) -> None:
    events = [LabelledEvent(1.0, 2.0, "barge_in"), LabelledEvent(0.5, 0.7, "hold")]
    write_events(tmp_path / "a.tsv", events)
    assert read_events(tmp_path / "a.tsv") == (events[1], events[0])
    (tmp_path / "b.tsv").write_text("1.0\t2.0\tinterrupt\n")
    with pytest.raises(PolicyError, match="unknown label 'interrupt'"):
        read_events(tmp_path / "b.tsv")
    (tmp_path / "c.tsv").write_text("2.0\t1.0\thold\n")
    with pytest.raises(PolicyError, match="before start"):
        read_events(tmp_path / "c.tsv")


def test_agent_activity_merges_sentence_gaps_only() -> None:
    audio = stereo(6.0, [(0.0, 1.0), (1.5, 2.0), (3.5, 4.0)])
    speaking, spoken = agent_activity(audio[:, 0])
    t = (np.arange(len(speaking)) + 1) * FRAME_S
    assert speaking[(t > 1.1) & (t < 1.4)].all(), "a 0.5 s pause stays inside the reply"
    assert not speaking[(t > 2.2) & (t < 3.4)].any(), "a 1.5 s pause ends the reply"
    assert spoken[np.searchsorted(t, 1.9)] == pytest.approx(1.9, abs=0.07)
    assert spoken[np.searchsorted(t, 3.9)] == pytest.approx(0.4, abs=0.07)


def test_user_turn_open_closes_on_end_of_turn() -> None:
    audio = stereo(4.0, [(3.0, 3.8)])
    n = audio.shape[0] // FRAME_SAMPLES
    speech = set(range(10, 30))  # the user talks 0.32-0.96 s with the agent silent
    pol = Scripted({1.5: Decision.END_OF_TURN})
    trace = CaseRunner(audio, frames(n, speech)).run(pol)
    t = trace.t
    assert not trace.user_turn_open[t < 0.3].any()
    assert trace.user_turn_open[(t > 0.4) & (t <= 1.5)].all()
    assert not trace.user_turn_open[(t > 1.55)].any(), "END_OF_TURN hands the turn to the agent"
    assert [x.agent_speaking for x in pol.seen][int(3.2 / FRAME_S)]


def _hand_case() -> tuple[list[LabelledEvent], dict[float, Decision]]:
    events = [
        LabelledEvent(1.0, 1.6, "barge_in"),  # caught 0.216 s after onset
        LabelledEvent(3.0, 3.4, "backchannel"),  # wrongly barged in: a false barge-in
        LabelledEvent(5.0, 5.3, "noise"),  # let pass
        LabelledEvent(6.0, 6.5, "barge_in"),  # missed
        LabelledEvent(8.0, 8.4, "backchannel"),  # recognised as a backchannel
        LabelledEvent(10.0, 10.8, "hold"),  # premature cut-off inside
        LabelledEvent(12.0, 14.0, "end_of_turn"),  # ended 0.288 s after the last word
        LabelledEvent(15.0, 15.6, "hold"),  # held correctly
        LabelledEvent(16.0, 18.0, "end_of_turn"),  # never ended: missed
    ]
    plan = {
        1.216: Decision.BARGE_IN,
        3.2: Decision.BARGE_IN,
        8.608: Decision.BACKCHANNEL,
        9.3: Decision.BARGE_IN,  # outside every event: spurious (echo)
        10.4: Decision.END_OF_TURN,
        12.288: Decision.END_OF_TURN,
        19.0: Decision.END_OF_TURN,  # outside every window: spurious
    }
    return events, plan


def test_score_case_on_a_hand_made_case() -> None:
    events, plan = _hand_case()
    audio = stereo(20.0, [])
    n = audio.shape[0] // FRAME_SAMPLES
    trace = CaseRunner(audio, frames(n)).run(Scripted(plan))
    s = peval.score_case(events, trace)
    assert s.confusion == [
        ("barge_in", "barge_in"), ("backchannel", "barge_in"), ("noise", "noise"), ("barge_in", "noise"),
        ("backchannel", "backchannel"), ("hold", "end_of_turn"), ("end_of_turn", "end_of_turn"),
        ("hold", "hold"), ("end_of_turn", "hold"),
    ]
    assert s.barge_latency == pytest.approx([0.216], abs=1e-6)
    assert s.eot_delay == pytest.approx([0.288], abs=1e-6)
    assert s.spurious_barge_ins == 1
    assert s.spurious_eots == 1

    m = peval.summarise([s], np.array([0.001, 0.003]))
    assert m["false_barge_in_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert m["false_barge_in_backchannel"] == 0.5
    assert m["false_barge_in_noise"] == 0.0
    assert m["missed_barge_in_rate"] == 0.5
    assert m["barge_in_latency_ms_p50"] == pytest.approx(216.0)
    assert m["eot_premature_rate"] == 0.5
    assert m["eot_missed_rate"] == 0.5
    assert m["eot_delay_ms_p50"] == pytest.approx(288.0)
    pc = m["per_class"]
    assert pc["barge_in"]["precision"] == 0.5 and pc["barge_in"]["recall"] == 0.5
    assert pc["backchannel"]["precision"] == 1.0 and pc["backchannel"]["recall"] == 0.5
    assert pc["backchannel"]["f1"] == pytest.approx(2 / 3, abs=1e-4)
    assert pc["noise"]["precision"] == 0.5 and pc["noise"]["recall"] == 1.0
    assert pc["hold"]["recall"] == 0.5 and pc["end_of_turn"]["recall"] == 0.5
    assert m["frame_cost_ms_mean"] == pytest.approx(2.0)


def test_barge_window_is_cut_at_the_next_event() -> None:
    """A barge-in right after a backchannel belongs to the next event, not the backchannel."""
    events = [LabelledEvent(1.0, 1.3, "backchannel"), LabelledEvent(1.5, 2.5, "barge_in")]
    audio = stereo(4.0, [])
    trace = CaseRunner(audio, frames(audio.shape[0] // FRAME_SAMPLES)).run(Scripted({1.6: Decision.BARGE_IN}))
    s = peval.score_case(events, trace)
    assert s.confusion == [("backchannel", "noise"), ("barge_in", "barge_in")]


def test_eval_cli_runs_rules_side_by_side_and_writes_json(tmp_path: Path) -> None:
    """The CLI on a real-recording case: a table and a JSON report with both policies."""
    import shutil

    for ext in ("wav", "tsv"):
        shutil.copy(DATA / f"turn_goforward_noecho.{ext}", tmp_path / f"case.{ext}")
    out = tmp_path / "report.json"
    rc = cli_main(["eval-policy", str(tmp_path), "--policy", "rules", "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["cases"] == 1
    rules = report["policies"]["rules"]
    assert rules["eot_missed_rate"] == 0.0
    # The rule waits 640 ms of silence; VAD offset lag adds a little.
    assert 600 <= rules["eot_delay_ms_p50"] <= 1000


def test_eval_cli_reports_a_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["eval-policy", str(tmp_path / "nope")]) == 2
    assert "cases directory not found" in capsys.readouterr().err


def test_smart_turn_features_match_whisper_shape() -> None:
    from policies.smart_turn import whisper_log_mel

    rng = np.random.default_rng(0)
    f = whisper_log_mel(rng.standard_normal(SAMPLE_RATE * 3).astype(np.float32) * 0.1)
    assert f.shape == (80, 800) and f.dtype == np.float32
    assert f.max() <= 1.5 + 1e-6 and f.max() - f.min() <= 2.0 + 1e-6  # 8 dB floor, (x + 4) / 4


def test_smart_turn_without_model_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib.util

    from policies import smart_turn

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(smart_turn, "CACHE_COPY", tmp_path / "missing.onnx")
    with pytest.raises(PolicyError, match="pip install --no-deps pipecat-ai"):
        smart_turn.SmartTurnPolicy()


def test_smart_turn_ends_a_finished_real_turn() -> None:
    from policies.smart_turn import find_model

    try:
        find_model()
    except PolicyError:
        pytest.skip("smart-turn model not installed")
    from policies.harness import load_case
    from policies.smart_turn import SmartTurnPolicy

    case = load_case(DATA / "turn_goforward_noecho.wav")
    runner = peval.runner_for(DATA / "turn_goforward_noecho.wav", case)
    s = peval.score_case(case.events, runner.run(SmartTurnPolicy()))
    assert s.confusion == [("end_of_turn", "end_of_turn")]
    assert s.eot_delay[0] < 1.0


def test_pause_then_decide_is_scored_as_what_the_user_hears() -> None:
    events = [
        LabelledEvent(1.0, 2.5, "barge_in"),  # paused at 0.2 s, committed at 0.6 s
        LabelledEvent(4.0, 4.4, "backchannel"),  # paused, then resumed: stopped, but kept the turn
        LabelledEvent(6.0, 6.4, "backchannel"),  # never paused
        LabelledEvent(8.0, 9.0, "barge_in"),  # paused and resumed: a missed barge-in
    ]
    plan = {1.2: Decision.PAUSE, 1.6: Decision.BARGE_IN, 4.2: Decision.PAUSE, 4.7: Decision.RESUME,
            8.3: Decision.PAUSE, 9.2: Decision.RESUME}
    audio = stereo(11.0, [(0.0, 10.9)])
    n = audio.shape[0] // FRAME_SAMPLES
    trace = CaseRunner(audio, frames(n)).run(Scripted(plan))
    s = peval.score_case(events, trace, source="03ami")
    assert s.source == "03ami"
    assert s.barge_latency == [pytest.approx(0.2, abs=0.02)], "the pause is the stop the user hears"
    assert s.commit_latency == [pytest.approx(0.6, abs=0.02)]
    assert s.stopped == [("barge_in", True), ("backchannel", True), ("backchannel", False), ("barge_in", True)]
    assert s.confusion[1] == ("backchannel", "backchannel"), "a resume counts as a backchannel"
    m = peval.summarise([s], np.zeros(0))
    assert m["backchannel_stop_or_pause_rate"] == 0.5
    assert m["backchannel_lost_turn_rate"] == 0.0
    assert m["missed_barge_in_rate"] == 0.5


def test_an_unresolved_pause_resolves_as_the_engine_does() -> None:
    audio = stereo(6.0, [(0.0, 5.9)])
    n = audio.shape[0] // FRAME_SAMPLES
    talking = set(range(int(1.0 / FRAME_S), int(4.0 / FRAME_S)))
    pol = Scripted({1.2: Decision.PAUSE})
    trace = CaseRunner(audio, frames(n, talking), pause_timeout_s=1.0).run(pol)
    commits = [t for t, d in zip(trace.t, trace.decisions, strict=True) if d is Decision.BARGE_IN]
    assert commits == [pytest.approx(2.22, abs=0.04)], "still talking at the timeout: the engine commits"
    assert any(x.agent_paused for x in pol.seen) and not pol.seen[int(3.0 / FRAME_S)].agent_paused
    quiet = CaseRunner(audio, frames(n, set(range(int(1.0 / FRAME_S), int(1.5 / FRAME_S)))), pause_timeout_s=1.0)
    trace = quiet.run(Scripted({1.2: Decision.PAUSE}))
    assert Decision.RESUME in trace.decisions and Decision.BARGE_IN not in trace.decisions


def test_eval_reports_per_source(tmp_path: Path) -> None:
    for name in ("02phone-barge1-echo", "07cmd-turn1-noecho"):
        src = DATA / ("barge_goforward_echo" if "barge" in name else "turn_goforward_noecho")
        (tmp_path / f"{name}.wav").write_bytes(src.with_suffix(".wav").read_bytes())
        (tmp_path / f"{name}.tsv").write_text(src.with_suffix(".tsv").read_text())
    report = peval.evaluate(peval.list_cases(tmp_path), {"rules": peval.make_named_policy("rules")}, progress=False)
    assert set(report["per_source"]) == {"02phone", "07cmd"}
    assert report["per_source"]["02phone"]["rules"]["counts"]["barge_in"] == 1
    assert report["per_source"]["07cmd"]["rules"]["counts"]["barge_in"] == 0
    assert "02phone" in peval.format_sources(report)


def test_operating_curve_trades_cutoffs_for_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(peval.OPERATING_POINTS, "rules", ("rules.end_of_turn_silence_ms", (100, 600, 1500)))
    curve = peval.eot_curve(peval.list_cases(DATA), "rules")
    delays = [c["eot_delay_ms_p50"] for c in curve["curve"]]
    assert curve["cases"] >= 2 and curve["knob"] == "rules.end_of_turn_silence_ms"
    assert delays[0] < delays[1] < delays[2], "a longer wait waits longer"
    assert delays[0] <= 300 and curve["false_cutoff_at_300ms"] == curve["curve"][0]["false_cutoff_rate"]
    ok = [c["eot_delay_ms_p50"] for c in curve["curve"] if c["false_cutoff_rate"] is not None and c["false_cutoff_rate"] <= 0.05]
    assert curve["delay_ms_at_5pct_false_cutoff"] == (min(ok) if ok else None)


def test_agent_backchannels_are_scored_by_where_they_fall() -> None:
    events = [LabelledEvent(1.0, 2.0, "hold"), LabelledEvent(3.0, 5.0, "end_of_turn")]
    plan = {1.5: Decision.BACKCHANNEL_OPPORTUNITY, 3.2: Decision.BACKCHANNEL_OPPORTUNITY,
            6.0: Decision.BACKCHANNEL_OPPORTUNITY}
    audio = stereo(7.0, [])
    n = audio.shape[0] // FRAME_SAMPLES
    s = peval.score_case(events, CaseRunner(audio, frames(n, set(range(5)))).run(Scripted(plan)))
    assert s.agent_backchannels == {"in_hold": 1, "at_turn_end": 1, "other": 1}
    m = peval.summarise([s], np.zeros(0))
    assert m["agent_backchannels"] == {"in_hold": 1, "at_turn_end": 1, "other": 1}
    assert m["agent_backchannels_per_user_min"] > 0

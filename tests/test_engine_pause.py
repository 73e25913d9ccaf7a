"""Pause, then decide (issue 12 §3) and the agent's own backchannels (§4), as timelines.

The user asks (0.0-1.2 s); the agent answers from ~1.47 s for ~2.9 s of audio (14 words
at 0.2 s); then something happens under it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.events import (
    AgentPaused,
    AgentResumed,
    AgentState,
    AgentTurnEnded,
    AudioPlayed,
    Backchannel,
    BackchannelCancelled,
    BargeIn,
    Decision,
    EndOfTurn,
    StateChanged,
)
from harness import (
    BACKCHANNEL_CLIP_S,
    DEFAULT_REPLY,
    FRAME_S,
    ScriptedPolicy,
    make_config,
    run_timeline,
    says,
)
from test_engine_timeline import ASK, played_reply_audio

PAUSE, RESUME, BARGE_IN = Decision.PAUSE, Decision.RESUME, Decision.BARGE_IN


def silent_between(run, turn: int, a: float, b: float) -> bool:
    return not [e for e in run.voiced(turn) if a <= e.t < b]


# --- pause, then resume ------------------------------------------------------------------


@pytest.fixture(scope="module")
def resumed():
    return run_timeline([ASK, says("mm hmm", 2.2, 2.5)], policy=ScriptedPolicy(at={2.3: PAUSE, 2.9: RESUME}))


def test_pause_silences_the_speaker_within_one_chunk(resumed):
    p = resumed.first(AgentPaused, turn=1)
    assert abs(p.t - 2.304) < 1e-6 and abs(p.onset - 2.2) <= FRAME_S
    assert [e for e in resumed.of(AudioPlayed, turn=1) if p.t - 1e-9 <= e.t < p.t + FRAME_S and e.n_samples]== []
    r = resumed.first(AgentResumed, turn=1)
    assert silent_between(resumed, 1, p.t, r.t)
    assert r.paused_for == pytest.approx(r.t - p.t) and not r.timeout


def test_resume_plays_on_from_the_same_sample(resumed):
    """Nothing skipped, nothing repeated: the speaker's voiced samples are exactly the TTS output."""
    synthesised = np.concatenate([a for _, a in resumed.fake_tts.rendered])
    assert np.array_equal(played_reply_audio(resumed, 1), synthesised)
    ended = resumed.first(AgentTurnEnded, turn=1)
    assert not ended.interrupted and ended.heard == DEFAULT_REPLY
    assert resumed.engine.history.turns[-1].text == DEFAULT_REPLY
    # The reply ends later by exactly the pause (to the frame), not earlier.
    unpaused = run_timeline([ASK, says("mm hmm", 2.2, 2.5)], policy=ScriptedPolicy())
    late = resumed.first(AgentTurnEnded).t - unpaused.first(AgentTurnEnded).t
    assert late == pytest.approx(resumed.first(AgentResumed).paused_for, abs=1e-6)


def test_a_backchannel_never_costs_the_turn(resumed):
    assert not resumed.of(BargeIn)
    assert resumed.stats.turns == 1 and resumed.stats.barge_ins == 0
    assert len(resumed.fake_llm.calls) == 1, "the reply was redone"


def test_the_policy_and_the_ui_see_the_pause(resumed):
    p, r = resumed.first(AgentPaused), resumed.first(AgentResumed)
    flags = [(x.t, x.agent_paused, x.agent_speaking) for x in resumed.policy.inputs]
    assert all(paused == (p.t < t <= r.t) for t, paused, _ in flags)
    assert all(speaking for t, paused, speaking in flags if paused)
    states = [(e.t, e.state) for e in resumed.of(StateChanged)]
    assert (p.t, AgentState.PAUSED) in states
    after = [s for t, s in states if t > p.t]
    assert after[0] is AgentState.SPEAKING or after[0] is AgentState.OVERLAP


def test_pause_and_resume_are_replayed_decisions(resumed):
    assert AgentPaused.DECISION and AgentResumed.DECISION
    again = run_timeline([ASK, says("mm hmm", 2.2, 2.5)], policy=ScriptedPolicy(at={2.3: PAUSE, 2.9: RESUME}))
    keys = [e.decision_key() for e in resumed.events if e.DECISION]
    assert keys == [e.decision_key() for e in again.events if e.DECISION]
    assert any('"type":"agent_paused"' in k for k in keys) and any('"type":"agent_resumed"' in k for k in keys)


def test_backchannel_while_paused_resumes():
    run = run_timeline([ASK, says("mm hmm", 2.2, 2.5)],
                       policy=ScriptedPolicy(at={2.3: PAUSE, 2.7: Decision.BACKCHANNEL}))
    assert run.first(AgentResumed).t == pytest.approx(2.720)
    assert run.first(Backchannel, who="user")
    assert run.first(AgentTurnEnded).heard == DEFAULT_REPLY


# --- pause, then commit -------------------------------------------------------------------


def test_barge_in_after_a_pause_keeps_only_what_was_heard():
    run = run_timeline([ASK, says("wait stop what about mars", 2.2, 3.2)],
                       policy=ScriptedPolicy(at={2.3: PAUSE, 2.6: BARGE_IN}))
    p, b = run.first(AgentPaused), run.first(BargeIn)
    assert b.was_paused and b.t == pytest.approx(2.624) and not run.of(AgentResumed)
    assert [e for e in run.voiced(1) if e.t >= p.t] == []
    heard_before_pause = " ".join(e.text for e in run.voiced(1) if e.t < p.t and e.text).split()
    ended = run.first(AgentTurnEnded, turn=1)
    assert ended.interrupted and ended.heard.split() == heard_before_pause and heard_before_pause
    assert run.engine.history.turns[1].text == ended.heard and run.engine.history.turns[1].interrupted
    assert "mars" in run.of(EndOfTurn)[1].text
    assert not run.engine.player.paused


def test_direct_barge_in_is_not_after_a_pause():
    run = run_timeline([ASK, says("wait stop", 2.2, 3.0)], policy=ScriptedPolicy(at={2.4: BARGE_IN}))
    assert not run.first(BargeIn).was_paused and not run.of(AgentPaused)


# --- a pause nobody resolves ----------------------------------------------------------------


@pytest.mark.parametrize("timeout", [1.5, 0.5])
def test_an_unresolved_pause_resumes_when_the_user_is_silent(timeout):
    cfg = make_config({"engine": {"pause_timeout_s": timeout}})
    run = run_timeline([ASK, says("mm", 2.2, 2.4)], cfg=cfg, policy=ScriptedPolicy(at={2.3: PAUSE}))
    p, r = run.first(AgentPaused), run.first(AgentResumed)
    assert r.timeout and r.paused_for == pytest.approx(timeout, abs=FRAME_S)
    assert r.t - p.t >= timeout - 1e-6
    assert not run.of(BargeIn) and run.first(AgentTurnEnded).heard == DEFAULT_REPLY


def test_an_unresolved_pause_commits_when_the_user_keeps_talking():
    run = run_timeline([ASK, says("no no listen to me I want to know about mars", 2.2, 4.5)],
                       policy=ScriptedPolicy(at={2.3: PAUSE}))
    p, b = run.first(AgentPaused), run.first(BargeIn)
    assert b.was_paused and b.t - p.t == pytest.approx(1.5, abs=FRAME_S)
    assert run.first(AgentTurnEnded, turn=1).interrupted
    assert "mars" in run.of(EndOfTurn)[1].text


def test_pause_timeout_has_a_range():
    from duplex.errors import ConfigError

    with pytest.raises(ConfigError):
        make_config({"engine": {"pause_timeout_s": 0.0}})


# --- policies that never pause ------------------------------------------------------------


def test_rules_policy_runs_unchanged_on_the_harness():
    from policies import make_policy

    run = run_timeline([ASK, says("okay", 2.4, 2.7)], policy=make_policy(make_config().policy))
    assert not run.of(AgentPaused) and not run.of(AgentResumed)
    assert run.first(EndOfTurn).text == "tell me about the moon"
    assert not run.first(AgentTurnEnded, turn=1).interrupted


# --- the agent's own backchannels (issue 12 §4) ---------------------------------------------


def opportunity(x):
    """A backchannel opportunity on every frame of the user's turn, speech included (the
    engine must filter), until the silence rule's end of turn (0.8 s)."""
    return Decision.BACKCHANNEL_OPPORTUNITY if x.user_turn_open and x.silence < 0.8 else None


def clip_chunks(run) -> list[int]:
    """Ticks whose played chunk holds the agent's mm-hmm (level 0.05; reply audio is >= 0.1)."""
    return [i for i, c in enumerate(run.sink.chunks) if np.any(np.isclose(c, 0.05))]


def overlaps_user(run, i: int) -> bool:
    a, b = i * FRAME_S, (i + 1) * FRAME_S
    return any(s.start < b and a < s.end for s in run.script)


LONG_TURN = [says("so I was thinking about the trip", 0.0, 2.0), says("and then we could go north", 2.7, 4.2)]


def test_agent_backchannel_plays_in_a_pause_never_over_the_user():
    run = run_timeline(LONG_TURN, policy=ScriptedPolicy(rule=opportunity, eot_silence_s=0.8))
    bc = run.first(Backchannel, who="agent")
    assert 2.0 + 0.096 <= bc.t <= 2.0 + 0.096 + 2 * FRAME_S
    ticks = clip_chunks(run)
    assert len(ticks) == math.ceil(round(BACKCHANNEL_CLIP_S * SAMPLE_RATE) / FRAME_SAMPLES)
    assert not [i for i in ticks if overlaps_user(run, i)]
    assert run.stats.agent_backchannels == 1, "rate limit: one per agent_backchannel_min_gap_s"
    assert not run.of(BackchannelCancelled)
    assert run.first(EndOfTurn).text == "so I was thinking about the trip and then we could go north"


@pytest.mark.parametrize(("gap", "expected"), [(1.0, [2.112, 4.32, 6.112]), (2.5, [2.112, 4.64])])
def test_agent_backchannel_is_rate_limited(gap, expected):
    cfg = make_config({"policy": {"predictor": {"agent_backchannel_min_gap_s": gap}}})
    turn = LONG_TURN + [says("and stay a week", 5.0, 6.0)]
    run = run_timeline(turn, cfg=cfg, policy=ScriptedPolicy(rule=opportunity, eot_silence_s=0.8))
    # One per pause (96 ms into it), or as soon as ``gap`` has passed if still in the pause.
    assert [e.t for e in run.of(Backchannel, who="agent")] == pytest.approx(expected)


def test_agent_backchannel_is_cut_when_the_user_speaks_again_within_it():
    turn = [says("so I was thinking about the trip", 0.0, 2.0), says("and then we could go north", 2.25, 3.5)]
    run = run_timeline(turn, policy=ScriptedPolicy(rule=opportunity, eot_silence_s=0.8))
    bc = run.first(Backchannel, who="agent")
    cut = run.first(BackchannelCancelled)
    assert cut.onset == bc.t and 2.25 <= cut.t <= 2.25 + 2 * FRAME_S
    ticks = clip_chunks(run)
    assert 0 < len(ticks) < BACKCHANNEL_CLIP_S / FRAME_S
    # The chunk already on its way when the user spoke is the only one over their words.
    assert len([i for i in ticks if overlaps_user(run, i)]) <= 1
    assert max(ticks) * FRAME_S < cut.t


def test_no_agent_backchannel_while_the_agent_speaks():
    run = run_timeline([ASK, says("and more", 2.4, 2.8)], policy=ScriptedPolicy(rule=opportunity))
    started = run.first(EndOfTurn).t
    assert run.stats.turns == 1
    assert [e.t for e in run.of(Backchannel, who="agent") if e.t >= started] == []


def test_new_events_round_trip_through_a_recording():
    """The recorder writes events as JSON lines and replay reads them back to compare."""
    import json

    from duplex.events import event_from_dict

    run = run_timeline([ASK, says("mm hmm", 2.2, 2.5), says("wait stop", 3.0, 4.0)],
                       policy=ScriptedPolicy(at={2.3: PAUSE, 2.9: RESUME, 3.1: PAUSE, 3.5: BARGE_IN}))
    new = [e for e in run.events if isinstance(e, (AgentPaused, AgentResumed, BargeIn))]
    assert [e.type for e in new] == ["agent_paused", "agent_resumed", "agent_paused", "barge_in"]
    for e in new:
        back = event_from_dict(json.loads(e.to_json()))
        assert type(back) is type(e) and back.decision_key() == e.decision_key()
    assert BackchannelCancelled.DECISION
    cut = BackchannelCancelled(1.0, onset=0.5)
    assert event_from_dict(json.loads(cut.to_json())) == cut


def test_a_stop_after_a_let_pass_sound_in_the_same_run_counts_from_the_runs_onset():
    # The policy lets the start pass as a backchannel ("well"), then stops the agent on
    # what follows without a gap: the reaction is from when the user began talking.
    run = run_timeline([ASK, says("well wait what about mars then", 2.2, 3.6)],
                       policy=ScriptedPolicy(at={2.5: Decision.BACKCHANNEL, 3.0: PAUSE, 3.2: BARGE_IN}))
    p, b = run.first(AgentPaused), run.first(BargeIn)
    assert abs(p.onset - 2.2) <= 2 * FRAME_S and p.reaction == pytest.approx(p.t - p.onset) and p.reaction > 0.6
    assert b.onset == p.onset and b.reaction > 0.8

"""Scenarios: the file format, the simulated user's triggers, the checks, and the library.

The library (tests/scenarios/) runs whole in the slow set; a few of its cases run by
default, through the pytest fixtures users get from ``duplex.session.pytest_plugin``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.cli import build_parser
from duplex.config import load_config
from duplex.errors import ScenarioError
from duplex.events import (
    AgentState,
    AgentStopped,
    AgentTurnStarted,
    AudioPlayed,
    Backchannel,
    BargeIn,
    EndOfTurn,
    StateChanged,
)
from duplex.session.pytest_plugin import (  # noqa: F401 - fixtures used by name below
    assert_scenario,
    run_scenario,
    scenario_result,
    scenario_runner,
)
from duplex.session.scenario import evaluate, find_scenarios, load_scenario, parse_scenario
from duplex.simuser import Span

LIBRARY = Path(__file__).resolve().parent / "scenarios"
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE


@pytest.fixture(scope="session")
def duplex_config(cfg):
    return cfg


@pytest.fixture(scope="session")
def duplex_models(models):
    return models


# --- the format -----------------------------------------------------------------------------

OK = {"agent_says": "Hello. Bye.", "say": [{"text": "mm-hmm", "after_agent_speech": 1.0, "expect": "keeps_talking"}]}


@pytest.mark.parametrize(("patch", "message"), [
    ({"colour": "red"}, "unknown key(s) colour"),
    ({"say": []}, "at least one [[say]]"),
    ({"say": [{"text": "hi", "at": 1, "expect": "dances"}]}, "unknown expectation 'dances'"),
    ({"say": [{"text": "hi", "at": 1, "expect": "waits", "stop_within_ms": 300}]}, "stop_within_ms goes with"),
    ({"say": [{"text": "hi", "at": 1, "after_previous": 2}]}, "exactly one of"),
    ({"say": [{"noise": "trumpet", "at": 1}]}, "unknown noise 'trumpet'"),
    ({"say": [{"text": "hi", "at": 1, "clip": [0, 1]}]}, "clip goes with sound only"),
    ({"say": [{"text": "hi", "after_agent_sentence": 1.5}]}, "whole number"),
    ({"say": [{"text": "hi", "at": 1, "offset": 0.5}]}, "offset goes with after_agent_sentence"),
    ({"config": {"llm": {"max_tokens": 5}}}, "may set only policy, engine, vad"),
    ({"expect": {"barge_ins": -1}}, "whole number"),
    ({"known_failure": {"rules": 3}}, "maps a policy name to a reason"),
    ({"echo_db": "loud"}, "echo_db must be a number"),
])
def test_invalid_scenarios_say_what_to_fix(patch, message):
    with pytest.raises(ScenarioError, match=None) as exc:
        parse_scenario({**OK, **patch}, "x.toml")
    assert message in str(exc.value) and str(exc.value).startswith("x.toml")


def test_scenario_files_and_directories(tmp_path):
    with pytest.raises(ScenarioError, match="no scenario files"):
        find_scenarios(tmp_path)
    (tmp_path / "bad.toml").write_text("name = [", encoding="utf-8")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(tmp_path / "bad.toml")


def test_the_library_covers_what_it_should():
    scenarios = [load_scenario(p) for p in find_scenarios(LIBRARY)]
    assert len(scenarios) >= 20
    assert len({s.name for s in scenarios}) == len(scenarios)
    tags = {t for s in scenarios for t in s.tags}
    assert {"backchannel", "barge-in", "backchannel-like", "noise", "echo", "pause", "overlap", "talk-over",
            "recording", "espeak"} <= tags
    assert len({s.lines[0].utterance.text for s in scenarios if "backchannel" in s.tags and s.lines[0].utterance.text}) >= 5
    first_word = [s for s in scenarios if any(ln.utterance.trigger == "after_agent_speech" and ln.utterance.value <= 0.2
                                              for ln in s.lines)]
    assert first_word, "an interruption during the agent's first word"
    for s in scenarios:
        assert s.description and any(ln.expects for ln in s.lines) or s.counts, s.name
        for reason in s.known_failures.values():
            assert len(reason) > 20, f"{s.name}: say why it fails"


# --- the simulated user's triggers ------------------------------------------------------------


def _user(script: dict):
    from duplex.simuser import SimulatedUser, UserVoice, parse_script

    voice, utts = parse_script(script)
    return SimulatedUser(utts, UserVoice("espeak:en-us", None), tail_s=0.1, max_wait_s=5.0)


def _drive(user, agent_events: dict[int, list]) -> None:
    """Pull frames as the engine would, delivering each frame's agent events after it."""

    async def go() -> None:
        i = 0
        async for _ in user.frames():
            for ev in agent_events.get(i, []):
                user._on_event(ev)
            i += 1

    asyncio.run(go())


def _speech(turn: int, first: int, words_by_frame: dict[int, str], n: int) -> dict[int, list]:
    """The agent playing ``n`` frames of turn ``turn`` from frame ``first``."""
    return {first + k: [AudioPlayed((first + k) * FRAME_S, turn=turn, n_samples=FRAME_SAMPLES,
                                    text=words_by_frame.get(k, ""))] for k in range(n)}


def test_after_agent_sentence_fires_offset_seconds_into_that_sentence():
    user = _user({"say": [{"noise": "clap", "after_agent_sentence": 2, "offset": 0.5}]})
    # The first sentence ends with "away." at the agent's 10th frame.
    _drive(user, _speech(1, 5, {3: "The moon", 9: "is far away.", 12: "Its"}, 60))
    start = user.spans[0].start
    sentence_two = (5 + 10) * FRAME_S  # the frame after "away." was played
    assert start == pytest.approx(sentence_two + 0.5 + FRAME_S, abs=FRAME_S)


def test_with_agent_start_and_after_end_of_turn():
    user = _user({"say": [{"noise": "clap", "at": 0.0}, {"noise": "knock", "with_agent_start": 0.0}]})
    _drive(user, _speech(1, 40, {}, 60))
    assert user.spans[1].start == pytest.approx(41 * FRAME_S)  # the frame after the first agent audio
    user = _user({"say": [{"noise": "clap", "at": 0.0}, {"noise": "knock", "after_end_of_turn": 0.0}]})
    _drive(user, {30: [EndOfTurn(31 * FRAME_S, turn=1, delay=0.64, text="x")]})
    assert user.spans[1].start == pytest.approx(31 * FRAME_S)


def test_clips_of_recordings_and_builtin_noises(tmp_path):
    from duplex.simuser import UserVoice, parse_utterance, render_utterance, synth_noise

    voice = UserVoice("espeak:en-us", None)
    u = parse_utterance({"sound": "jfk.wav", "clip": [2.0, 2.5], "at": 0}, "t")
    clip = render_utterance(u, voice, LIBRARY / "sounds")
    assert len(clip) == SAMPLE_RATE // 2
    assert np.array_equal(synth_noise("cough"), synth_noise("cough"))  # the same every time
    assert 0.3 < len(synth_noise("cough")) / SAMPLE_RATE < 1.0


def test_echo_filter_adds_a_delayed_attenuated_copy_of_playback():
    from duplex.session.echo import EchoFilter

    f = EchoFilter(-20.0, 40.0)  # 640 samples: more than one frame
    played = [np.full(FRAME_SAMPLES, 0.5 * (k + 1), np.float32) for k in range(4)]
    out = np.concatenate([f(np.zeros(FRAME_SAMPLES, np.float32), p) for p in played])
    want = 0.1 * np.concatenate([np.zeros(640, np.float32), *played])[: 4 * FRAME_SAMPLES]
    assert np.allclose(out, want, atol=1e-6)


# --- the checks --------------------------------------------------------------------------------


def _scn(expects, **kw):
    line = {"text": "x", "at": 0.0, "expect": expects, **kw}
    return parse_scenario({"agent_says": "A. B.", "say": [line]})


SPEAKING = [StateChanged(0.032, state=AgentState.SPEAKING)]


def test_checks_on_a_barge_in():
    span = [Span(0, 1.0, 1.8, "x")]
    events = [*SPEAKING, BargeIn(1.5, turn=1, onset=1.05, reaction=0.45, text="wait"), AgentStopped(1.532, turn=1, latency=0.48),
              EndOfTurn(2.5, turn=2, delay=0.7, text="wait stop"), AgentTurnStarted(2.5, turn=2, prompt="wait stop")]
    ok = evaluate(_scn(["stops", "waits", "responds"], stop_within_ms=600, respond_within_ms=800), span, events, 4.0)
    assert [c.passed for c in ok] == [True, True, True]
    assert ok[0].value_ms == pytest.approx(532) and ok[2].value_ms == pytest.approx(700)
    tight = evaluate(_scn("stops", stop_within_ms=300), span, events, 4.0)
    assert not tight[0].passed and "limit 300 ms" in tight[0].detail
    kept = evaluate(_scn("keeps_talking"), span, events, 4.0)
    assert not kept[0].passed and "barge-in" in kept[0].detail


def test_checks_on_a_backchannel_and_a_premature_end_of_turn():
    span = [Span(0, 1.0, 1.4, "x")]
    bc = [*SPEAKING, Backchannel(1.6, who="user", text="yeah", onset=1.05)]
    assert all(c.passed for c in evaluate(_scn(["keeps_talking", "backchannel"]), span, bc, 4.0))
    assert not evaluate(_scn("keeps_talking"), span, [], 4.0)[0].passed  # the agent was not speaking
    early = [EndOfTurn(1.2, turn=1, delay=0.64, text="x"), AgentTurnStarted(1.2, turn=1, prompt="x")]
    waits, ignored = evaluate(_scn(["waits", "ignored"]), span, early, 4.0)
    assert not waits.passed and "before the user finished" in waits.detail
    assert not ignored.passed and "replied" in ignored.detail
    never = evaluate(_scn("stops"), [], [], 4.0)
    assert not never[0].passed and "never fired" in never[0].detail


# --- on the real models ------------------------------------------------------------------------


@pytest.mark.scenario("scenarios/bargein_wait_stop.toml")
def test_the_scenario_marker(scenario_result):
    assert_scenario(scenario_result)
    assert scenario_result.policy == "rules"
    stop = next(c for c in scenario_result.checks if c.what.endswith("stops"))
    assert stop.value_ms is not None and stop.value_ms <= 800


@pytest.mark.scenario
def test_an_inline_scenario(run_scenario):
    result = run_scenario({
        "name": "inline-backchannel",
        "agent_says": "The next train leaves at ten past nine. It takes about four hours.",
        "say": [{"text": "Yeah.", "after_agent_speech": 1.0, "expect": "keeps_talking"}],
        "expect": {"barge_ins": 0},
        "tail_s": 1.0,
    })
    assert_scenario(result)


@pytest.mark.scenario
def test_a_pause_inside_the_user_sentence(run_scenario):
    assert_scenario(run_scenario(LIBRARY / "pause_500ms.toml"))


@pytest.mark.scenario
def test_test_scenarios_fails_on_a_broken_policy(models, capsys, tmp_path):
    from duplex.commands.scenarios import run as scenarios_main

    broken = ["--policy", "rules", "--set", "policy.rules.barge_in_min_speech_ms=100000",
              "--set", "policy.rules.backchannel_max_ms=100000", "--set", "policy.rules.stop_word_min_ms=100000"]
    args = build_parser().parse_args(["test-scenarios", str(LIBRARY), "--only", "bargein-wait-stop",
                                      "--json", str(tmp_path / "r.json"), *broken])
    assert scenarios_main(args, models) == 1
    out = capsys.readouterr().out
    assert "FAIL   bargein-wait-stop" in out and "no barge-in" in out and "1 failed" in out


SHIPPED_POLICY = load_config().policy.name
"""The library is judged against the policy the default profile ships (the tests' own
``cfg`` pins the rule policy for mechanics); ``duplex test-scenarios tests/scenarios
--policy rules`` runs it against the baseline."""


@pytest.mark.slow
@pytest.mark.scenario
@pytest.mark.parametrize("path", find_scenarios(LIBRARY), ids=lambda p: p.stem)
def test_library(path, run_scenario):
    """Every case passes with the shipped policy, or fails the way its file says (xfail)."""
    assert_scenario(run_scenario(path, policy=SHIPPED_POLICY))

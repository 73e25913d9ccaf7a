"""The engine on the real packaged models, driven by a scripted user on the simulated clock."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace

import pytest

from duplex.app import run_conversation
from duplex.events import (
    AgentStopped,
    AgentTurnEnded,
    AudioPlayed,
    Backchannel,
    BargeIn,
    EndOfTurn,
    LLMToken,
    TurnLatency,
)
from duplex.simuser import SimulatedUser, UserVoice, parse_script


def run_script(cfg, models, script: dict, **kw):
    # These tests are about the engine's mechanics, so they use the rule policy, whose
    # decisions on these clips are known; the predictor has its own tests.
    cfg = replace(cfg, policy=replace(cfg.policy, name="rules"))
    voice, utts = parse_script(script)
    user = SimulatedUser(utts, UserVoice(voice, models.tts))
    return asyncio.run(run_conversation(cfg, models, user, **kw))


BARGE_IN = {
    "say": [
        {"text": "Hello. Can you tell me something about the moon?", "at": 0.3},
        {"text": "Wait, stop. What about Mars?", "after_agent_speech": 1.0},
    ]
}


@pytest.fixture(scope="module")
def barge_run(cfg, models):
    return run_script(cfg, models, BARGE_IN)


def of(events, cls, **match):
    return [e for e in events if isinstance(e, cls) and all(getattr(e, k) == v for k, v in match.items())]


def test_barge_in_stops_playback_within_one_chunk(barge_run):
    ev = barge_run.events
    barges = of(ev, BargeIn, turn=1)
    assert len(barges) == 1, [e.type for e in ev if e.DECISION]
    b = barges[0]
    late = [e for e in of(ev, AudioPlayed, turn=1) if e.t >= b.t and e.n_samples > 0]
    assert late == [], "audio of the cancelled reply was played after the barge-in"
    stopped = of(ev, AgentStopped, turn=1)
    assert len(stopped) == 1
    assert stopped[0].latency <= b.reaction + 0.033  # silent at the very next chunk


def test_history_holds_exactly_the_heard_words(barge_run):
    ev = barge_run.events
    played_words = " ".join(e.text for e in of(ev, AudioPlayed, turn=1) if e.text).split()
    ended = of(ev, AgentTurnEnded, turn=1)[0]
    assert ended.interrupted
    assert ended.heard.split() == played_words
    assert played_words, "the agent said nothing before the barge-in"
    gen = ended.generated.split()
    assert len(gen) > len(played_words), "nothing was cut"
    assert gen[: len(played_words)] == played_words


def test_llm_stream_really_stops_after_barge_in(barge_run):
    ev = barge_run.events
    b = of(ev, BargeIn, turn=1)[0]
    after = [e for e in of(ev, LLMToken, turn=1) if e.t > b.t]
    assert len(after) <= 1


def test_next_reply_follows_the_interruption(barge_run):
    ev = barge_run.events
    eots = of(ev, EndOfTurn)
    assert len(eots) >= 2 and "mars" in eots[1].text.lower()
    lat = of(ev, TurnLatency)
    assert lat and all(x.voice_to_voice is not None and x.voice_to_voice > 0 for x in lat)


def test_llm_cancel_direct(models):
    cancel = threading.Event()
    before = models.llm.tokens_generated
    pieces = []
    for piece in models.llm.stream([{"role": "user", "content": "Count from one to fifty."}], cancel):
        pieces.append(piece)
        if len(pieces) == 3:
            cancel.set()
    assert len(pieces) <= 4
    assert models.llm.tokens_generated - before <= 4


def test_a_cancelled_reply_leaves_the_llm_cache_as_if_cancelled_anywhere_else(models):
    """How far a reply got before its cancel depends on compute speed; the KV cache the
    next reply starts from, and so the next reply itself, must not."""
    system = {"role": "system", "content": "Answer in one short sentence."}
    first = [system, {"role": "user", "content": "Tell me about the moon."}]

    def after_cancel_at(n: int) -> tuple[int, str]:
        cancel = threading.Event()
        heard = []
        for piece in models.llm.stream(first, cancel):
            heard.append(piece)
            if len(heard) == n:
                cancel.set()
        cached = models.llm._llm.n_tokens
        second = first + [{"role": "assistant", "content": "".join(heard[:2]).strip() + "..."},
                          {"role": "user", "content": "And Mars?"}]
        return cached, "".join(models.llm.stream(second, threading.Event()))

    early, late = after_cancel_at(3), after_cancel_at(12)
    assert early[0] == late[0]
    assert early[1] == late[1] and early[1].strip()


def test_a_second_stream_waits_for_the_first_to_let_go_of_the_model(models):
    """An engine does not wait for a cancelled reply's thread at shutdown, so the next
    conversation's first reply can start while it finishes its token: the in-process
    model serves one stream at a time (two at once corrupted llama.cpp's cache)."""
    msgs = [{"role": "user", "content": "Count from one to twenty."}]
    times: dict[str, list[float]] = {"a": [], "b": []}
    a_started = threading.Event()

    def consume(name: str, n: int) -> None:
        cancel = threading.Event()
        for _ in models.llm.stream(msgs, cancel):
            times[name].append(time.monotonic())
            a_started.set()
            if len(times[name]) == n:
                cancel.set()

    a = threading.Thread(target=consume, args=("a", 8))
    a.start()
    assert a_started.wait(60)
    b = threading.Thread(target=consume, args=("b", 3))
    b.start()
    a.join(120)
    b.join(120)
    assert len(times["a"]) == 8 and len(times["b"]) == 3
    assert times["b"][0] > times["a"][-1]


def test_backchannel_does_not_cancel_the_reply(cfg, models):
    run = run_script(cfg, models, {
        "say": [
            {"text": "Hello. Can you tell me something about the moon?", "at": 0.3},
            {"text": "okay", "after_agent_speech": 1.0},
        ]
    })
    ev = run.events
    assert of(ev, Backchannel, who="user"), [e.type for e in ev if e.DECISION]
    assert not of(ev, BargeIn)
    ended = of(ev, AgentTurnEnded, turn=1)[0]
    assert not ended.interrupted
    assert ended.heard.split() == " ".join(e.text for e in of(ev, AudioPlayed, turn=1) if e.text).split()


def test_lockstep_runs_are_deterministic(cfg, models, barge_run):
    again = run_script(cfg, models, BARGE_IN)
    a = [e.decision_key() for e in barge_run.events if e.DECISION]
    b = [e.decision_key() for e in again.events if e.DECISION]
    assert a == b

"""The engine as timelines, on scripted stages (tests/harness.py): no weights, milliseconds."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from duplex.events import (
    AgentStopped,
    AgentTurnEnded,
    AgentTurnStarted,
    BargeIn,
    Decision,
    EndOfTurn,
    StateChanged,
)
from duplex.history import INTERRUPTED_MARK
from harness import (
    DEFAULT_REPLY,
    FRAME_S,
    FakeASR,
    FakeLLM,
    ScriptedPolicy,
    arun_timeline,
    make_models,
    run_timeline,
    says,
)

ASK = says("tell me about the moon", 0.0, 1.2)


def played_reply_audio(run, turn: int) -> np.ndarray:
    """Every voiced sample the speaker played for ``turn``, in order (reply audio is never 0)."""
    out = []
    for e in run.voiced(turn):
        i = round(e.t / FRAME_S)
        out.append(run.sink.chunks[i][: e.n_samples])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def test_user_speaks_then_the_agent_answers_on_time():
    t0 = time.perf_counter()
    run = run_timeline([ASK])
    wall = time.perf_counter() - t0
    eot = run.first(EndOfTurn)
    assert eot.text == "tell me about the moon"
    # Hangover (192 ms) then the scripted rule's 250 ms of silence, to the frame.
    assert 1.2 + 0.25 <= eot.t <= 1.2 + 0.25 + 2 * FRAME_S, eot.t
    first_audio = run.voiced(1)[0]
    assert first_audio.t <= eot.t + FRAME_S + 1e-9, "the speculative reply was not ready at end of turn"
    ended = run.first(AgentTurnEnded, turn=1)
    assert not ended.interrupted
    assert ended.heard == ended.generated == DEFAULT_REPLY
    assert [t.role for t in run.engine.history.turns] == ["user", "assistant"]
    # Every synthesised sample reached the speaker once, in order.
    synthesised = np.concatenate([a for _, a in run.fake_tts.rendered])
    assert np.array_equal(played_reply_audio(run, 1), synthesised)
    assert wall < 3.0, f"a 2 s timeline took {wall:.2f} s"


def test_barge_in_cancels_and_history_keeps_what_was_heard():
    def barge(x):
        return Decision.BARGE_IN if x.agent_speaking and x.speech_run >= 0.2 else None

    run = run_timeline([ASK, says("wait stop what about mars", 2.5, 3.5)], policy=ScriptedPolicy(rule=barge))
    b = run.first(BargeIn, turn=1)
    assert 2.5 + 0.2 <= b.t <= 2.5 + 0.2 + 0.1 + 2 * FRAME_S
    assert not b.was_paused
    assert [e for e in run.voiced(1) if e.t >= b.t] == []
    assert run.first(AgentStopped, turn=1).latency <= b.reaction + FRAME_S + 1e-9
    played = " ".join(e.text for e in run.voiced(1) if e.text).split()
    ended = run.first(AgentTurnEnded, turn=1)
    assert ended.interrupted and played and ended.heard.split() == played
    assert DEFAULT_REPLY.split()[: len(played)] == played and len(played) < len(DEFAULT_REPLY.split())
    assert "mars" in run.of(EndOfTurn)[1].text
    agent = [t for t in run.engine.history.turns if t.role == "assistant"][0]
    assert agent.interrupted and agent.text == ended.heard
    second_prompt = run.fake_llm.calls[-1]
    assert any(m["content"] == ended.heard + INTERRUPTED_MARK for m in second_prompt)


def test_states_follow_the_timeline():
    run = run_timeline([ASK])
    states = [e.state.value for e in run.of(StateChanged)]
    assert states[:3] == ["thinking", "speaking", "listening"] or states[:2] == ["speaking", "listening"], states
    assert run.first(AgentTurnStarted).t == run.first(EndOfTurn).t


# --- nothing heavy on the event loop ------------------------------------------------------

SLOW_POLICY_S = 0.020
"""Per frame: smart-turn's ONNX costs 10-65 ms on this class of machine."""
SLOW_FINAL_S = 0.150
"""The final ASR decode when the policy ends the turn inside the VAD hangover."""


async def loop_lateness_while(coro) -> tuple[object, list[float]]:
    """Run ``coro`` beside a 5 ms heartbeat; returns its result and how late each beat woke."""
    loop = asyncio.get_running_loop()
    lates: list[float] = []
    done = asyncio.Event()

    async def heartbeat() -> None:
        while not done.is_set():
            t0 = loop.time()
            await asyncio.sleep(0.005)
            lates.append(loop.time() - t0 - 0.005)

    beat = asyncio.create_task(heartbeat())
    try:
        result = await coro
    finally:
        done.set()
        await beat
    return result, lates


def test_a_slow_policy_and_final_asr_do_not_block_the_loop():
    script = [says("tell me about the moon", 0.0, 0.6)]

    def end_in_hangover(x):  # forces listener.close_utterance(), the final decode
        return Decision.END_OF_TURN if x.user_turn_open and x.user_speaking and x.silence >= 0.1 else None

    policy = ScriptedPolicy(rule=end_in_hangover, step_delay_s=SLOW_POLICY_S)
    asr = FakeASR(script, finish_delay_s=SLOW_FINAL_S)
    models = make_models(script, asr=asr, llm=FakeLLM(["Yes."]))
    run, lates = asyncio.run(loop_lateness_while(
        arun_timeline(script, policy=policy, models=models, duration=1.0, realtime=True)))
    assert run.first(EndOfTurn).text == "tell me about the moon"
    assert asr.finishes == 1, "the turn did not end inside the hangover"
    assert "MainThread" not in policy.threads and policy.threads, policy.threads
    lates.sort()
    assert len(lates) > 50
    assert lates[-1] < FRAME_S, f"loop woke {lates[-1] * 1000:.1f} ms late (p50 {lates[len(lates) // 2] * 1000:.2f} ms)"

"""The engine on open speakers: with echo cancellation on, the agent does not stop itself.

An agent-only session (the agent reads a reply, nobody else speaks) in a reverberant
living room whose echo is 6 dB louder than a user would be. The microphone the engine
heard is recorded through a tap; replayed through the rule policy without cancellation
it barges in on the echo (so the scene is a real test), while the engine with the
canceller plays its reply to the end.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from duplex.app import run_conversation
from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.audio.aec import available_backends, make_aec
from duplex.audio.room import RoomSimulator
from duplex.audio.source import ArraySource
from duplex.config import replace
from duplex.events import AgentTurnEnded, BargeIn, Decision, EchoDelay
from duplex.turn import PolicyInput
from policies.rules import RulePolicy

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif("webrtc" not in available_backends(), reason="pywebrtc-audio not installed")]

TEXT = ("The tallest mountain in Europe is Mount Elbrus, in the Caucasus. It is a dormant volcano with two "
        "summits. Climbers usually start from the southern side, near the ski lifts.")
DELAY_MS = 120.0


@pytest.fixture(scope="module")
def agent_only(cfg, models):
    cfg = replace(cfg, "aec", mode="auto")
    mic: list[np.ndarray] = []
    played: list[np.ndarray] = []

    def on_engine(engine):
        engine.add_mic_filter(RoomSimulator("living", 6.0, DELAY_MS, method="synthetic"))
        engine.aec = make_aec(cfg.aec)

        def tap(t, m, p):
            mic.append(m.copy())
            played.append(p.copy())
            ev = engine.aec.poll(t)  # what the engine will do once wired (see docs/echo.md)
            if ev is not None:
                engine.bus.publish(ev)

        engine.add_tap(tap)
        engine.say(TEXT)

    silence = ArraySource(np.zeros(SAMPLE_RATE * 14, np.float32), name="nobody")
    run = asyncio.run(run_conversation(cfg, models, silence, on_engine=on_engine))
    return run, np.concatenate(mic), np.concatenate(played)


def test_engine_with_aec_does_not_stop_itself(agent_only):
    run, mic, played = agent_only
    assert not [e for e in run.events if isinstance(e, BargeIn)], "the agent barged in on its own echo"
    ended = [e for e in run.events if isinstance(e, AgentTurnEnded)]
    assert len(ended) == 1 and not ended[0].interrupted
    assert ended[0].heard.split()[-1].rstrip(".").lower() == "lifts"


def test_session_reports_the_echo_delay(agent_only):
    run, _, _ = agent_only
    reports = [e for e in run.events if isinstance(e, EchoDelay)]
    assert reports and abs(reports[0].delay_ms - DELAY_MS) <= 5.0
    assert max(e.erle_db for e in reports) >= 25.0


def test_the_recorded_echo_alone_would_stop_the_agent_without_aec(agent_only, models):
    """The control: the same recorded microphone, no canceller, the same rule policy."""
    from duplex.config import ASRConfig, VADConfig
    from duplex.listener import Listener

    _, mic, played = agent_only
    listener = Listener(models.vad, models.asr, VADConfig(), ASRConfig())
    listener.reset()
    policy = RulePolicy()
    policy.reset()
    decisions = []
    for i in range(len(mic) // FRAME_SAMPLES):
        sl = slice(i * FRAME_SAMPLES, (i + 1) * FRAME_SAMPLES)
        lf = listener.step(mic[sl])
        x = PolicyInput(t=(i + 1) * FRAME_SAMPLES / SAMPLE_RATE, mic=mic[sl], playback=played[sl], vad=lf.vad,
                        user_speaking=lf.user_speaking, speech_run=lf.speech_run, silence=lf.silence,
                        agent_speaking=bool(np.any(played[max(0, sl.start - SAMPLE_RATE):sl.stop])),
                        agent_spoken=0.0, partial=lf.partial, user_turn_open=False)
        decisions.append(policy.step(x).decision)
    assert Decision.BARGE_IN in decisions

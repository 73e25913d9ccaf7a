"""The speaker gate inside the engine, as timelines on scripted stages (tests/harness.py).

The encoder is a stand-in that reads who is talking from the harness's signal: the
user's utterance ``k`` is a constant level (``SPEECH_LEVEL + k * CODE_STEP``), so a test
says which ``k`` is the enrolled user and which another voice; the fake TTS's signal
is never constant, so a window of it (the agent's echo) embeds as the agent. The real
:class:`~duplex.stages.speaker.SpeakerGate` (windowing, running similarity,
thresholds) and the real engine run.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from duplex.events import (
    AgentPaused,
    AgentResumed,
    AgentTurnEnded,
    AgentTurnStarted,
    BargeIn,
    Decision,
    EndOfTurn,
    Notice,
    OtherSpeaker,
    SpeakerHeard,
)
from duplex.speaker_profiles import VoiceProfile
from duplex.stages.speaker import SpeakerGate
from harness import (
    CODE_STEP,
    FRAME_S,
    SPEECH_LEVEL,
    FakeLLM,
    ScriptedPolicy,
    make_config,
    make_models,
    run_timeline,
    says,
)

DIM = 256
USER, OTHER, AGENT = (np.eye(DIM, dtype=np.float32)[i] for i in range(3))
LONG_REPLY = " ".join(["the moon is far away and very old"] * 4)  # 32 words: 6.4 s of fake TTS


class FakeEncoder:
    """Embeds a harness window: the fake TTS (never constant) is the agent, a constant
    level ``k`` is whoever ``voices[k]`` says."""

    id = "fake-encoder"

    def __init__(self, voices: Mapping[int, np.ndarray]) -> None:
        self.voices = dict(voices)
        self.calls = 0

    def embed(self, audio: np.ndarray) -> np.ndarray:
        self.calls += 1
        a = np.abs(np.asarray(audio, dtype=np.float32))
        voiced = a[a > SPEECH_LEVEL / 2]
        if voiced.size == 0 or float(np.ptp(voiced)) > CODE_STEP / 4:
            return AGENT  # not one constant level: the fake TTS's signal (or a mix with it)
        k = max(0, round((float(np.median(voiced)) - SPEECH_LEVEL) / CODE_STEP))
        return self.voices.get(k, OTHER)


def profile(name: str, e: np.ndarray) -> VoiceProfile:
    return VoiceProfile(name=name, embedding=e, encoder=FakeEncoder.id, speech_s=10.0, n_windows=12,
                        self_sim_mean=0.9, self_sim_min=0.8, level_dbfs=-30.0)


def gated_models(script, voices: Mapping[int, np.ndarray], *, enrolled: bool = True):
    models = make_models(script, llm=FakeLLM([LONG_REPLY]))
    enc = FakeEncoder(voices)
    models.speaker_gate = SpeakerGate(enc, profile("user", USER) if enrolled else None,  # type: ignore[arg-type]
                                      profile("agent", AGENT))
    return models, enc


def barge_after(speech_s: float):
    def rule(x):
        return Decision.BARGE_IN if x.agent_speaking and x.speech_run >= speech_s else None
    return rule


ON = {"speaker": {"enabled": True}}
OFF = {"speaker": {"enabled": False}}
ASK = says("tell me about the moon", 0.0, 1.2)
TV = says("and the goal is given what a finish", 2.4, 3.6)  # utterance 1: another voice
STOP = says("wait stop what about mars", 4.4, 5.4)  # utterance 2: the enrolled user
VOICES = {0: USER, 1: OTHER, 2: USER}


@pytest.mark.parametrize("hold", ["play", "pause"])
def test_another_voice_cannot_barge_in_but_the_enrolled_user_can(hold):
    script = [ASK, TV, STOP]
    models, enc = gated_models(script, VOICES)
    cfg = make_config({"speaker": {"enabled": True, "hold_barge_in": hold}})
    run = run_timeline(script, models=models, cfg=cfg, policy=ScriptedPolicy(rule=barge_after(0.2)))
    assert any("user 'user' enrolled" in n.message for n in run.of(Notice))
    # The other voice: the policy's barge-in is held (the agent plays on, or pauses), the
    # gate says other_speaker, the agent goes on and says who it heard.
    other = run.first(OtherSpeaker)
    assert other.label == "other_speaker" and other.suppressed == "barge_in", other
    assert TV.start - FRAME_S <= other.onset <= TV.start + 0.2 and other.t <= TV.start + 0.6, other
    assert other.sim_user is not None and other.sim_user < 0.62 and other.confidence > 0.5
    assert [b for b in run.of(BargeIn) if b.onset < STOP.start - FRAME_S] == [], run.decisions()
    if hold == "pause":
        paused = run.first(AgentPaused, turn=1)
        assert TV.start < paused.t < other.t
        assert run.first(AgentResumed, turn=1).t == other.t
    else:
        assert run.of(AgentPaused) == [], "the agent plays on while the gate listens"
    # The enrolled user's barge-in commits on the gate's first verdict (0.4 s of speech).
    b = run.first(BargeIn, turn=1)
    assert STOP.start - FRAME_S <= b.onset <= STOP.start + 0.1
    assert b.t <= STOP.start + 0.4 + 0.1 and b.was_paused == (hold == "pause"), b
    assert "mars" in run.of(EndOfTurn)[-1].text
    # Labels are published as the run goes, a few embeddings per second (never per frame).
    heard = run.of(SpeakerHeard)
    assert {h.label for h in heard} >= {"user", "other_speaker"}
    assert 0 < enc.calls < (TV.end - TV.start + STOP.end - STOP.start + ASK.end) / FRAME_S / 4


def test_without_the_gate_the_other_voice_barges_in():
    """The same timeline with ``speaker.enabled`` off: the test above can fail."""
    script = [ASK, TV, STOP]
    models, enc = gated_models(script, VOICES)
    run = run_timeline(script, models=models, cfg=make_config(OFF), policy=ScriptedPolicy(rule=barge_after(0.2)))
    b = run.first(BargeIn, turn=1)
    assert TV.start - FRAME_S <= b.onset <= TV.start + 0.2
    assert run.of(OtherSpeaker) == [] and run.of(SpeakerHeard) == [] and enc.calls == 0


def test_a_turn_spoken_only_by_another_voice_gets_no_reply():
    script = [says("breaking news from the capital tonight", 0.0, 1.5), says("what time is it", 3.0, 4.0)]
    models, _ = gated_models(script, {0: OTHER, 1: USER})
    run = run_timeline(script, models=models, cfg=make_config(ON), duration=6.0)
    other = run.first(OtherSpeaker)
    assert other.suppressed == "end_of_turn" and other.label == "other_speaker"
    started = run.of(AgentTurnStarted)
    assert len(started) == 1 and started[0].prompt == "what time is it", run.decisions()
    assert [t.text for t in run.engine.history.turns if t.role == "user"] == ["what time is it"]


def echo(gain: float):
    def room(mic: np.ndarray, played: np.ndarray) -> np.ndarray:
        return (mic + gain * played).astype(np.float32)
    return room


@pytest.mark.parametrize("gated", [False, True])
def test_echo_residual_is_the_agent_and_cannot_barge_in_without_enrolment(gated):
    script = [ASK]
    models, _ = gated_models(script, VOICES, enrolled=False)
    cfg = make_config(ON if gated else OFF)
    run = run_timeline(script, models=models, cfg=cfg, policy=ScriptedPolicy(rule=barge_after(0.2)),
                       on_engine=lambda e: e.add_mic_filter(echo(0.5)), duration=4.0)
    if not gated:
        assert run.of(BargeIn), "the echo must barge in without the gate, or this test shows nothing"
        return
    assert any("only the agent's own voice" in n.message for n in run.of(Notice))
    assert run.of(BargeIn) == [], run.decisions()
    other = run.first(OtherSpeaker)
    assert other.label == "agent" and other.sim_user is None and other.sim_agent > 0.9


def test_same_frames_give_the_same_verdicts():
    script = [ASK, TV, STOP]

    def once():
        models, _ = gated_models(script, VOICES)
        run = run_timeline(script, models=models, cfg=make_config(ON), policy=ScriptedPolicy(rule=barge_after(0.2)))
        return [e.to_json() for e in run.events if isinstance(e, (SpeakerHeard, OtherSpeaker, BargeIn))]

    first = once()
    assert first and first == once()


def test_policy_sees_the_verdict():
    script = [ASK, TV, STOP]
    models, _ = gated_models(script, VOICES)
    policy = ScriptedPolicy(rule=barge_after(0.2))
    run_timeline(script, models=models, cfg=make_config(ON), policy=policy)
    seen = {x.speaker for x in policy.inputs if TV.start < x.t < TV.end}
    assert "other_speaker" in seen
    assert any(x.speaker == "user" and x.speaker_sim_user and x.speaker_sim_user > 0.9 for x in policy.inputs)
    assert all(x.speaker is None for x in policy.inputs if x.t < 0.3)


class ScriptedEncoder:
    """Returns the given embeddings in order (then the last one again)."""

    id = FakeEncoder.id

    def __init__(self, embeddings) -> None:
        self.embeddings = list(embeddings)
        self.calls = 0

    def embed(self, audio: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.embeddings[min(self.calls, len(self.embeddings)) - 1]


def test_a_user_talking_into_the_agents_echo_is_not_rejected():
    """The run opens on the agent's echo (called ``agent``); once the latest window is
    someone else, the running mean alone (still agent-like) no longer rejects it."""
    gate = SpeakerGate(ScriptedEncoder([AGENT, AGENT, AGENT, USER, USER]), None,  # type: ignore[arg-type]
                       profile("agent", AGENT))
    frame = np.full(512, 0.1, np.float32)
    verdicts = [v for i in range(60) if (v := gate.push(frame, t=i * FRAME_S, agent_speaking=True)) is not None]
    labels = [v.label for v in verdicts]
    assert labels[:3] == ["agent"] * 3, labels
    assert verdicts[3].sim_agent >= 0.7, "the running mean alone would still say agent"
    assert labels[3:5] == ["unknown", "unknown"], labels


def test_a_held_barge_in_ends_with_its_reply_and_the_speech_becomes_the_users_turn():
    """The reply plays out while a barge-in waits for the gate's first verdict: nothing is
    left to cut, the next reply must not be cut at its start by the stale hold, and what
    the user was saying under the reply is their next turn (CI: the 20-barge-in replay
    lost its barge-ins this way, the next reply cut with nothing heard)."""
    ask = says("tell me about the moon", 0.0, 1.2)
    under = says("wait what about mars", 1.75, 3.2)  # starts under the short reply, outlives it
    script = [ask, under]
    models, _ = gated_models(script, {0: USER, 1: USER}, enrolled=False)
    models.llm = FakeLLM(["okay sure", LONG_REPLY])
    cfg = make_config({"speaker": {"enabled": True, "hold_barge_in": "play"}})
    run = run_timeline(script, models=models, cfg=cfg, policy=ScriptedPolicy(rule=barge_after(0.1)), duration=12.0)
    first = run.first(AgentTurnEnded, turn=1)
    assert not first.interrupted and first.heard == "okay sure", first
    assert first.t < under.start + 0.4, "the reply must end before the gate's first verdict"
    assert run.of(BargeIn) == [], run.decisions()
    second = run.first(AgentTurnStarted, turn=2)
    assert "mars" in second.prompt, second
    assert not run.first(AgentTurnEnded, turn=2).interrupted

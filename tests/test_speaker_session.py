"""The speaker gate's events through the session (record, then replay on the simulated
clock) and over MQTT (a real mosquitto), on the fake-stage harness: no weights."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest
from mqtt_fixtures import Collector, mosquitto, requires_mosquitto, unique_by_seq  # noqa: F401
from test_speaker_engine import AGENT, ASK, OTHER, STOP, TV, USER, VOICES, barge_after, gated_models, profile

from duplex.app import run_conversation
from duplex.audio.source import ArraySource
from duplex.events import BargeIn, OtherSpeaker, SpeakerHeard, UserSpeechStarted, VoiceEnrolled
from duplex.mqtt.payloads import validate
from duplex.session.replay import replay, session_config
from duplex.session.report import compare_decisions
from duplex.session.store import load_session
from duplex.stages.speaker import SpeakerGate
from harness import ScriptedPolicy, make_config, render, says

SCRIPT = [ASK, TV, STOP]
END_S = STOP.end + 1.0


def speaker_models():
    models, _ = gated_models(SCRIPT, VOICES)
    models.make_policy = lambda pcfg: ScriptedPolicy(rule=barge_after(0.2))
    return models


def test_other_speaker_is_recorded_and_replays_the_same(tmp_path):
    cfg = make_config({"speaker": {"enabled": True}})
    d = tmp_path / "s"
    source = ArraySource(render(SCRIPT, END_S), name="speaker-session")
    rec = asyncio.run(run_conversation(cfg, speaker_models(), source, session_dir=d))
    assert rec.incomplete is None
    session = load_session(d)
    others = [e for e in session.events if isinstance(e, OtherSpeaker)]
    assert len(others) == 1 and others[0].label == "other_speaker" and others[0].suppressed == "barge_in"
    assert others[0] == next(e for e in rec.events if isinstance(e, OtherSpeaker))  # the JSON round trip is exact
    assert [e for e in session.events if isinstance(e, SpeakerHeard)], "the per-embedding labels are recorded"
    assert len([e for e in session.events if isinstance(e, BargeIn)]) == 1  # the user's, not the TV's

    # The replay builds its config from session.json (speaker.enabled true) and runs the
    # gate in lockstep: the same frames give the same verdicts and decisions.
    rcfg = session_config(session)
    assert rcfg.speaker.enabled
    again = asyncio.run(replay(session, rcfg, speaker_models()))
    assert compare_decisions(session.events, again.events) == []
    heard = [e.to_json() for e in session.events if isinstance(e, SpeakerHeard)]
    assert heard == [e.to_json() for e in again.events if isinstance(e, SpeakerHeard)]
    # Replayed with the gate off, the TV barges in: the comparison can fail.
    off = asyncio.run(replay(session, dataclasses.replace(rcfg, speaker=dataclasses.replace(rcfg.speaker,
                                                                                            enabled=False)),
                             speaker_models()))
    assert compare_decisions(session.events, off.events) != []


def test_a_replay_hears_with_the_voices_the_session_recorded_not_todays(tmp_path):
    cfg = make_config({"speaker": {"enabled": True}})
    d = tmp_path / "s"
    asyncio.run(run_conversation(cfg, speaker_models(), ArraySource(render(SCRIPT, END_S), name="voices"),
                                 session_dir=d))
    session = load_session(d)
    rec = session.meta["speaker_gate"]
    assert rec["mode"] == "user+agent" and rec["user"]["name"] == "user" and len(rec["user"]["embedding"]) > 0
    # Since the recording the user enrolled again, and the TV's voice was taken for theirs.
    today = speaker_models()
    enc = today.speaker_gate.encoder
    today.speaker_gate = SpeakerGate(enc, profile("user", OTHER), profile("agent", AGENT))
    rcfg = session_config(session)
    again = asyncio.run(replay(session, rcfg, today))
    assert compare_decisions(session.events, again.events) == []
    # Without the recorded voices (an older session.json) today's profile decides: different.
    old = dataclasses.replace(session, meta={k: v for k, v in session.meta.items() if k != "speaker_gate"})
    other = asyncio.run(replay(old, rcfg, today))
    assert compare_decisions(session.events, other.events) != []


@pytest.mark.timeout(120)
@requires_mosquitto
async def test_other_speaker_is_published_over_mqtt(mosquitto):  # noqa: F811
    cfg = dataclasses.replace(make_config({"speaker": {"enabled": True}}), mqtt=mosquitto.config())
    source = ArraySource(render(SCRIPT, END_S), name="speaker-mqtt")
    async with Collector(mosquitto.port, "test/kitchen/#") as col:
        await run_conversation(cfg, speaker_models(), source)
        await col.wait_for(lambda ms: bool(col.on("test/kitchen/event/session_ended")))
    payloads = unique_by_seq(col.messages)
    for p in payloads:
        validate("payload", p)
    other = [p for p in payloads if p["type"] == "other_speaker"]
    assert len(other) == 1, [p["type"] for p in payloads]
    o = other[0]
    assert o["label"] == "other_speaker" and o["suppressed"] == "barge_in"
    assert o["sim_user"] < 0.62 and o["sim_agent"] is not None and 0.5 < o["confidence"] <= 1
    assert TV.start - 0.05 <= o["onset_t"] <= TV.start + 0.2
    assert [m.topic for m in col.on("test/kitchen/event/other_speaker")]
    kinds = [p["type"] for p in payloads]
    assert kinds.index("other_speaker") < kinds.index("barge_in")  # the TV first, then the user's barge-in


# Enrolling mid-conversation (the TUI's "e"): 1 s of the user's voice first, then the same
# conversation as above. The gate starts with the agent's voice only (TV counts as the user).
SAMPLE = says("this is my voice so you know it", 0.0, 1.0)
SHIFT = 1.6
SCRIPT_E = [SAMPLE] + [says(s.text, s.start + SHIFT, s.end + SHIFT) for s in SCRIPT]
VOICES_E = {0: USER, 1: USER, 2: OTHER, 3: USER}
TV_E = SCRIPT_E[2]


class EnrolAt:
    """The microphone, and at ``frame`` an enrolment from the next ``seconds`` of it."""

    def __init__(self, audio, frame: int, seconds: float) -> None:
        self.inner = ArraySource(audio, name="enrol")
        self.frame, self.seconds = frame, seconds
        self.engine = None
        self.captured = None

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def _enrol(self) -> None:
        self.captured = await self.engine.capture_mic(self.seconds)
        self.engine.use_voice(profile("user", USER))

    async def frames(self):
        i = 0
        async for f in self.inner.frames():
            if i == self.frame:
                self._task = asyncio.ensure_future(self._enrol())
            yield f
            i += 1


def enrol_models():
    models, _ = gated_models(SCRIPT_E, VOICES_E, enrolled=False)
    models.make_policy = lambda pcfg: ScriptedPolicy(rule=barge_after(0.2))
    return models


def test_a_voice_enrolled_mid_conversation_takes_over_the_gate_and_replays(tmp_path):
    cfg = make_config({"speaker": {"enabled": True}})
    end = SCRIPT_E[-1].end + 1.0
    audio = render(SCRIPT_E, end)
    d = tmp_path / "s"
    src = EnrolAt(audio, frame=0, seconds=1.2)
    rec = asyncio.run(run_conversation(cfg, enrol_models(), src, session_dir=d,
                                       on_engine=lambda e: setattr(src, "engine", e)))
    assert src.captured is not None and src.captured.size == int(1.2 * 16000)
    assert float(np.abs(src.captured).max()) > 0, "the capture is the microphone's"
    enrolled = [e for e in rec.events if isinstance(e, VoiceEnrolled)]
    assert len(enrolled) == 1 and enrolled[0].name == "user" and 1.2 <= enrolled[0].t <= 1.3
    starts = [e.t for e in rec.events if isinstance(e, UserSpeechStarted)]
    assert starts and min(starts) >= SHIFT - 1e-6, "the listener did not hear the enrolment sample"
    other = [e for e in rec.events if isinstance(e, OtherSpeaker)]
    assert other and other[0].suppressed == "barge_in" and abs(other[0].onset - TV_E.start) < 0.2
    barges = [e for e in rec.events if isinstance(e, BargeIn)]
    assert len(barges) == 1 and barges[0].onset >= SCRIPT_E[3].start - 0.1, "only the enrolled user barged in"
    # Without the enrolment the TV's voice counts as the user's and barges in.
    plain = asyncio.run(run_conversation(cfg, enrol_models(), ArraySource(audio, name="plain")))
    assert any(abs(e.onset - TV_E.start) < 0.2 for e in plain.events if isinstance(e, BargeIn))
    # The replay re-issues the enrolment from the event (the profile is in it) at the same frame.
    session = load_session(d)
    again = asyncio.run(replay(session, session_config(session), enrol_models()))
    assert compare_decisions(session.events, again.events) == []
    assert [e.to_json() for e in again.events if isinstance(e, VoiceEnrolled)] == [e.to_json() for e in enrolled]

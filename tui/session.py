"""What the app drives: a conversation it can start, watch and steer.

The app only needs the :class:`Session` protocol: ``run(publish)`` runs the conversation
on the app's own event loop and calls ``publish`` for every event (synchronously, on
that loop: it must not block), and a handful of controls for the keys.

* :class:`LiveSession` — the real thing: :func:`duplex.app.run_conversation` on loaded
  models (microphone, a paced WAV, a scripted user, or a replay source), with a
  pausable recording.
* :class:`EventFeed` — a prepared list of events (tests, the benchmark, a recorded
  ``events.jsonl``), optionally paced; the controls only log what they were asked.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.audio.source import pace
from duplex.bus import EventBus
from duplex.errors import PolicyError, SpeakerError
from duplex.speaker_profiles import ProfileStore, check_name
from duplex.stages.speaker import gate_record, profile_from_recording
from duplex.events import (
    AgentState,
    AgentTurnEnded,
    AgentTurnStarted,
    BargeIn,
    EndOfTurn,
    Event,
    Notice,
    SessionEnded,
    StageError,
    StateChanged,
    UserSpeechStarted,
    event_from_dict,
)
from policies import POLICY_NAMES

if TYPE_CHECKING:
    from duplex.audio.sink import AudioSink
    from duplex.audio.source import AudioSource
    from duplex.config import Config
    from duplex.engine import Engine
    from duplex.session.recorder import Recorder
    from duplex.stages.factory import Models

log = logging.getLogger(__name__)

POLICIES = POLICY_NAMES
"""The policies the switch key cycles through (the one registry, :data:`policies.POLICY_NAMES`)."""
Publish = Callable[[Event], None]


@dataclass(frozen=True)
class SessionInfo:
    """What the state bar shows that no event carries."""

    title: str = "duplex"
    source: str = ""
    profile: str = "default"
    asr: str = ""
    llm: str = ""
    tts: str = ""
    policy: str = "rules"
    recording: bool | None = None
    """On or off; ``None`` when this session is not recorded at all (``--no-record``)."""
    session_dir: Path | None = None
    mqtt: bool = False
    """MQTT enabled in the profile (the connection state comes from the bridge)."""
    vad_threshold: float = 0.5

    @classmethod
    def from_config(cls, cfg: Config, *, title: str = "duplex", source: str = "",
                    session_dir: Path | None = None) -> SessionInfo:
        def short(path: str) -> str:
            return Path(path.split(":", 1)[-1]).stem if path else ""

        llm = cfg.llm.url if cfg.llm.backend == "openai" else short(cfg.llm.model)
        asr = short(cfg.asr.model) or "en-us"
        return cls(
            title=title, source=source, profile=cfg.name,
            asr=f"{cfg.asr.backend} {asr}", llm=f"{cfg.llm.backend} {llm}",
            tts=f"{cfg.tts.backend} {short(cfg.tts.voice) if cfg.tts.backend == 'piper' else cfg.tts.voice}",
            policy=cfg.policy.name, recording=True if session_dir is not None else None,
            session_dir=session_dir, mqtt=cfg.mqtt.enabled, vad_threshold=cfg.vad.threshold,
        )


ENROL_S = 10.0
"""How long the TUI's enrolment records (10 s of speech: the EER benchmark's best length)."""
ENROL_MIN_SPEECH_S = 4.0
"""Less speech than this in the enrolment window is refused (the user hardly spoke)."""


class Session(Protocol):
    info: SessionInfo

    async def run(self, publish: Publish) -> None:
        """Run the conversation to its end, publishing every event (on the caller's loop)."""
        ...

    def set_muted(self, muted: bool) -> None: ...
    def set_recording(self, on: bool) -> bool:
        """Pause or resume recording; returns the new state (unchanged if not recorded)."""
        ...
    async def set_policy(self, name: str) -> None:
        """Switch the turn policy; raises :class:`duplex.errors.PolicyError` if it cannot load."""
        ...
    async def enroll(self, seconds: float = ENROL_S) -> str:
        """Record the user alone for ``seconds``, enrol that voice and use it from now on;
        returns a line for the user. Raises :class:`duplex.errors.SpeakerError`."""
        ...
    def mqtt_connected(self) -> bool | None:
        """``None`` when MQTT is off or its state is unknown."""
        ...
    def end(self, reason: str = "ended by the user") -> None: ...


class RecordingGate:
    """A :class:`~duplex.session.recorder.Recorder` the UI can pause.

    While paused nothing of the conversation is kept: the audio taps write silence (so
    ``mic.wav`` and ``agent.wav`` stay aligned with the session clock and with the events
    around the gap) and events are not written, except notices, errors and the end. The
    pause and the resume are themselves notices in ``events.jsonl``, so the gap is visible
    to anyone reading or replaying the session.
    """

    KEPT_WHILE_PAUSED = (Notice, StageError, SessionEnded)

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.paused = False

    def on_event(self, ev: Event) -> None:
        if not self.paused or isinstance(ev, self.KEPT_WHILE_PAUSED):
            self.recorder.on_event(ev)

    def on_audio(self, t: float, mic: np.ndarray, played: np.ndarray) -> None:
        if self.paused:
            mic, played = np.zeros_like(mic), np.zeros_like(played)
        self.recorder.on_audio(t, mic, played)

    def annotate(self, key: str, value: Any) -> None:
        self.recorder.annotate(key, value)


class Activity:
    """A bus subscriber that knows whether the conversation still has something pending:
    a user turn awaiting its end-of-turn decision, a reply in flight, a non-idle state."""

    def __init__(self) -> None:
        self.user_open = False
        self.reply_open = False
        self.state = AgentState.LISTENING

    def __call__(self, ev: Event) -> None:
        match ev:
            case UserSpeechStarted() if not ev.agent_speaking:
                self.user_open = True
            case BargeIn():
                self.user_open = True
            case EndOfTurn():
                self.user_open = False
            case AgentTurnStarted():
                self.reply_open = True
            case AgentTurnEnded():
                self.reply_open = False
            case StateChanged():
                self.state = ev.state
            case _:
                pass

    @property
    def busy(self) -> bool:
        return self.user_open or self.reply_open or self.state not in (AgentState.LISTENING, AgentState.MUTED)


class PacedTail:
    """A paced, finite source (``--input``, ``--simulate``) followed by real-time silence
    until the conversation is idle, as a person would wait for the agent's answer.

    The engine runs a wall-clock source like a microphone: it stops when the frames stop
    and drains only lockstep runs, so without this the reply to the last line would be
    cut off. Gives up after ``max_s``.
    """

    IDLE_S = 0.5

    def __init__(self, source: AudioSource, activity: Activity, max_s: float = 30.0) -> None:
        self.source = source
        self.activity = activity
        self.max_s = max_s

    def __getattr__(self, name: str) -> Any:  # name, live, realtime, attach, dropped, log...
        return getattr(self.source, name)

    async def frames(self) -> Any:
        async for frame in self.source.frames():
            yield frame
        frame_s = FRAME_SAMPLES / SAMPLE_RATE
        silence = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        t0 = asyncio.get_running_loop().time()
        idle = 0
        for i in range(int(self.max_s / frame_s)):
            idle = 0 if self.activity.busy else idle + 1
            if idle * frame_s >= self.IDLE_S:
                return
            await pace(i, t0)
            yield silence


class LiveSession:
    """A real conversation (:func:`duplex.app.run_conversation`) that the UI can steer.

    Args:
        cfg: the validated profile.
        models: loaded models (loading is the caller's job, before the app starts).
        source: the user's audio: :class:`~duplex.audio.source.MicSource`, a paced
            :class:`~duplex.audio.source.WavSource`, a :class:`~duplex.simuser.SimulatedUser`,
            or a replay source.
        session_dir: record the session here (``None``: not recorded).
        sink: where the agent's audio goes (default: nowhere; the recording keeps it).
        title: the app's title.
    """

    def __init__(self, cfg: Config, models: Models, source: AudioSource, session_dir: Path | None = None,
                 *, sink: AudioSink | None = None, title: str = "duplex") -> None:
        self.cfg = cfg
        self.models = models
        self.source = source
        self.sink = sink
        self.session_dir = Path(session_dir) if session_dir is not None else None
        self.info = SessionInfo.from_config(cfg, title=title, source=getattr(source, "name", ""),
                                            session_dir=self.session_dir)
        self.engine: Engine | None = None
        self.bridge: Any = None
        self.gate: RecordingGate | None = None
        self.result: Any = None
        self._muted = False

    async def run(self, publish: Publish) -> None:
        from duplex.app import run_conversation

        bus = EventBus()
        activity = Activity()
        subscribers: list[Publish] = [publish, activity]
        source = self.source
        if getattr(source, "realtime", False) and not source.live:
            source = PacedTail(source, activity)
        recorder = None
        if self.session_dir is not None:
            from duplex.session.recorder import Recorder

            recorder = Recorder(self.session_dir, self.cfg, source=self.info.source)
            self.gate = RecordingGate(recorder)
        try:
            self.result = await run_conversation(
                self.cfg, self.models, source, sink=self.sink, bus=bus, subscribers=subscribers,
                keep_events=False, on_engine=self._on_engine, on_bridge=self._on_bridge, recording=self.gate,
            )
        finally:
            if recorder is not None:
                st = self.engine.stats if self.engine is not None else None
                recorder.close(summary=None if st is None else {
                    "turns": st.turns, "barge_ins": st.barge_ins, "backchannels": st.backchannels})

    def _on_engine(self, engine: Engine) -> None:
        self.engine = engine
        if self.gate is not None:
            self.gate.recorder.annotate("speaker_gate", gate_record(engine.speaker.gate if engine.speaker else None))
        if self._muted:
            engine.set_muted(True)

    def _on_bridge(self, bridge: Any) -> None:
        self.bridge = bridge

    # --- controls --------------------------------------------------------------------------

    def set_muted(self, muted: bool) -> None:
        self._muted = muted
        if self.engine is not None:
            self.engine.set_muted(muted)

    def set_recording(self, on: bool) -> bool:
        gate = self.gate
        if gate is None:
            return False
        if gate.paused == (not on):
            return on
        t = self.engine.clock.now() if self.engine is not None else 0.0
        if on:
            gate.paused = False
            self._notice(t, "recording resumed")
        else:
            self._notice(t, "recording paused: silence and no events are written until it resumes")
            gate.paused = True
        return on

    def _notice(self, t: float, message: str) -> None:
        if self.engine is not None:
            self.engine.bus.publish(Notice(t, message=message))

    async def set_policy(self, name: str) -> None:
        # Build it once, off the loop (weights and ONNX sessions load in a thread), with
        # the engine's own factory; a missing model raises here (PolicyError) before the
        # engine is touched.
        if self.engine is None:
            raise RuntimeError("the conversation has not started yet")
        make_policy = self.models.make_policy
        if make_policy is None:
            raise PolicyError("these models were loaded without a policy factory: the policy cannot be switched")
        policy = await asyncio.to_thread(make_policy, replace(self.cfg.policy, name=name))  # type: ignore[arg-type]
        self.engine.use_policy(policy)

    async def enroll(self, seconds: float = ENROL_S) -> str:
        """Enrol the user's voice from the next ``seconds`` of the microphone (the agent
        does not listen meanwhile), save it as ``speaker.profile`` (``user`` if unset) in the
        voices directory, and let only that voice take the turn from now on. The encoder
        and the VAD run in a thread; the session records the profile (a replay uses it)."""
        eng = self.engine
        if eng is None:
            raise SpeakerError("the conversation has not started yet")
        if eng.speaker is None:
            raise SpeakerError("the speaker gate is off (speaker.enabled = false): turn it on to enrol a voice")
        name = check_name(self.cfg.speaker.profile or "user")
        self._notice(eng.clock.now(), f"enrolling '{name}': talk alone for {seconds:.0f} s "
                                      "(the agent is not listening meanwhile)")
        audio = await eng.capture_mic(seconds)
        encoder = eng.speaker.gate.encoder
        profile, _ = await asyncio.to_thread(profile_from_recording, encoder, audio, name, source="tui microphone",
                                             min_speech_s=ENROL_MIN_SPEECH_S)
        path = await asyncio.to_thread(ProfileStore().save, profile)
        eng.use_voice(profile)
        doubt = (f"; its windows disagree (consistency {profile.self_sim_mean:.2f}): was someone else talking?"
                 if profile.self_sim_mean < 0.75 else "")
        line = (f"enrolled '{name}' from {profile.speech_s:.1f} s of speech: only this voice takes the turn now "
                f"(saved to {path}){doubt}")
        self._notice(eng.clock.now(), line)
        return line

    def mqtt_connected(self) -> bool | None:
        if not self.cfg.mqtt.enabled or self.bridge is None:
            return None
        return bool(self.bridge.stats.connected)

    def end(self, reason: str = "ended by the user") -> None:
        if self.engine is not None:
            self.engine.end(reason)


@dataclass
class EventFeed:
    """A prepared event stream with no engine behind it (tests, benchmarks, a recorded log).

    ``pace`` is awaited before each event with the gap to the previous one in session
    seconds (e.g. ``asyncio.sleep`` for real time); without it every event is published at
    once. ``gate`` (optional) is awaited before each event, for tests that step the stream.
    The controls record their calls in ``calls``.
    """

    events: list[Event]
    info: SessionInfo = field(default_factory=SessionInfo)
    pace: Callable[[float], Awaitable[Any]] | None = None
    gate: Callable[[Event], Awaitable[Any]] | None = None
    calls: list[tuple[str, Any]] = field(default_factory=list)
    _ended: str | None = field(default=None, init=False)

    @classmethod
    def from_jsonl(cls, path: str | Path, info: SessionInfo | None = None) -> EventFeed:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        return cls([event_from_dict(json.loads(s)) for s in lines if s.strip()], info or SessionInfo())

    async def run(self, publish: Publish) -> None:
        prev = self.events[0].t if self.events else 0.0
        for ev in self.events:
            if self._ended:
                break
            if self.gate is not None:
                await self.gate(ev)
            if self.pace is not None:
                await self.pace(max(0.0, ev.t - prev))
            prev = ev.t
            publish(ev)
        if self._ended:
            publish(SessionEnded(prev, reason=self._ended))

    def set_muted(self, muted: bool) -> None:
        self.calls.append(("muted", muted))

    def set_recording(self, on: bool) -> bool:
        self.calls.append(("recording", on))
        return on if self.info.recording is not None else False

    async def set_policy(self, name: str) -> None:
        self.calls.append(("policy", name))

    async def enroll(self, seconds: float = ENROL_S) -> str:
        self.calls.append(("enroll", seconds))
        raise SpeakerError("a recorded event log has no microphone to enrol a voice from")

    def mqtt_connected(self) -> bool | None:
        return None

    def end(self, reason: str = "ended by the user") -> None:
        self.calls.append(("end", reason))
        self._ended = reason

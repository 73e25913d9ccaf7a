"""The full-duplex engine: one loop that listens and speaks at the same time.

Each 32 ms tick the engine (1) pulls one chunk from the player and sends it to the
speaker, (2) runs the microphone frame through echo cancellation and the listener (VAD,
speech runs, streaming ASR) and (3) asks the turn policy for a decision with both sides
in view — (2) and (3) in one executor hop, so no model runs on the loop — then (4)
acts through the :class:`~duplex.floor.Floor`: start a reply at end of turn, pause or
cancel it under the user's speech, log a backchannel, or play the agent's own
"mm-hmm". The reply itself (LLM → chunker → TTS) runs as a separate task and fills the
player's queue.

Two pacings, one code path. In both the session clock is the position in the audio
(advanced one frame per tick), so every event lines up with the session's WAV files;
compute time is measured on :class:`~duplex.clock.PerfTimer`.

* **live** (a microphone, or a file paced on the wall clock): nothing waits for a model;
  if the reply's audio is not ready when the speaker needs it, the speaker plays silence.
  Which frame each asynchronous result was first used on is logged
  (:mod:`duplex.pacing`) and recorded, so a replay of a live session reproduces it.
* **lockstep** (files, scripted users, replay of a lockstep session): when the speaker
  needs audio that is still being computed, the loop waits for it. Compute is thus
  instantaneous on the session clock (plus ``engine.sim_response_delay_ms``) and every
  decision is reproducible.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Protocol

import numpy as np

from duplex.audio import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE
from duplex.audio.player import Player
from duplex.audio.sink import AudioSink, NullSink
from duplex.audio.source import AudioSource, pace
from duplex.audio.wav import level_db
from duplex.bus import EventBus
from duplex.clock import Clock, SimClock
from duplex.config import Config
from duplex.errors import ConfigError, DuplexError, SpeakerError
from duplex.events import (
    AgentState,
    Arrived,
    Decision,
    Event,
    Levels,
    Muted,
    Notice,
    PolicyFrame,
    SessionEnded,
    SpeakerHeard,
    StageError,
    StateChanged,
    VoiceEnrolled,
)
from duplex.floor import EngineStats, Floor, FloorView
from duplex.history import History
from duplex.listener import Listener, ListenerFrame
from duplex.pacing import Pacing
from duplex.stages.factory import Models, PolicyFactory
from duplex.speaker_profiles import VoiceProfile
from duplex.stages.speaker import SpeakerGate, SpeakerTrack, SpeakerVerdict
from duplex.turn import PolicyInput, PolicyOutput, TurnPolicy

log = logging.getLogger(__name__)

FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
DRAIN_LIMIT_S = 30.0
"""After the input ends, keep ticking silence at most this long for the agent to finish."""

AudioTap = Callable[[float, np.ndarray, np.ndarray], None]
"""Called every tick with (t, microphone frame, played chunk): the recorder's seam."""

MicFilter = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(microphone frame, chunk played this tick) -> what the microphone really heard.
The simulated-room seam: echo of the agent's own voice is added here in tests and
benchmarks, before the recorder and the echo canceller see the frame."""


class CaptureProcessor(Protocol):
    """Echo cancellation in the capture path: the microphone frame and the exact chunk
    the player sent to the speaker in the same tick (the echo reference)."""

    def process(self, mic: np.ndarray, reference: np.ndarray) -> np.ndarray: ...


class _Capture:
    """Microphone frames collected for :meth:`Engine.capture_mic`."""

    def __init__(self, samples: int, fut: asyncio.Future[np.ndarray]) -> None:
        self.need = samples
        self.fut = fut
        self.parts: list[np.ndarray] = []
        self.got = 0

    def add(self, frame: np.ndarray) -> bool:
        """Take one frame; True once enough is in (the future then holds the audio)."""
        if self.fut.done():  # cancelled by the caller
            return True
        self.parts.append(np.array(frame, dtype=np.float32))
        self.got += frame.size
        if self.got < self.need:
            return False
        self.fut.set_result(np.concatenate(self.parts)[: self.need])
        return True


class Engine:
    """One conversation. Build, ``await run()``, read ``stats`` and ``history``."""

    def __init__(
        self,
        cfg: Config,
        models: Models,
        policy: TurnPolicy,
        source: AudioSource,
        sink: AudioSink | None = None,
        *,
        bus: EventBus | None = None,
        clock: Clock | None = None,
        history: History | None = None,
        aec: CaptureProcessor | None = None,
        policy_factory: PolicyFactory | None = None,
    ) -> None:
        self.cfg = cfg
        self.models = models
        self.policy = policy
        self._policy_factory = policy_factory
        """Builds a policy by name for :meth:`set_policy`; the engine never imports ``policies``."""
        self.source = source
        self.sink = sink or NullSink()
        self.bus = bus or EventBus()
        self.live = source.live or bool(getattr(source, "realtime", False))
        """Paced on the wall clock (a microphone, or ``realtime``)."""
        self.pacing: Pacing | None = getattr(source, "pacing", None) or (Pacing() if self.live else None)
        """When asynchronous results arrive: logged on live runs, replayed from a live
        session's log; ``None`` in lockstep."""
        self.clock: Clock = clock or SimClock()
        self.history = history or History(cfg.llm.system_prompt, cfg.llm.history_turns)
        self.listener = Listener(models.vad, models.asr, cfg.vad, cfg.asr)
        self.listener.set_live(not self.lockstep)
        self.listener.use_pacing(self.pacing)
        self._policies = 0
        self._pace_policy(policy)
        self.player = Player(int(cfg.engine.max_pending_audio_s * SAMPLE_RATE))
        self.player.staging = self.pacing is not None
        self.stats = EngineStats()
        self.aec = aec
        self._taps: list[AudioTap] = []
        self._mic_filters: list[MicFilter] = []
        self._listen_pool = ThreadPoolExecutor(1, thread_name_prefix="duplex-listen")
        self.floor = Floor(cfg, models, player=self.player, listener=self.listener, listen_pool=self._listen_pool,
                           clock=self.clock, emit=self._emit, history=self.history, stats=self.stats,
                           pacing=self.pacing)
        gate = models.speaker_gate if cfg.speaker.enabled else None
        self.speaker = SpeakerTrack(gate.fresh()) if gate is not None else None
        """Who is speaking (``speaker.enabled``): fed in the executor hop, read by the floor."""
        self.floor.screen = self.speaker is not None
        self._frame_index = 0
        self._state = AgentState.LISTENING
        self._muted = False
        self._capture: _Capture | None = None
        self._ending: str | None = None
        self._say_queue: list[str] = []

    # --- public API -------------------------------------------------------------------

    def add_tap(self, tap: AudioTap) -> None:
        self._taps.append(tap)

    def add_mic_filter(self, fn: MicFilter) -> None:
        self._mic_filters.append(fn)

    def set_muted(self, muted: bool) -> None:
        if muted != self._muted:
            self._muted = muted
            self._emit(Muted(self.clock.now(), muted=muted))

    def capture_mic(self, seconds: float) -> asyncio.Future[np.ndarray]:
        """The next ``seconds`` of the microphone (after any mic filter), for enrolling a
        voice. Meanwhile the listener hears silence, as when muted: the agent does not
        answer what the user says for the enrolment, and the recording keeps silence."""
        if self._capture is not None:
            raise SpeakerError("a voice is already being captured")
        fut: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._capture = _Capture(max(1, int(seconds * SAMPLE_RATE)), fut)
        return fut

    def use_voice(self, profile: VoiceProfile) -> None:
        """From now on only ``profile``'s voice takes the turn (a voice enrolled mid-conversation)."""
        if self.speaker is None:
            raise SpeakerError("the speaker gate is off (speaker.enabled = false): turn it on to use a voice profile")
        g = self.speaker.gate
        self.speaker = SpeakerTrack(SpeakerGate(g.encoder, profile, g.agent, g.cfg))
        self._emit(VoiceEnrolled(self.clock.now(), name=profile.name, speech_s=profile.speech_s,
                                 profile=json.dumps(profile.to_dict(), separators=(",", ":"))))

    def say(self, text: str) -> None:
        self._say_queue.append(text)

    def end(self, reason: str = "ended by command") -> None:
        self._ending = reason

    def use_policy(self, policy: TurnPolicy) -> None:
        """Switch to an already built policy (built off the loop by the caller)."""
        policy.reset()
        self._pace_policy(policy)
        self.policy = policy
        self._emit(Notice(self.clock.now(), message=f"policy switched to {policy.name}"))

    def _pace_policy(self, policy: TurnPolicy) -> None:
        """Lockstep runs let a policy wait for the models it runs beside the frame loop
        (``wait_models``, see :class:`~duplex.turn.TurnPolicy`); live runs never do, and
        hand it the pacing log (``pacing``) under a prefix of its own."""
        if hasattr(policy, "wait_models"):
            policy.wait_models = self.lockstep  # type: ignore[attr-defined]
        if hasattr(policy, "pacing"):
            scoped = self.pacing.scoped(f"p{self._policies}:") if self.pacing is not None else None
            policy.pacing = scoped  # type: ignore[attr-defined]
        self._policies += 1

    def set_policy(self, name: str) -> None:
        """Build the policy called ``name`` with the injected factory and switch to it
        (replay re-issues a recorded switch this way, on its simulated clock)."""
        if self._policy_factory is None:
            raise ConfigError(f"cannot switch to policy {name!r}: this engine was built without a policy factory")
        self.use_policy(self._policy_factory(replace(self.cfg.policy, name=name)))  # type: ignore[arg-type]

    @property
    def lockstep(self) -> bool:
        """Simulated compute (files, scripted users, replays of lockstep sessions): the loop
        waits for every model; otherwise it never does and :attr:`pacing` logs or replays."""
        return self.pacing is None

    @property
    def state(self) -> AgentState:
        return self._state

    async def run(self) -> EngineStats:
        """Run until the input ends (then drain the agent's reply) or ``end()`` is called."""
        self.policy.reset()
        self.listener.reset()
        self._announce_speaker_gate()
        ended_by = "input ended"
        try:
            async for mic in self.source.frames():
                await self._tick(mic)
                if self._ending:
                    ended_by = self._ending
                    break
            else:
                # A finite input (file, script) ended: let the agent finish its reply,
                # feeding silence, paced on the wall clock when the run is live.
                if getattr(self.source, "finite", not self.source.live):
                    await self._drain()
        finally:
            self._publish_arrivals()
            await self.floor.close()
            dropped = int(getattr(self.source, "dropped", 0))
            self.stats.dropped_frames = dropped
            self._emit(SessionEnded(self.clock.now(), reason=ended_by, dropped_frames=dropped))
            self._listen_pool.shutdown(wait=False, cancel_futures=True)
        return self.stats

    async def _drain(self) -> None:
        silence = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        t0 = asyncio.get_running_loop().time()
        for k in range(int(DRAIN_LIMIT_S / FRAME_S)):
            if self.live:
                await pace(k, t0)
            if self.floor.idle and not self.listener.seg.speaking and not self._say_queue:
                break
            await self._tick(silence)
            if self._ending:
                break

    # --- the tick: speak, then listen → decide (one executor hop), then act ---------------

    async def _tick(self, mic: np.ndarray) -> None:
        i = self._frame_index
        self._frame_index += 1
        self.stats.frames += 1
        sim = isinstance(self.clock, SimClock)
        if sim:
            self.clock.set(i * FRAME_S)  # type: ignore[attr-defined]
        if self.pacing is not None:
            self.pacing.frame = i
        t_start = self.clock.now()
        if self._say_queue and self.floor.reply is None:
            await self.floor.start_reply(fixed_text=self._say_queue.pop(0))

        # 1. Speaker: one chunk. In lockstep, wait for audio the reply is still computing;
        # paced, take the audio that arrived since the last pull (or, replaying, what had).
        if self.lockstep:
            await self.floor.before_speaker(t_start)
        else:
            await self.floor.release_audio()
        played = self.player.pull()
        self.sink.write(played.audio)
        self.floor.played(played, t_start)

        # 2. Listen and 3. decide, in the executor: the loop never runs a model.
        for flt in self._mic_filters:
            mic = flt(mic, played.audio)
        if self._capture is not None:
            if self._capture.add(mic):
                self._capture = None
            mic = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        if self._muted:
            mic = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        for tap in self._taps:
            tap(t_start, mic, played.audio)
        policy = self.policy
        lf, x, out, heard = await asyncio.get_running_loop().run_in_executor(
            self._listen_pool, self._hear, policy, mic, played.audio, self.floor.view(),
            (i + 1) * FRAME_S if sim else None)
        poll = getattr(self.aec, "poll", None)
        report = poll(t_start) if poll is not None else None
        if report is not None:
            self._emit(report)
        if sim:
            self.clock.set(x.t)  # type: ignore[attr-defined]
        t = x.t

        # 4. Act.
        await self.floor.heard(lf, t)
        if out.probs:
            self._emit(PolicyFrame(t, policy=policy.name, decision=out.decision or Decision.CONTINUE,
                                   probs=tuple(sorted((k, round(float(v), 4)) for k, v in out.probs.items()))))
        self._emit(Levels(t, mic_db=round(level_db(x.mic), 2), out_db=round(level_db(played.audio), 2),
                          vad=round(lf.vad, 4)))
        if heard is not None:
            self._emit(SpeakerHeard(t, label=heard.label, sim_user=heard.sim_user, sim_agent=heard.sim_agent,
                                    confidence=heard.confidence, window=heard.window_s))
        await self.floor.decide(out.decision, x, lf, t)
        state = await self.floor.settle(lf.user_speaking)
        if self._muted:
            state = AgentState.MUTED
        if state is not self._state:
            self._state = state
            self._emit(StateChanged(self.clock.now(), state=state))
        self._publish_arrivals()

    def _publish_arrivals(self) -> None:
        if self.pacing is not None:
            for frame, key, value in self.pacing.drain():
                self._emit(Arrived(self.clock.now(), key=key, frame=frame, value=value))

    def _hear(self, policy: TurnPolicy, mic: np.ndarray, playback: np.ndarray, floor: FloorView,
              t_sim: float | None) -> tuple[ListenerFrame, PolicyInput, PolicyOutput, SpeakerVerdict | None]:
        """Executor thread: echo cancellation, the listener, the speaker gate, then the
        policy, on one frame. Returns the gate's verdict too when it embedded this frame."""
        raw_mic = mic
        if self.aec is not None:
            mic = self.aec.process(mic, playback)
        lf = self.listener.step(mic)
        t = t_sim if t_sim is not None else self.clock.now()
        v: SpeakerVerdict | None = None
        new = False
        if self.speaker is not None:
            v, new = self.speaker.step(mic, t=t, speaking=lf.user_speaking, voiced=lf.vad >= self.cfg.vad.threshold,
                                       started=lf.started,
                                       speech_run=lf.speech_run, agent_speaking=floor.agent_speaking,
                                       agent_audible=floor.agent_speaking and not floor.agent_paused)
        x = PolicyInput(
            t=t,
            mic=mic,
            playback=playback,
            vad=lf.vad,
            user_speaking=lf.user_speaking,
            speech_run=lf.speech_run,
            silence=lf.silence,
            agent_speaking=floor.agent_speaking,
            agent_spoken=floor.agent_spoken,
            partial=lf.partial,
            # What Floor.heard is about to decide: an onset with the agent silent opens a turn.
            user_turn_open=floor.user_turn_open or (lf.started and not floor.agent_speaking),
            raw_mic=raw_mic if self.aec is not None else None,
            agent_paused=floor.agent_paused,
            draft=lf.draft,
            speaker=v.label if v is not None else None,
            speaker_confidence=v.confidence if v is not None else 0.0,
            speaker_sim_user=v.sim_user if v is not None else None,
            speaker_sim_agent=v.sim_agent if v is not None else None,
        )
        return lf, x, policy.step(x), (v if new else None)

    def _announce_speaker_gate(self) -> None:
        """One notice at the start: which speaker mode is on (recorded with the session)."""
        if self.speaker is not None:
            self.speaker.reset()
            self._emit(Notice(self.clock.now(), message=self.speaker.gate.describe()))
        elif self.cfg.speaker.enabled:
            # Models built by hand (tests, tools) carry no gate; load_models builds it.
            log.info("speaker gate enabled in the config but not loaded with the models: not screening")

    def _emit(self, ev: Event) -> None:
        self.bus.publish(ev)


__all__ = ["Engine", "EngineStats", "DuplexError", "StageError", "FRAME_MS"]

"""The full-duplex engine: one loop that listens and speaks at the same time.

Each 32 ms tick the engine (1) pulls one chunk from the player and sends it to the
speaker, (2) runs the microphone frame through the listener (VAD, speech runs,
streaming ASR), (3) asks the turn policy for a decision with both sides in view, and
(4) acts: start a reply at end of turn, cancel it on barge-in, log a backchannel, or
play the agent's own "mm-hmm". The reply itself (LLM → chunker → TTS) runs as a
separate task and fills the player's queue.

Two pacings, one code path:

* **live** (a microphone, or a file paced on the wall clock): the clock is monotonic;
  if the reply's audio is not ready when the speaker needs it, the speaker plays silence.
* **lockstep** (files, scripted users, replay): the clock is simulated, advanced one
  frame per tick; when the speaker needs audio that is still being computed, the loop
  waits for it. Compute is thus instantaneous on the session clock (plus
  ``engine.sim_response_delay_ms``) and every decision is reproducible.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from duplex.audio import CHUNK_SAMPLES, FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE
from duplex.audio.player import PlayedChunk, Player
from duplex.audio.sink import AudioSink, NullSink
from duplex.audio.source import AudioSource, pace
from duplex.audio.wav import level_db
from duplex.bus import EventBus
from duplex.clock import Clock, MonotonicClock, PerfTimer, SimClock
from duplex.config import Config
from duplex.errors import ConfigError, DuplexError
from duplex.events import (
    AgentPaused,
    AgentResumed,
    AgentState,
    AgentStopped,
    AgentTurnEnded,
    AgentTurnStarted,
    ASRFinal,
    ASRPartial,
    AudioPlayed,
    Backchannel,
    BackchannelCancelled,
    BargeIn,
    Decision,
    EndOfTurn,
    Event,
    Levels,
    Muted,
    Notice,
    OverlapIgnored,
    PolicyFrame,
    SessionEnded,
    StageError,
    StateChanged,
    TurnLatency,
    UserSpeechEnded,
    UserSpeechStarted,
)
from duplex.floor import AgentBackchannels, Overlap, UserTurn
from duplex.history import History
from duplex.listener import Listener, ListenerFrame
from duplex.reply import Reply, TurnTiming, Voice
from duplex.stages.factory import Models, PolicyFactory
from duplex.turn import PolicyInput, PolicyOutput, TurnPolicy

log = logging.getLogger(__name__)

FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
SPECULATE_AFTER_S = 0.096
"""Silence after which a speculative reply starts on the latest partial (before the VAD
hangover ends the run); the final transcript must match it at end of turn."""
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


@dataclass
class EngineStats:
    turns: int = 0
    barge_ins: int = 0
    backchannels: int = 0
    agent_backchannels: int = 0
    dropped_frames: int = 0
    frames: int = 0
    latencies: list[TurnLatency] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Floor:
    """What the policy thread needs to know of the loop's state, copied before the hop."""

    agent_speaking: bool
    agent_spoken: float
    user_turn_open: bool
    agent_paused: bool


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
        self.clock: Clock = clock or (MonotonicClock() if self.live else SimClock())
        self.history = history or History(cfg.llm.system_prompt, cfg.llm.history_turns)
        self.listener = Listener(models.vad, models.asr, cfg.vad, cfg.asr)
        self.player = Player(int(cfg.engine.max_pending_audio_s * SAMPLE_RATE))
        self.stats = EngineStats()
        self.aec = aec
        self._taps: list[AudioTap] = []
        self._mic_filters: list[MicFilter] = []
        self._listen_pool = ThreadPoolExecutor(1, thread_name_prefix="duplex-listen")
        self._llm_pool = ThreadPoolExecutor(1, thread_name_prefix="duplex-llm")
        self._tts_pool = ThreadPoolExecutor(1, thread_name_prefix="duplex-tts")
        self._voice = Voice(cfg.tts, models.tts, self._tts_pool, self._emit)
        bc = cfg.policy.predictor
        self._agent_bc = AgentBackchannels(self.player, models.backchannel_clip, bc.agent_backchannels,
                                           bc.agent_backchannel_min_gap_s)
        self._reply: Reply | None = None
        self._user: UserTurn | None = None
        """The open user turn (``None`` once the agent has it)."""
        self._prev_user: UserTurn | None = None
        """The last closed user turn: reopened if the user goes on before the reply plays."""
        self._overlap: Overlap | None = None
        self._stopping: tuple[int, float] | None = None
        """(turn, user onset) of a barge-in until the speaker is silent."""
        self._speech_end = (0.0, 0.0)
        """(when the user's last speech run ended, what its final ASR cost)."""
        self._turn = 0
        self._frame_index = 0
        self._state = AgentState.LISTENING
        self._muted = False
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

    def say(self, text: str) -> None:
        self._say_queue.append(text)

    def end(self, reason: str = "ended by command") -> None:
        self._ending = reason

    def use_policy(self, policy: TurnPolicy) -> None:
        """Switch to an already built policy (built off the loop by the caller)."""
        policy.reset()
        self.policy = policy
        self._emit(Notice(self.clock.now(), message=f"policy switched to {policy.name}"))

    def set_policy(self, name: str) -> None:
        """Build the policy called ``name`` with the injected factory and switch to it
        (replay re-issues a recorded switch this way, on its simulated clock)."""
        if self._policy_factory is None:
            raise ConfigError(f"cannot switch to policy {name!r}: this engine was built without a policy factory")
        self.use_policy(self._policy_factory(replace(self.cfg.policy, name=name)))  # type: ignore[arg-type]

    @property
    def state(self) -> AgentState:
        return self._state

    async def run(self) -> EngineStats:
        """Run until the input ends (then drain the agent's reply) or ``end()`` is called."""
        self.policy.reset()
        self.listener.reset()
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
            await self._drop_speculation()
            if self._reply is not None and not self._reply.finished:
                await self._end_reply(interrupted=True)
            dropped = int(getattr(self.source, "dropped", 0))
            self.stats.dropped_frames = dropped
            self._emit(SessionEnded(self.clock.now(), reason=ended_by, dropped_frames=dropped))
            for pool in (self._listen_pool, self._llm_pool, self._tts_pool):
                pool.shutdown(wait=False, cancel_futures=True)
        return self.stats

    async def _drain(self) -> None:
        silence = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        t0 = asyncio.get_running_loop().time()
        for k in range(int(DRAIN_LIMIT_S / FRAME_S)):
            if self.live:
                await pace(k, t0)
            idle = self._reply is None and self._user is None and not self.player.busy
            if idle and not self.listener.seg.speaking and not self._say_queue:
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
        t_start = self.clock.now()
        if self._say_queue and self._reply is None:
            await self._start_reply(fixed_text=self._say_queue.pop(0))

        # 1. Speaker: one chunk. In lockstep, wait for audio the reply is still computing.
        reply = self._reply
        if reply is not None and not self.live and not reply.cancelled and not self._paused:
            delay = self.cfg.engine.sim_response_delay_ms / 1000 if reply.first_played_t is None else 0.0
            if t_start >= reply.started_t + delay:
                await reply.wait_audio()
        played = self.player.pull()
        self.sink.write(played.audio)
        self._on_played(played, t_start)

        # 2. Listen and 3. decide, in the executor: the loop never runs a model.
        for flt in self._mic_filters:
            mic = flt(mic, played.audio)
        if self._muted:
            mic = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        for tap in self._taps:
            tap(t_start, mic, played.audio)
        r = self._reply
        floor = _Floor(self._agent_speaking(), (r.played_samples / SAMPLE_RATE) if r else 0.0,
                       self._user is not None, self._paused)
        policy = self.policy
        lf, x, out = await asyncio.get_running_loop().run_in_executor(
            self._listen_pool, self._hear, policy, mic, played.audio, floor, (i + 1) * FRAME_S if sim else None)
        poll = getattr(self.aec, "poll", None)
        report = poll(t_start) if poll is not None else None
        if report is not None:
            self._emit(report)
        if sim:
            self.clock.set(x.t)  # type: ignore[attr-defined]
        t = x.t
        await self._on_listener(lf, t)
        if self.cfg.engine.speculative and self._user is not None and self._reply is None:
            if lf.ended or (lf.user_speaking and lf.silence >= SPECULATE_AFTER_S and lf.partial):
                await self._speculate(lf)
        if out.probs:
            self._emit(PolicyFrame(t, policy=policy.name, decision=out.decision or Decision.CONTINUE,
                                   probs=tuple(sorted((k, round(float(v), 4)) for k, v in out.probs.items()))))
        self._emit(Levels(t, mic_db=round(level_db(x.mic), 2), out_db=round(level_db(played.audio), 2),
                          vad=round(lf.vad, 4)))
        await self._act(out, x, lf, t)
        await self._update_state(lf)

    def _hear(self, policy: TurnPolicy, mic: np.ndarray, playback: np.ndarray, floor: _Floor,
              t_sim: float | None) -> tuple[ListenerFrame, PolicyInput, PolicyOutput]:
        """Executor thread: echo cancellation, the listener, then the policy, on one frame."""
        raw_mic = mic
        if self.aec is not None:
            mic = self.aec.process(mic, playback)
        lf = self.listener.step(mic)
        x = PolicyInput(
            t=t_sim if t_sim is not None else self.clock.now(),
            mic=mic,
            playback=playback,
            vad=lf.vad,
            user_speaking=lf.user_speaking,
            speech_run=lf.speech_run,
            silence=lf.silence,
            agent_speaking=floor.agent_speaking,
            agent_spoken=floor.agent_spoken,
            partial=lf.partial,
            # What _on_listener is about to decide: an onset with the agent silent opens a turn.
            user_turn_open=floor.user_turn_open or (lf.started and not floor.agent_speaking),
            raw_mic=raw_mic if self.aec is not None else None,
            agent_paused=floor.agent_paused,
        )
        return lf, x, policy.step(x)

    # --- playback bookkeeping --------------------------------------------------------------

    def _on_played(self, played: PlayedChunk, t: float) -> None:
        if self._stopping is not None and played.n_voiced == 0:
            turn, onset = self._stopping
            self._emit(AgentStopped(t, turn=turn, latency=round(t - onset, 6)))
            self._stopping = None
        if played.turn is None:
            return
        reply = self._reply
        if played.kind == "reply" and reply is not None and played.turn == reply.turn:
            if reply.on_played(played, t):
                self._emit_latency(reply)
        self._emit(AudioPlayed(t, turn=played.turn, sample=self.player.cursor - CHUNK_SAMPLES,
                               n_samples=played.n_voiced, text=" ".join(played.words),
                               level=round(level_db(played.audio), 2)))

    def _agent_speaking(self) -> bool:
        r = self._reply
        return r is not None and not r.cancelled and r.first_played_t is not None

    @property
    def _paused(self) -> bool:
        return self._overlap is not None and self._overlap.paused_at is not None

    # --- listener events ------------------------------------------------------------------

    async def _on_listener(self, lf: ListenerFrame, t: float) -> None:
        if lf.started:
            await self._drop_speculation()
            onset = t - lf.speech_run
            speaking = self._agent_speaking()
            self._emit(UserSpeechStarted(onset, agent_speaking=speaking))
            if speaking:
                if self._overlap is None:
                    self._overlap = Overlap(onset)
                self._overlap.onset = onset
            else:
                if self._user is None and self._reply is not None and not self._reply.cancelled:
                    # The user went on while the agent was still thinking: the end of turn
                    # was premature. Drop the reply (nothing was heard), reopen the turn.
                    self._emit(Notice(t, message="user resumed before the reply started; reply dropped"))
                    await self._end_reply(interrupted=True)
                    if self.history.turns and self.history.turns[-1].role == "user":
                        self.history.turns.pop()
                        self._user = self._prev_user
                if self._user is None:
                    self._user = UserTurn(onset)
                self._user.utterances.add(lf.utterance)
        if lf.partial_changed and not lf.ended and lf.partial:
            self._emit(ASRPartial(t, text=lf.partial, utterance=lf.utterance))
        if lf.ended:
            self._emit(UserSpeechEnded(t, duration=round(lf.run_duration, 6)))
            self._on_final(lf.utterance, lf.final or "", lf.asr_compute, t, t - lf.silence)

    def _on_final(self, utterance: int, text: str, compute: float, t: float, speech_end_t: float) -> None:
        self._emit(ASRFinal(t, text=text, utterance=utterance, compute=round(compute, 6)))
        self._speech_end = (speech_end_t, compute)
        if self._user is not None:
            self._user.add_final(utterance, text)

    # --- decisions ------------------------------------------------------------------------

    async def _act(self, out: PolicyOutput, x: PolicyInput, lf: ListenerFrame, t: float) -> None:
        cut = self._agent_bc.cut_if_user_speaks(lf.silence)
        if cut is not None:
            self._emit(BackchannelCancelled(t, onset=cut))
        reply = self._reply
        if x.agent_speaking and reply is not None:
            await self._while_agent_speaks(out.decision, reply, x, lf, t)
        elif reply is not None or self._user is None:
            return  # thinking (a reply is being prepared), or nobody has spoken
        elif out.decision is Decision.END_OF_TURN:
            await self._end_of_turn(t, lf)
        elif out.decision is Decision.BACKCHANNEL_OPPORTUNITY and self._agent_bc.offer(t, x.silence):
            self.stats.agent_backchannels += 1
            self._emit(Backchannel(t, who="agent", text="mm-hmm", onset=t))

    async def _while_agent_speaks(self, d: Decision | None, reply: Reply, x: PolicyInput, lf: ListenerFrame,
                                  t: float) -> None:
        """Barge-in, backchannel, noise, or pause then decide (see :mod:`duplex.turn`)."""
        ov = self._overlap
        onset = ov.onset if ov is not None else t
        paused = ov is not None and ov.paused_at is not None
        timeout = paused and d not in (Decision.BARGE_IN, Decision.RESUME, Decision.BACKCHANNEL) \
            and ov.paused_for(t) >= self.cfg.engine.pause_timeout_s - 1e-9  # type: ignore[union-attr]
        if timeout:
            d = Decision.BARGE_IN if x.user_speaking else Decision.RESUME
        if d is Decision.PAUSE and not paused:
            self._overlap = ov = ov or Overlap(onset)
            ov.paused_at = t
            self.player.pause()
            self._emit(AgentPaused(t, turn=reply.turn, onset=onset, reaction=round(t - onset, 6), text=lf.partial))
        elif d is Decision.BARGE_IN:
            self.stats.barge_ins += 1
            self._emit(BargeIn(t, turn=reply.turn, onset=onset, reaction=round(t - onset, 6), text=lf.partial,
                               after_pause=paused))
            self._stopping = (reply.turn, onset)
            self._overlap = None
            # The overlapping utterance becomes the user's turn (its final, if out now, included).
            self._user = self._user or UserTurn(onset)
            self._user.utterances.add(lf.utterance)
            if lf.ended and lf.final:
                self._user.texts.append(lf.final)
            await self._end_reply(interrupted=True)
        elif paused and d in (Decision.RESUME, Decision.BACKCHANNEL):
            self._overlap = None
            self.player.resume()
            self._emit(AgentResumed(t, turn=reply.turn, paused_for=round(ov.paused_for(t), 6),  # type: ignore[union-attr]
                                    timeout=timeout, text=lf.partial))
            if d is Decision.BACKCHANNEL:
                self.stats.backchannels += 1
                self._emit(Backchannel(t, who="user", text=lf.partial, onset=onset))
        elif d is Decision.BACKCHANNEL:
            self.stats.backchannels += 1
            self._emit(Backchannel(t, who="user", text=lf.partial, onset=onset))
            self._overlap = None
        elif d is Decision.CONTINUE and ov is not None and not paused and not x.user_speaking:
            self._emit(OverlapIgnored(t, onset=onset, duration=round(t - onset, 6), text=lf.partial))
            self._overlap = None

    async def _speculate(self, lf: ListenerFrame) -> None:
        """The user went quiet: start the reply now, hold its audio until end of turn."""
        user = self._user
        assert user is not None
        text = user.draft(lf.partial if lf.user_speaking else "")
        if not text:
            return
        if user.speculation is not None:
            if user.speculation.user_text == text:
                return
            await self._drop_speculation()
        user.speculation = self._new_reply(self.history.preview(text, self._voice.instruction()), None,
                                           gated=True, user_text=text)
        user.speculation.start()

    async def _drop_speculation(self) -> None:
        spec = self._user.speculation if self._user is not None else None
        if spec is not None:
            self._user.speculation = None  # type: ignore[union-attr]
            await spec.cancel()

    async def _end_of_turn(self, t: float, lf: ListenerFrame) -> None:
        if self.listener.seg.speaking:  # the policy ended the turn inside the VAD hangover
            loop = asyncio.get_running_loop()
            final, compute = await loop.run_in_executor(self._listen_pool, self.listener.close_utterance)
            self._emit(UserSpeechEnded(t, duration=round(lf.speech_run, 6)))
            self._on_final(lf.utterance, final, compute, t, t - lf.silence)
        user, self._user = self._user, None
        assert user is not None
        self._prev_user = user
        speech_end_t, asr_compute = self._speech_end
        text = user.text
        self._emit(EndOfTurn(t, turn=self._turn + 1, delay=round(max(0.0, t - speech_end_t), 6), text=text))
        spec, user.speculation = user.speculation, None
        if not text:
            self._emit(Notice(t, message="end of turn with no words recognised; not replying"))
            if spec is not None:
                await spec.cancel()
            return
        language_changed = await self._voice.follow(self.models.asr, t)
        self.history.add_user(text)
        timing = TurnTiming(speech_end_t, t, asr_compute, PerfTimer.now())
        if spec is not None and spec.user_text == text and not spec.cancelled and not language_changed:
            self._turn += 1
            self.stats.turns += 1
            self._reply = spec
            spec.timing = timing
            spec.confirm(t)
            self._emit(AgentTurnStarted(t, turn=spec.turn, prompt=text))
            return
        if spec is not None:
            await spec.cancel()
        await self._start_reply(messages=self.history.messages(self._voice.instruction()), timing=timing)

    def _new_reply(self, messages: list[dict[str, str]], fixed_text: str | None, gated: bool = False,
                   user_text: str = "") -> Reply:
        return Reply(
            self._turn + 1, llm=self.models.llm, tts=self._voice.tts, messages=messages or [],
            fixed_text=fixed_text, player=self.player, clock=self.clock, emit=self._emit,
            llm_pool=self._llm_pool, tts_pool=self._tts_pool,
            first_chunk_min_words=self.cfg.tts.first_chunk_min_words, gated=gated, user_text=user_text,
        )

    async def _start_reply(self, messages: list[dict[str, str]] | None = None, fixed_text: str | None = None,
                           timing: TurnTiming | None = None) -> None:
        await self._drop_speculation()
        if fixed_text is not None:
            timing = TurnTiming(self.clock.now(), self.clock.now(), 0.0, PerfTimer.now())
        reply = self._new_reply(messages or [], fixed_text)
        reply.timing = timing
        self._turn += 1
        self.stats.turns += 1
        self._reply = reply
        prompt = messages[-1]["content"] if messages else (fixed_text or "")
        self._emit(AgentTurnStarted(self.clock.now(), turn=self._turn, prompt=prompt))
        reply.start()

    async def _end_reply(self, interrupted: bool) -> None:
        reply = self._reply
        if reply is None:
            return
        self._reply = None
        if self._paused:
            self._overlap = None
        self.player.resume()
        if interrupted:
            await reply.cancel()
        elif reply.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await reply.task
        heard = reply.heard_text
        self._emit(AgentTurnEnded(self.clock.now(), turn=reply.turn, interrupted=interrupted,
                                  generated=reply.generated.strip(), heard=heard))
        if reply.first_played_t is None:
            self._emit_latency(reply)
        if reply.first_played_t is not None or heard:
            self.history.add_agent(heard, interrupted=interrupted)

    # --- state and latency ------------------------------------------------------------------

    async def _update_state(self, lf: ListenerFrame) -> None:
        reply = self._reply
        if reply is not None and not self.live and reply.first_played_t is not None and not self.player.busy:
            # Lockstep: whether the reply is over must not depend on how fast the LLM is.
            await reply.wait_audio()
        if reply is not None and reply.finished and not reply.cancelled and not self._paused:
            await self._end_reply(interrupted=False)
            reply = None
        if self._muted:
            state = AgentState.MUTED
        elif reply is None or reply.cancelled:
            state = AgentState.LISTENING
        elif reply.first_played_t is None:
            state = AgentState.THINKING
        elif self._paused:
            state = AgentState.PAUSED
        else:
            state = AgentState.OVERLAP if lf.user_speaking else AgentState.SPEAKING
        if state is not self._state:
            self._state = state
            self._emit(StateChanged(self.clock.now(), state=state))

    def _emit_latency(self, reply: Reply) -> None:
        lat = reply.latency(self.clock.now(), self.live)
        if lat is not None:
            self.stats.latencies.append(lat)
            self._emit(lat)

    def _emit(self, ev: Event) -> None:
        self.bus.publish(ev)


__all__ = ["Engine", "EngineStats", "DuplexError", "StageError", "FRAME_MS"]

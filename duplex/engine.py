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
from duplex.audio.player import Player, Segment, word_timing
from duplex.audio.sink import AudioSink, NullSink
from duplex.audio.source import AudioSource
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
from duplex.history import History
from duplex.listener import Listener, ListenerFrame
from duplex.reply import Reply
from duplex.stages.factory import Models, PolicyFactory
from duplex.stages.tts import TTS
from duplex.turn import PolicyInput, PolicyOutput, TurnPolicy

log = logging.getLogger(__name__)

FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
SPECULATE_AFTER_S = 0.096
"""Silence after which a speculative reply starts on the latest partial (before the VAD
hangover ends the run); the final transcript must match it at end of turn."""
BACKCHANNEL_MIN_SILENCE_S = 0.096
"""The agent's own "mm-hmm" plays only after this much silence from the user (in a pause)."""
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
class _TurnTiming:
    speech_end_t: float
    eot_t: float
    asr_final: float
    eot_wall: float


@dataclass
class EngineStats:
    turns: int = 0
    barge_ins: int = 0
    backchannels: int = 0
    agent_backchannels: int = 0
    dropped_frames: int = 0
    frames: int = 0
    latencies: list[TurnLatency] = field(default_factory=list)


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
        self._taps: list[AudioTap] = []
        self._mic_filters: list[MicFilter] = []
        self.aec = aec
        self._listen_pool = ThreadPoolExecutor(1, thread_name_prefix="duplex-listen")
        self._llm_pool = ThreadPoolExecutor(1, thread_name_prefix="duplex-llm")
        self._tts_pool = ThreadPoolExecutor(1, thread_name_prefix="duplex-tts")
        self._reply: Reply | None = None
        self._spec: Reply | None = None
        """A speculative reply started when the user went quiet, held until end of turn."""
        self._turn = 0
        self._timing: _TurnTiming | None = None
        self._state = AgentState.LISTENING
        self._muted = False
        self._ending: str | None = None
        self._say_queue: list[str] = []
        self._user_turn_open = False
        self._turn_texts: list[str] = []
        self._utt_owner: dict[int, str] = {}
        self._overlap_onset: float | None = None
        self._overlap_decided = False
        self._paused_at: float | None = None
        """When the policy paused the reply (``Decision.PAUSE``); None when playing."""
        self._agent_bc_onset: float | None = None
        self._stopped_pending: tuple[int, float] | None = None
        self._last_agent_bc = -1e9
        self._frame_index = 0
        self._speech_end_t = 0.0
        self._last_turn_texts: list[str] = []
        self._lang: str | None = None
        self._tts: TTS = models.tts
        self._voices: dict[str, TTS] = {}
        self._last_asr_compute = 0.0

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
            self._listen_pool.shutdown(wait=False, cancel_futures=True)
            self._llm_pool.shutdown(wait=False, cancel_futures=True)
            self._tts_pool.shutdown(wait=False, cancel_futures=True)
        return self.stats

    async def _drain(self) -> None:
        from duplex.audio.source import pace

        silence = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        limit = int(DRAIN_LIMIT_S / FRAME_S)
        t0 = asyncio.get_running_loop().time()
        for k in range(limit):
            if self.live:
                await pace(k, t0)
            idle = self._reply is None and not self._user_turn_open and not self.player.busy
            if idle and not self.listener.seg.speaking and not self._say_queue:
                break
            await self._tick(silence)
            if self._ending:
                break

    # --- the tick -----------------------------------------------------------------------

    async def _tick(self, mic: np.ndarray) -> None:
        i = self._frame_index
        self._frame_index += 1
        self.stats.frames += 1
        if isinstance(self.clock, SimClock):
            self.clock.set(i * FRAME_S)
        t_start = self.clock.now()

        if self._say_queue and self._reply is None:
            await self._start_reply(fixed_text=self._say_queue.pop(0))

        # 1. Speaker: one chunk. In lockstep, wait for audio the reply is still computing.
        reply = self._reply
        if reply is not None and not self.live and not reply.cancelled and self._paused_at is None:
            delay = self.cfg.engine.sim_response_delay_ms / 1000 if reply.first_played_t is None else 0.0
            if t_start >= reply.started_t + delay:
                await reply.wait_audio()
        played = self.player.pull()
        self.sink.write(played.audio)
        self._on_played(played, t_start)

        # 2. Listener (+ 3. policy) in the executor: the loop never runs a model.
        for flt in self._mic_filters:
            mic = flt(mic, played.audio)
        if self._muted:
            mic = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        for tap in self._taps:
            tap(t_start, mic, played.audio)
        raw_mic = mic
        loop = asyncio.get_running_loop()
        if self.aec is not None:
            mic = await loop.run_in_executor(self._listen_pool, self.aec.process, mic, played.audio)
            poll = getattr(self.aec, "poll", None)
            report = poll(t_start) if poll is not None else None
            if report is not None:
                self._emit(report)
        lf: ListenerFrame = await loop.run_in_executor(self._listen_pool, self.listener.step, mic)
        if isinstance(self.clock, SimClock):
            self.clock.set((i + 1) * FRAME_S)
        t = self.clock.now()
        await self._on_listener(lf, t)
        if self.cfg.engine.speculative and self._user_turn_open and self._reply is None:
            if lf.ended or (lf.user_speaking and lf.silence >= SPECULATE_AFTER_S and lf.partial):
                await self._speculate(lf)

        agent_speaking = self._agent_speaking()
        x = PolicyInput(
            t=t,
            mic=mic,
            playback=played.audio,
            vad=lf.vad,
            user_speaking=lf.user_speaking,
            speech_run=lf.speech_run,
            silence=lf.silence,
            agent_speaking=agent_speaking,
            agent_spoken=(self._reply.played_samples / SAMPLE_RATE) if self._reply else 0.0,
            partial=lf.partial,
            user_turn_open=self._user_turn_open,
            raw_mic=raw_mic if self.aec is not None else None,
            agent_paused=self._paused_at is not None,
        )
        out: PolicyOutput = self.policy.step(x)
        if out.probs:
            self._emit(PolicyFrame(t, policy=self.policy.name, decision=out.decision or Decision.CONTINUE,
                                   probs=tuple(sorted((k, round(float(v), 4)) for k, v in out.probs.items()))))
        self._emit(Levels(t, mic_db=round(level_db(mic), 2), out_db=round(level_db(played.audio), 2), vad=round(lf.vad, 4)))
        await self._act(out, x, lf, t)
        await self._update_state(lf)

    # --- playback bookkeeping --------------------------------------------------------------

    def _on_played(self, played: object, t: float) -> None:
        from duplex.audio.player import PlayedChunk

        assert isinstance(played, PlayedChunk)
        if self._stopped_pending is not None and played.n_voiced == 0:
            turn, onset = self._stopped_pending
            self._emit(AgentStopped(t, turn=turn, latency=round(t - onset, 6)))
            self._stopped_pending = None
        if played.turn is None:
            return
        reply = self._reply
        if played.kind == "reply" and reply is not None and played.turn == reply.turn:
            if reply.first_played_t is None:
                reply.first_played_t = t
                self._emit_latency(reply, t)
            reply.played_samples += played.n_voiced
            reply.heard.extend(played.words)
        self._emit(AudioPlayed(t, turn=played.turn, sample=self.player.cursor - CHUNK_SAMPLES,
                               n_samples=played.n_voiced, text=" ".join(played.words),
                               level=round(level_db(played.audio), 2)))

    def _agent_speaking(self) -> bool:
        r = self._reply
        return r is not None and not r.cancelled and r.first_played_t is not None

    # --- listener events ------------------------------------------------------------------

    async def _on_listener(self, lf: ListenerFrame, t: float) -> None:
        if lf.started and self._spec is not None:
            await self._drop_speculation()
        if lf.started:
            onset = t - lf.speech_run
            speaking = self._agent_speaking()
            self._emit(UserSpeechStarted(onset, agent_speaking=speaking))
            if speaking:
                self._utt_owner[lf.utterance] = "overlap"
                self._overlap_onset = onset
                self._overlap_decided = False
            else:
                if self._reply is not None and not self._reply.cancelled:
                    # The user went on while the agent was still thinking: the end of turn
                    # was premature. Drop the reply (nothing was heard) and keep listening.
                    self._emit(Notice(t, message="user resumed before the reply started; reply dropped"))
                    await self._end_reply(interrupted=True)
                    if self.history.turns and self.history.turns[-1].role == "user":
                        self.history.turns.pop()
                    self._turn_texts = self._last_turn_texts
                self._utt_owner[lf.utterance] = "turn"
                self._user_turn_open = True
        if lf.partial_changed and not lf.ended and lf.partial:
            self._emit(ASRPartial(t, text=lf.partial, utterance=lf.utterance))
        if lf.ended:
            self._speech_end_t = t - lf.silence
            self._emit(UserSpeechEnded(t, duration=round(lf.run_duration, 6)))
            self._on_final(lf.utterance, lf.final or "", lf.asr_compute, t)
            if self._utt_owner.get(lf.utterance) == "overlap" and not self._overlap_decided:
                self._overlap_decided = True  # the policy gets one more frame to call it


    def _on_final(self, utterance: int, text: str, compute: float, t: float) -> None:
        self._emit(ASRFinal(t, text=text, utterance=utterance, compute=round(compute, 6)))
        self._last_asr_compute = compute
        if self._utt_owner.get(utterance) == "turn" and text:
            self._turn_texts.append(text)

    # --- decisions ------------------------------------------------------------------------

    async def _act(self, out: PolicyOutput, x: PolicyInput, lf: ListenerFrame, t: float) -> None:
        d = out.decision
        reply = self._reply
        self._watch_agent_backchannel(lf, t)
        if x.agent_speaking and reply is not None:
            onset = self._overlap_onset if self._overlap_onset is not None else t
            paused_at = self._paused_at
            timeout = False
            if paused_at is not None and d not in (Decision.BARGE_IN, Decision.RESUME, Decision.BACKCHANNEL) \
                    and t - paused_at >= self.cfg.engine.pause_timeout_s - 1e-9:
                d, timeout = (Decision.BARGE_IN if x.user_speaking else Decision.RESUME), True
            if d is Decision.PAUSE and paused_at is None:
                self._paused_at = t
                self.player.pause()
                self._emit(AgentPaused(t, turn=reply.turn, onset=onset, reaction=round(t - onset, 6), text=lf.partial))
                return
            if paused_at is not None and d in (Decision.RESUME, Decision.BACKCHANNEL):
                self._resume(t, reply.turn, timeout, lf.partial)
            if d is Decision.BARGE_IN:
                self.stats.barge_ins += 1
                self._emit(BargeIn(t, turn=reply.turn, onset=onset, reaction=round(t - onset, 6), text=lf.partial,
                                   after_pause=paused_at is not None))
                self._stopped_pending = (reply.turn, onset)
                self._utt_owner[lf.utterance] = "turn"
                if lf.ended and lf.final:
                    self._turn_texts.append(lf.final)
                self._user_turn_open = True
                self._overlap_onset = None
                await self._end_reply(interrupted=True)
            elif d is Decision.BACKCHANNEL:
                self.stats.backchannels += 1
                self._emit(Backchannel(t, who="user", text=lf.partial, onset=onset))
                self._overlap_onset = None
            elif d is Decision.RESUME and paused_at is not None:
                self._overlap_onset = None
            elif d is Decision.CONTINUE and self._overlap_onset is not None and not x.user_speaking \
                    and self._paused_at is None:
                self._emit(OverlapIgnored(t, onset=onset, duration=round(t - onset, 6), text=lf.partial))
                self._overlap_onset = None
            return
        if reply is not None:
            return  # thinking: a reply is being prepared
        if d is Decision.END_OF_TURN and self._user_turn_open:
            await self._end_of_turn(t, lf)
        elif d is Decision.BACKCHANNEL_OPPORTUNITY and self._user_turn_open \
                and x.silence >= BACKCHANNEL_MIN_SILENCE_S - 1e-9:
            self._agent_backchannel(t)

    def _resume(self, t: float, turn: int, timeout: bool, text: str) -> None:
        """End a pause without a barge-in: play on from the held sample."""
        paused_at, self._paused_at = self._paused_at, None
        self.player.resume()
        if paused_at is not None:
            self._emit(AgentResumed(t, turn=turn, paused_for=round(t - paused_at, 6), timeout=timeout, text=text))

    def _watch_agent_backchannel(self, lf: ListenerFrame, t: float) -> None:
        """The user spoke again within the agent's "mm-hmm": cut it (never over their words)."""
        if self._agent_bc_onset is None:
            return
        if self.player.playing_kind != "backchannel" and not self.player.busy:
            self._agent_bc_onset = None
        elif lf.silence == 0.0 and self.player.flush_kind("backchannel"):
            self._emit(BackchannelCancelled(t, onset=self._agent_bc_onset))
            self._agent_bc_onset = None

    async def _speculate(self, lf: ListenerFrame) -> None:
        """The user went quiet: start the reply now, hold its audio until end of turn."""
        parts = self._turn_texts + ([lf.partial] if lf.user_speaking and lf.partial else [])
        text = " ".join(parts).strip()
        if not text:
            return
        if self._spec is not None:
            if self._spec.user_text == text:
                return
            await self._drop_speculation()
        self._spec = self._new_reply(self.history.preview(text, self._language_instruction()), None,
                                     gated=True, user_text=text)
        self._spec.start()

    async def _drop_speculation(self) -> None:
        spec, self._spec = self._spec, None
        if spec is not None:
            await spec.cancel()

    async def _end_of_turn(self, t: float, lf: ListenerFrame) -> None:
        asr_compute = self._last_asr_compute
        if self.listener.seg.speaking:
            final, asr_compute = self.listener.close_utterance()
            self._emit(UserSpeechEnded(t, duration=round(lf.speech_run, 6)))
            self._speech_end_t = t - lf.silence
            self._on_final(lf.utterance, final, asr_compute, t)
        text = " ".join(self._turn_texts).strip()
        self._user_turn_open = False
        self._last_turn_texts = list(self._turn_texts)
        self._turn_texts = []
        delay = max(0.0, t - self._speech_end_t)
        self._emit(EndOfTurn(t, turn=self._turn + 1, delay=round(delay, 6), text=text))
        if not text:
            self._emit(Notice(t, message="end of turn with no words recognised; not replying"))
            return
        language_changed = await self._follow_language(t)
        self.history.add_user(text)
        self._timing = _TurnTiming(self._speech_end_t, t, asr_compute, PerfTimer.now())
        spec, self._spec = self._spec, None
        if spec is not None and spec.user_text == text and not spec.cancelled and not language_changed:
            self._turn += 1
            self.stats.turns += 1
            self._reply = spec
            spec.confirm(t)
            self._emit(AgentTurnStarted(t, turn=spec.turn, prompt=text))
            return
        if spec is not None:
            await spec.cancel()
        await self._start_reply(messages=self.history.messages(self._language_instruction()))

    def _language_instruction(self) -> str:
        from duplex.stages.multilingual import base_language, reply_language_instruction

        if not self._lang or base_language(self._lang) == base_language(self.cfg.tts.language):
            return ""
        return reply_language_instruction(self._lang)

    async def _follow_language(self, t: float) -> bool:
        """Reply in the language the recogniser heard, with a matching voice where there is one."""
        from duplex.events import LanguageDetected
        from duplex.stages.multilingual import voice_for_language

        asr = self.models.asr
        lang = getattr(asr, "language", None)
        if not lang or lang == self._lang:
            return False
        first = self._lang is None
        self._lang = lang
        self._emit(LanguageDetected(t, language=lang, probability=float(getattr(asr, "language_probability", 0.0) or 0.0)))
        voice_cfg, notice = voice_for_language(self.cfg.tts, lang)
        if voice_cfg is None:
            self._tts = self.models.tts
            if notice:
                self._emit(Notice(t, message=notice))
        elif voice_cfg == self.cfg.tts:
            self._tts = self.models.tts
        else:
            if lang not in self._voices:
                from duplex.stages.factory import make_tts

                loop = asyncio.get_running_loop()
                try:
                    self._voices[lang] = await loop.run_in_executor(self._tts_pool, make_tts, voice_cfg)
                except DuplexError as exc:
                    self._emit(StageError(t, stage="tts", message=f"no voice for {lang}: {exc}"))
                    self._voices[lang] = self.models.tts
            self._tts = self._voices[lang]
        return not (first and self._language_instruction() == "")

    def _new_reply(self, messages: list[dict[str, str]], fixed_text: str | None, gated: bool = False,
                   user_text: str = "") -> Reply:
        return Reply(
            self._turn + 1,
            llm=self.models.llm,
            tts=self._tts,
            messages=messages or [],
            fixed_text=fixed_text,
            player=self.player,
            clock=self.clock,
            emit=self._emit,
            llm_pool=self._llm_pool,
            tts_pool=self._tts_pool,
            first_chunk_min_words=self.cfg.tts.first_chunk_min_words,
            gated=gated,
            user_text=user_text,
        )

    async def _start_reply(self, messages: list[dict[str, str]] | None = None, fixed_text: str | None = None) -> None:
        if self._spec is not None:
            await self._drop_speculation()
        if fixed_text is not None:
            self._timing = _TurnTiming(self.clock.now(), self.clock.now(), 0.0, PerfTimer.now())
        reply = self._new_reply(messages or [], fixed_text)
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
        self._paused_at = None
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
            self._emit_latency(reply, None)
        if reply.first_played_t is not None or heard:
            self.history.add_agent(heard, interrupted=interrupted)

    def _agent_backchannel(self, t: float) -> None:
        cfg = self.cfg.policy.predictor
        clip = self.models.backchannel_clip
        if not cfg.agent_backchannels or clip is None or self.player.busy:
            return
        if t - self._last_agent_bc < cfg.agent_backchannel_min_gap_s:
            return
        self._last_agent_bc = t
        self._agent_bc_onset = t
        self.stats.agent_backchannels += 1
        self.player.enqueue(Segment(-1, clip, "mm-hmm", word_timing("mm-hmm", clip), kind="backchannel"))
        self._emit(Backchannel(t, who="agent", text="mm-hmm", onset=t))

    # --- state and latency ------------------------------------------------------------------

    async def _update_state(self, lf: ListenerFrame) -> None:
        reply = self._reply
        if reply is not None and not self.live and reply.first_played_t is not None and not self.player.busy:
            # Lockstep: whether the reply is over must not depend on how fast the LLM is.
            await reply.wait_audio()
        if reply is not None and reply.finished and not reply.cancelled and self._paused_at is None:
            await self._end_reply(interrupted=False)
            reply = None
        if self._muted:
            state = AgentState.MUTED
        elif reply is not None and not reply.cancelled:
            if reply.first_played_t is None:
                state = AgentState.THINKING
            elif self._paused_at is not None:
                state = AgentState.PAUSED
            else:
                state = AgentState.OVERLAP if lf.user_speaking else AgentState.SPEAKING
        else:
            state = AgentState.LISTENING
        if state is not self._state:
            self._state = state
            self._emit(StateChanged(self.clock.now(), state=state))

    def _emit_latency(self, reply: Reply, first_played_t: float | None) -> None:
        tm = self._timing
        if tm is None:
            return
        llm_ft = (reply.first_token_wall - reply.started_wall) if reply.first_token_wall else None
        tts_fa = (reply.first_audio_wall - reply.first_chunk_wall) if reply.first_audio_wall and reply.first_chunk_wall else None
        v2v: float | None = None
        if first_played_t is not None:
            if self.live:
                v2v = first_played_t - tm.speech_end_t
            elif reply.first_audio_wall is not None:
                # Lockstep: compute took no session time, so add the real compute still
                # outstanding at the decision (none if a speculative reply was ready):
                # what a live run on this machine would have waited.
                v2v = (tm.eot_t - tm.speech_end_t) + max(0.0, reply.first_audio_wall - tm.eot_wall)
        lat = TurnLatency(
            self.clock.now(), turn=reply.turn, end_of_turn=round(tm.eot_t - tm.speech_end_t, 6),
            asr_final=round(tm.asr_final, 6),
            llm_first_token=round(llm_ft, 6) if llm_ft is not None else None,
            tts_first_audio=round(tts_fa, 6) if tts_fa is not None else None,
            voice_to_voice=round(v2v, 6) if v2v is not None else None,
        )
        self.stats.latencies.append(lat)
        self._emit(lat)
        self._timing = None

    def _emit(self, ev: Event) -> None:
        self.bus.publish(ev)


__all__ = ["Engine", "EngineStats", "DuplexError", "StageError", "FRAME_MS"]

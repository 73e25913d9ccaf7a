"""Who has the floor, and what to do about it: the "act" step of the engine's tick.

:class:`Floor` owns the conversation's turn-taking state and every action on it. Each
tick the engine hands it, in order: the chunk the speaker played (:meth:`Floor.played`),
the listener frame (:meth:`Floor.heard`), the policy's decision (:meth:`Floor.decide`);
then :meth:`Floor.settle` ends a reply that has played out. Its per-turn state lives in
objects thrown away whole (Pipecat's lesson):

* :class:`UserTurn` — what the user said since the agent last took the turn: the
  utterances that belong to it, their final texts, and the speculative reply started
  on them. Opened at the user's onset, closed at end of turn (and kept as the previous
  turn, reopened if the user goes on before the reply plays).
* :class:`Overlap` — user speech while the agent speaks, from its onset until the
  policy decides; holds the policy's pause (``Decision.PAUSE``) while it lasts.
* :class:`~duplex.reply.Reply` — the agent's reply in flight (its heard text and latency).
* :class:`AgentBackchannels` — the agent's own "mm-hmm": only in a pause of the
  user's, rate-limited, cut if the user speaks again within it.

With the speaker gate on (``screen``), :meth:`Floor.decide` screens the policy's
decision first (:meth:`Floor.screen_decision`): speech the gate calls the agent's own
voice or another speaker cannot barge in, pause the reply or end a turn
(``OtherSpeaker`` says so instead); see "Who is speaking" in :mod:`duplex.turn`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from duplex.audio import CHUNK_SAMPLES, SAMPLE_RATE
from duplex.audio.player import PlayedChunk, Player, Segment, word_timing
from duplex.audio.wav import level_db
from duplex.clock import Clock, PerfTimer
from duplex.config import Config
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
    Notice,
    OtherSpeaker,
    OverlapIgnored,
    TurnLatency,
    UserSpeechEnded,
    UserSpeechStarted,
)
from duplex.history import History
from duplex.listener import Listener, ListenerFrame
from duplex.pacing import Pacing
from duplex.reply import Reply, TurnTiming, Voice
from duplex.stages.factory import Models
from duplex.turn import PolicyInput

SPECULATE_AFTER_S = 0.096
"""Silence after which a speculative reply starts on the latest partial (before the VAD
hangover ends the run); the final transcript must match it at end of turn."""
BACKCHANNEL_MIN_SILENCE_S = 0.096
"""The agent's own "mm-hmm" plays only after this much silence from the user (in a pause)."""


@dataclass
class UserTurn:
    onset: float
    utterances: set[int] = field(default_factory=set)
    texts: list[str] = field(default_factory=list)
    """Final texts of this turn's utterances, in order."""
    speculation: Reply | None = None
    """A reply started when the user went quiet, its audio held until end of turn."""
    others: set[int] = field(default_factory=set)
    """Utterances the speaker gate heard as another voice: a turn of only these gets no reply."""

    @property
    def text(self) -> str:
        return " ".join(self.texts).strip()

    def add_final(self, utterance: int, text: str) -> None:
        if utterance in self.utterances and text:
            self.texts.append(text)

    def draft(self, partial: str) -> str:
        """The text so far, with the partial of an utterance still running."""
        return " ".join(self.texts + ([partial] if partial else [])).strip()


@dataclass
class Overlap:
    onset: float
    paused_at: float | None = None
    """When the policy paused the reply; ``None`` while it plays."""
    held_barge_in: bool = False
    """The policy decided a barge-in before the speaker gate's first verdict: the reply is
    paused and the barge-in commits on that verdict (unless it is another voice)."""

    def paused_for(self, t: float) -> float:
        return 0.0 if self.paused_at is None else t - self.paused_at


class AgentBackchannels:
    """Plays the agent's "mm-hmm" clip at backchannel opportunities the policy reports."""

    def __init__(self, player: Player, clip: np.ndarray | None, enabled: bool, min_gap_s: float) -> None:
        self.player = player
        self.clip = clip if enabled else None
        self.min_gap_s = min_gap_s
        self._last = -1e9
        self.playing_since: float | None = None

    def offer(self, t: float, silence: float) -> bool:
        """Play the clip now if the user is in a pause, the speaker idle and the last one old enough."""
        if self.clip is None or self.player.busy or silence < BACKCHANNEL_MIN_SILENCE_S - 1e-9:
            return False
        if t - self._last < self.min_gap_s:
            return False
        self._last = self.playing_since = t
        self.player.enqueue(Segment(-1, self.clip, "mm-hmm", word_timing("mm-hmm", self.clip), kind="backchannel"))
        return True

    def cut_if_user_speaks(self, silence: float) -> float | None:
        """The user spoke again (this frame is speech) within the clip: cut it; returns its onset."""
        onset = self.playing_since
        if onset is None:
            return None
        if self.player.playing_kind != "backchannel" and not self.player.busy:
            self.playing_since = None
            return None
        if silence == 0.0 and self.player.flush_kind("backchannel"):
            self.playing_since = None
            return onset
        return None


@dataclass
class EngineStats:
    turns: int = 0
    barge_ins: int = 0
    backchannels: int = 0
    agent_backchannels: int = 0
    dropped_frames: int = 0
    frames: int = 0
    latencies: list[TurnLatency] = field(default_factory=list)


_SEG_KEY = re.compile(r"seg:(-?\d+):(\d+)")
"""The arrival key of one chunk of reply audio (:mod:`duplex.pacing`): turn, chunk index."""


@dataclass(frozen=True, slots=True)
class FloorView:
    """What the policy's thread needs of the floor, copied on the loop before the hop."""

    agent_speaking: bool
    agent_spoken: float
    user_turn_open: bool
    agent_paused: bool


class Floor:
    """The user turn, the overlap and the reply in flight, and every action on them."""

    def __init__(self, cfg: Config, models: Models, *, player: Player, listener: Listener, listen_pool: Executor,
                 clock: Clock, emit: Callable[[Event], None], history: History, stats: EngineStats,
                 pacing: Pacing | None = None) -> None:
        self.cfg, self.models, self.player, self.listener, self.clock = cfg, models, player, listener, clock
        self.history, self.stats = history, stats
        self.pacing = pacing
        """Paced runs (live, or a replay of one): when reply audio enters the player;
        ``None`` in lockstep."""
        self._emit = emit
        self._listen_pool = listen_pool
        self._llm_pool = ThreadPoolExecutor(1, thread_name_prefix="duplex-llm")
        self._tts_pool = ThreadPoolExecutor(1, thread_name_prefix="duplex-tts")
        self.voice = Voice(cfg.tts, models.tts, self._tts_pool, emit)
        bc = cfg.policy.predictor
        self.agent_bc = AgentBackchannels(player, models.backchannel_clip, bc.agent_backchannels,
                                          bc.agent_backchannel_min_gap_s)
        self.reply: Reply | None = None
        self.user: UserTurn | None = None
        """The open user turn (``None`` once the agent has it)."""
        self._prev_user: UserTurn | None = None
        self.overlap: Overlap | None = None
        self._stopping: tuple[int, float] | None = None
        """(turn, user onset) of a barge-in until the speaker is silent."""
        self._speech_end = (0.0, 0.0)
        """(when the user's last speech run ended, what its final ASR cost)."""
        self.turn = 0
        self.screen = False
        """The speaker gate is on: :meth:`screen_decision` screens every decision."""
        self._rejected_utterance = -1
        """The utterance an ``OtherSpeaker`` was emitted for (one per speech run)."""
        self._drop_turn = False
        self._utterance = -1
        """The listener's current (or last) utterance: the one still running when a reply
        plays out under the user's speech."""
        self._decoding: dict[int, float] = {}
        """Live runs: utterances whose run ended before their final was decoded (see
        :attr:`ListenerFrame.final_pending`), with when their speech ended."""
        self._unowned: tuple[int, str] | None = None
        """The last final of an utterance no user turn held when it came (said under the
        agent's voice): a barge-in committed after it came takes the words from here."""
        self._eot_waiting = False
        """The policy ended the turn while one of its finals was still decoding: the turn
        ends when the words arrive (unless the user speaks first)."""

    # --- what the tick asks ------------------------------------------------------------------

    @property
    def agent_speaking(self) -> bool:
        r = self.reply
        return r is not None and not r.cancelled and r.first_played_t is not None

    @property
    def paused(self) -> bool:
        return self.overlap is not None and self.overlap.paused_at is not None

    @property
    def lockstep(self) -> bool:
        """Compute takes no session time: the loop waits for the reply's audio."""
        return self.pacing is None

    @property
    def idle(self) -> bool:
        return self.reply is None and self.user is None and not self.player.busy

    def view(self) -> FloorView:
        r = self.reply
        return FloorView(self.agent_speaking, (r.played_samples / SAMPLE_RATE) if r else 0.0,
                         self.user is not None, self.paused)

    async def before_speaker(self, t: float) -> None:
        """Lockstep: wait for audio the reply is still computing (after the modelled delay)."""
        reply = self.reply
        if reply is not None and not reply.cancelled and not self.paused:
            delay = self.cfg.engine.sim_response_delay_ms / 1000 if reply.first_played_t is None else 0.0
            if t >= reply.started_t + delay:
                await reply.wait_audio()

    async def release_audio(self) -> None:
        """Paced runs, before the speaker's pull: reply audio computed since the last pull
        enters the player now (live: all of it, logged; replaying a live session: what the
        recording had by this frame, waited for), and so does the news that the reply
        has produced everything."""
        pacing, reply = self.pacing, self.reply
        if pacing is None:
            return
        if not pacing.replaying:
            for seg in self.player.release():
                pacing.note(f"seg:{seg.turn}:{seg.index}")
            if reply is not None and reply.produced_all and not reply.produced_seen:
                reply.produced_seen = True
                pacing.note(f"done:{reply.turn}")
            return
        for key in pacing.due_with("seg:"):
            m = _SEG_KEY.fullmatch(key)
            if m is None:  # a hand-edited session: nothing to release
                continue
            t, i = int(m[1]), int(m[2])
            while reply is not None and reply.turn == t and not reply.cancelled and not reply.produced_all \
                    and not reply.gated and not self.player.is_staged(t, i):
                reply.audio_event.clear()
                await reply.audio_event.wait()
            if self.player.release(t, i):
                pacing.note(key)
        if reply is not None and not reply.produced_seen and pacing.due(f"done:{reply.turn}"):
            while not reply.produced_all and not reply.cancelled:
                reply.audio_event.clear()
                await reply.audio_event.wait()
            reply.produced_seen = True
            pacing.note(f"done:{reply.turn}")
            self.player.release(None)  # nothing is left staged in a faithful replay

    async def close(self) -> None:
        """End of the session: drop what is in flight, let the model threads go."""
        await self._drop_speculation()
        if self.reply is not None and not self.reply.finished:
            await self.end_reply(interrupted=True)
        for pool in (self._llm_pool, self._tts_pool):
            pool.shutdown(wait=False, cancel_futures=True)

    # --- the speaker -------------------------------------------------------------------------

    def played(self, played: PlayedChunk, t: float) -> None:
        if self._stopping is not None and played.n_voiced == 0:
            turn, onset = self._stopping
            self._emit(AgentStopped(t, turn=turn, latency=round(t - onset, 6)))
            self._stopping = None
        if played.turn is None:
            return
        reply = self.reply
        if played.kind == "reply" and reply is not None and played.turn == reply.turn:
            if reply.on_played(played, t):
                self._emit_latency(reply)
        self._emit(AudioPlayed(t, turn=played.turn, sample=self.player.cursor - CHUNK_SAMPLES,
                               n_samples=played.n_voiced, text=" ".join(played.words),
                               level=round(level_db(played.audio), 2)))

    # --- the listener ------------------------------------------------------------------------

    async def heard(self, lf: ListenerFrame, t: float) -> None:
        self._utterance = lf.utterance
        if lf.started:
            self._eot_waiting = False  # the user went on: the turn did not end
            await self._drop_speculation()
            onset = t - lf.speech_run
            speaking = self.agent_speaking
            self._emit(UserSpeechStarted(onset, agent_speaking=speaking))
            if speaking:
                if self.overlap is None:
                    self.overlap = Overlap(onset)
                self.overlap.onset = onset
            else:
                if self.user is None and self.reply is not None and not self.reply.cancelled:
                    # The user went on while the agent was still thinking: the end of turn
                    # was premature. Drop the reply (nothing was heard), reopen the turn.
                    self._emit(Notice(t, message="user resumed before the reply started; reply dropped"))
                    await self.end_reply(interrupted=True)
                    if self.history.turns and self.history.turns[-1].role == "user":
                        self.history.turns.pop()
                        self.user = self._prev_user
                if self.user is None:
                    self.user = UserTurn(onset)
                self.user.utterances.add(lf.utterance)
        if lf.partial_changed and not lf.ended and lf.partial:
            self._emit(ASRPartial(t, text=lf.partial, utterance=lf.utterance))
        if lf.ended:
            self._emit(UserSpeechEnded(t, duration=round(lf.run_duration, 6)))
            if lf.final_pending:
                self._decoding[lf.utterance] = t - lf.silence
                self._speech_end = (t - lf.silence, 0.0)
            else:
                self._final(lf.utterance, lf.final or "", lf.asr_compute, t, t - lf.silence)
        if lf.late_final is not None:
            utt, text, compute = lf.late_final
            speech_end_t = self._decoding.pop(utt, t)
            self._final(utt, text, compute, t, speech_end_t, latest=utt == lf.utterance)
        if self.cfg.engine.speculative and self.user is not None and self.reply is None and not self._words_pending():
            if lf.ended or (lf.late_final is not None and not lf.user_speaking) or \
                    (lf.user_speaking and lf.silence >= SPECULATE_AFTER_S and (lf.partial or lf.draft)):
                await self._speculate(lf)
        if self._eot_waiting and not self._words_pending() and self.user is not None and self.reply is None:
            self._eot_waiting = False
            await self._end_of_turn(t, lf)

    def _words_pending(self) -> bool:
        """A final of the open user turn is still decoding (live runs)."""
        user = self.user
        return user is not None and any(u in user.utterances for u in self._decoding)

    def _final(self, utterance: int, text: str, compute: float, t: float, speech_end_t: float,
               latest: bool = True) -> None:
        self._emit(ASRFinal(t, text=text, utterance=utterance, compute=round(compute, 6)))
        if latest:
            self._speech_end = (speech_end_t, compute)
        if self.user is not None and utterance in self.user.utterances:
            self.user.add_final(utterance, text)
        else:
            self._unowned = (utterance, text)

    # --- decisions ---------------------------------------------------------------------------

    def screen_decision(self, d: Decision | None, x: PolicyInput, lf: ListenerFrame, t: float) -> Decision | None:
        """The policy's decision, screened by who is speaking (the speaker gate's verdict in ``x``).

        While the agent speaks: a barge-in or pause on speech that is confidently the
        agent's own voice or another speaker's becomes ``CONTINUE`` (``RESUME`` if paused),
        and ``OtherSpeaker`` is emitted once for the run; a barge-in before the first
        verdict is held (a pause) until it comes or the speech ends. While the user has
        the floor: an end of turn whose last speech was another voice drops the turn.
        """
        if not self.screen:
            return d
        rejected = x.speaker in ("agent", "other_speaker") and \
            x.speaker_confidence >= self.cfg.speaker.reject_confidence - 1e-9
        ov = self.overlap
        if x.agent_speaking and self.reply is not None:
            held = ov is not None and ov.held_barge_in
            if rejected:
                if d in (Decision.BARGE_IN, Decision.PAUSE) or held or self.paused:
                    suppressed = Decision.BARGE_IN if held else (d if d in (Decision.BARGE_IN, Decision.PAUSE)
                                                                 else Decision.PAUSE)
                    self._other_speaker(x, lf, t, suppressed, ov.onset if ov is not None else t)
                    if ov is not None:
                        ov.held_barge_in = False
                    return Decision.RESUME if self.paused else Decision.CONTINUE
                return d
            if held:
                assert ov is not None
                if x.speaker is not None or not x.user_speaking:
                    ov.held_barge_in = False  # a verdict (the user's, or unsure), or the speech ended
                    return Decision.BARGE_IN
                return Decision.CONTINUE
            hold = self.cfg.speaker.hold_barge_in
            if d is Decision.BARGE_IN and hold != "off" and x.user_speaking and x.speaker is None:
                self.overlap = ov = ov or Overlap(t - lf.speech_run)
                ov.held_barge_in = True
                return Decision.PAUSE if hold == "pause" and not self.paused else Decision.CONTINUE
            return d
        user = self.user
        if user is not None and self.reply is None and rejected and (lf.ended or d is Decision.END_OF_TURN):
            user.others.add(lf.utterance)
            if d is Decision.END_OF_TURN and user.utterances <= user.others:
                self._other_speaker(x, lf, t, d, user.onset)
                self._drop_turn = True
                return None
        return d

    def _other_speaker(self, x: PolicyInput, lf: ListenerFrame, t: float, suppressed: Decision,
                       onset: float) -> None:
        if lf.utterance == self._rejected_utterance and suppressed is not Decision.END_OF_TURN:
            return
        self._rejected_utterance = lf.utterance
        self._emit(OtherSpeaker(t, label=x.speaker or "other_speaker", suppressed=suppressed.value,
                                onset=round(onset, 6), sim_user=x.speaker_sim_user,
                                sim_agent=x.speaker_sim_agent, confidence=x.speaker_confidence))

    async def decide(self, decision: Decision | None, x: PolicyInput, lf: ListenerFrame, t: float) -> None:
        decision = self.screen_decision(decision, x, lf, t)
        if self._drop_turn:
            # The whole turn was another voice's: no reply, and the history does not keep it.
            self._drop_turn = False
            await self._drop_speculation()
            self.user = None
            return
        cut = self.agent_bc.cut_if_user_speaks(lf.silence)
        if cut is not None:
            self._emit(BackchannelCancelled(t, onset=cut))
        reply = self.reply
        if x.agent_speaking and reply is not None:
            await self._while_agent_speaks(decision, reply, x, lf, t)
        elif reply is not None or self.user is None:
            return  # thinking (a reply is being prepared), or nobody has spoken
        elif decision is Decision.END_OF_TURN:
            await self._end_of_turn(t, lf)
        elif decision is Decision.BACKCHANNEL_OPPORTUNITY and not self._eot_waiting and \
                self.agent_bc.offer(t, x.silence):
            self.stats.agent_backchannels += 1
            self._emit(Backchannel(t, who="agent", text="mm-hmm", onset=t))

    async def _while_agent_speaks(self, d: Decision | None, reply: Reply, x: PolicyInput, lf: ListenerFrame,
                                  t: float) -> None:
        """Barge-in, backchannel, noise, or pause then decide (see :mod:`duplex.turn`)."""
        ov = self.overlap
        # A sound the policy let pass (a backchannel) ends its overlap; if the user talks on
        # in the same speech run and the policy then stops the agent, the user has been
        # talking since the run began: that is the onset (not this frame).
        onset = ov.onset if ov is not None else (t - lf.speech_run if x.user_speaking else t)
        paused_for = ov.paused_for(t) if ov is not None and ov.paused_at is not None else None
        timeout = paused_for is not None and paused_for >= self.cfg.engine.pause_timeout_s - 1e-9 \
            and d not in (Decision.BARGE_IN, Decision.RESUME, Decision.BACKCHANNEL)
        if timeout:
            d = Decision.BARGE_IN if x.user_speaking else Decision.RESUME
        if d is Decision.PAUSE and paused_for is None:
            self.overlap = ov = ov or Overlap(onset)
            ov.paused_at = t
            self.player.pause()
            self._emit(AgentPaused(t, turn=reply.turn, onset=onset, reaction=round(t - onset, 6), text=lf.partial))
        elif d is Decision.BARGE_IN:
            self.stats.barge_ins += 1
            self._emit(BargeIn(t, turn=reply.turn, onset=onset, reaction=round(t - onset, 6), text=lf.partial,
                               was_paused=paused_for is not None))
            self._stopping = (reply.turn, onset)
            self.overlap = None
            # The overlapping utterance becomes the user's turn (its final, if out now, included).
            self.user = self.user or UserTurn(onset)
            self.user.utterances.add(lf.utterance)
            if lf.ended and lf.final:
                self.user.texts.append(lf.final)
            elif self._unowned is not None and self._unowned[0] == lf.utterance and lf.utterance not in self._decoding:
                # The run ended and its words came before the policy committed.
                self.user.add_final(*self._unowned)
                self._unowned = None
            await self.end_reply(interrupted=True)
        elif paused_for is not None and d in (Decision.RESUME, Decision.BACKCHANNEL):
            self.overlap = None
            self.player.resume()
            self._emit(AgentResumed(t, turn=reply.turn, paused_for=round(paused_for, 6), timeout=timeout,
                                    text=lf.partial))
            if d is Decision.BACKCHANNEL:
                self.stats.backchannels += 1
                self._emit(Backchannel(t, who="user", text=lf.partial, onset=onset))
        elif d is Decision.BACKCHANNEL:
            self.stats.backchannels += 1
            self._emit(Backchannel(t, who="user", text=lf.partial, onset=onset))
            self.overlap = None
        elif d is Decision.CONTINUE and ov is not None and paused_for is None and not x.user_speaking:
            self._emit(OverlapIgnored(t, onset=onset, duration=round(t - onset, 6), text=lf.partial))
            self.overlap = None

    async def _speculate(self, lf: ListenerFrame) -> None:
        """The user went quiet: start the reply now, hold its audio until end of turn."""
        user = self.user
        assert user is not None
        # The ASR's final decoded ahead, once ready, is what the turn's text will be; until
        # then the streaming partial (a reply started on it is redone if the final differs).
        text = user.draft((lf.draft if lf.draft is not None else lf.partial) if lf.user_speaking else "")
        if not text:
            return
        if user.speculation is not None:
            if user.speculation.user_text == text:
                return
            await self._drop_speculation()
        user.speculation = self._new_reply(self.history.preview(text, self.voice.instruction()), None,
                                           gated=True, user_text=text)
        user.speculation.start()

    async def _drop_speculation(self) -> None:
        user = self.user
        if user is not None and user.speculation is not None:
            spec, user.speculation = user.speculation, None
            await spec.cancel()

    async def _end_of_turn(self, t: float, lf: ListenerFrame) -> None:
        if self.listener.seg.speaking:  # the policy ended the turn inside the VAD hangover
            loop = asyncio.get_running_loop()
            final, compute = await loop.run_in_executor(self._listen_pool, self.listener.close_utterance)
            self._emit(UserSpeechEnded(t, duration=round(lf.speech_run, 6)))
            if final is None:
                self._decoding[lf.utterance] = t - lf.silence
                self._speech_end = (t - lf.silence, 0.0)
            else:
                self._final(lf.utterance, final, compute, t, t - lf.silence)
        if self._words_pending():
            # Live: the words are still decoding; the turn ends on the frame they arrive.
            self._eot_waiting = True
            return
        user, self.user = self.user, None
        assert user is not None
        self._prev_user = user
        speech_end_t, asr_compute = self._speech_end
        text = user.text
        self._emit(EndOfTurn(t, turn=self.turn + 1, delay=round(max(0.0, t - speech_end_t), 6), text=text))
        spec, user.speculation = user.speculation, None
        if not text:
            self._emit(Notice(t, message="end of turn with no words recognised; not replying"))
            if spec is not None:
                await spec.cancel()
            return
        language_changed = await self.voice.follow(self.models.asr, t)
        self.history.add_user(text)
        timing = TurnTiming(speech_end_t, t, asr_compute, PerfTimer.now())
        if spec is not None and spec.user_text == text and not spec.cancelled and not language_changed:
            self.turn += 1
            self.stats.turns += 1
            self.reply = spec
            spec.timing = timing
            spec.confirm(t)
            self._emit(AgentTurnStarted(t, turn=spec.turn, prompt=text))
            return
        if spec is not None:
            await spec.cancel()
        await self.start_reply(messages=self.history.messages(self.voice.instruction()), timing=timing)

    # --- replies -----------------------------------------------------------------------------

    def _new_reply(self, messages: list[dict[str, str]], fixed_text: str | None, gated: bool = False,
                   user_text: str = "") -> Reply:
        return Reply(
            self.turn + 1, llm=self.models.llm, tts=self.voice.tts, messages=messages or [],
            fixed_text=fixed_text, player=self.player, clock=self.clock, emit=self._emit,
            llm_pool=self._llm_pool, tts_pool=self._tts_pool,
            first_chunk_min_words=self.cfg.tts.first_chunk_min_words, gated=gated, user_text=user_text,
        )

    async def start_reply(self, messages: list[dict[str, str]] | None = None, fixed_text: str | None = None,
                          timing: TurnTiming | None = None) -> None:
        await self._drop_speculation()
        if fixed_text is not None:
            timing = TurnTiming(self.clock.now(), self.clock.now(), 0.0, PerfTimer.now())
        reply = self._new_reply(messages or [], fixed_text)
        reply.timing = timing
        self.turn += 1
        self.stats.turns += 1
        self.reply = reply
        prompt = messages[-1]["content"] if messages else (fixed_text or "")
        self._emit(AgentTurnStarted(self.clock.now(), turn=self.turn, prompt=prompt))
        reply.start()

    async def end_reply(self, interrupted: bool) -> None:
        reply = self.reply
        if reply is None:
            return
        self.reply = None
        # Overlap is speech under *this* reply: undecided (held barge-in included), it must
        # not carry into the next one.
        self.overlap = None
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

    async def settle(self, user_speaking: bool) -> AgentState:
        """End a reply that has played out; the agent's state after this tick (unmuted)."""
        reply = self.reply
        if reply is not None and self.lockstep and reply.first_played_t is not None and not self.player.busy:
            # Lockstep: whether the reply is over must not depend on how fast the LLM is.
            await reply.wait_audio()
        if reply is not None and reply.finished and not reply.cancelled and not self.paused:
            ov = self.overlap
            await self.end_reply(interrupted=False)
            reply = None
            if ov is not None and user_speaking and self.user is None:
                # The user was still talking when the reply played out: what they are saying
                # is their turn now (it was undecided while the agent spoke).
                self.user = UserTurn(ov.onset)
                self.user.utterances.add(self._utterance)
        if reply is None or reply.cancelled:
            return AgentState.LISTENING
        if reply.first_played_t is None:
            return AgentState.THINKING
        if self.paused:
            return AgentState.PAUSED
        return AgentState.OVERLAP if user_speaking else AgentState.SPEAKING

    def _emit_latency(self, reply: Reply) -> None:
        lat = reply.latency(self.clock.now(), not self.lockstep)
        if lat is not None:
            self.stats.latencies.append(lat)
            self._emit(lat)

"""One agent reply: LLM tokens → text chunks → TTS → the player's queue.

All per-turn state lives in a :class:`Reply`, which the engine throws away whole:
what it generated, what the listener heard (``heard``, from the play cursor) and its
latency accounting (:class:`TurnTiming`, turned into one ``TurnLatency``).
Cancellation (barge-in) sets the LLM's cancel flag, cancels and awaits the producing
task, and flushes this turn's audio from the player; the thread computing the
current token or sentence finishes on its own and its result is dropped.

:class:`Voice` picks the voice and language of the next reply: it follows the language
the recogniser heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from duplex.audio.player import PlayedChunk, Player, Segment, word_timing
from duplex.clock import Clock, PerfTimer
from duplex.config import TTSConfig
from duplex.errors import DuplexError, LLMError, TTSError
from duplex.events import Event, LanguageDetected, LLMToken, Notice, StageError, TextToTTS, TurnLatency
from duplex.stages.chunker import TextChunker
from duplex.stages.factory import make_tts
from duplex.stages.llm import LLM, Message
from duplex.stages.multilingual import base_language, reply_language_instruction, voice_for_language
from duplex.stages.tts import TTS

log = logging.getLogger(__name__)

_DONE = object()

DEFAULT_STALL_S = 10.0
"""How long a reply waits for the LLM's next piece when the backend names no
``read_timeout_s`` (the config's default)."""
APOLOGY = "Sorry, I lost my train of thought."
"""What the agent says when its reply failed before any of it was spoken (if the TTS
still works; otherwise it stays silent). It keeps listening either way."""


def stall_timeout(llm: object) -> float:
    """Seconds without a piece after which a reply gives up on ``llm``: its config's
    ``llm.read_timeout_s`` (the same bound the HTTP backend puts on every read)."""
    t = getattr(getattr(llm, "cfg", None), "read_timeout_s", None)
    return float(t) if isinstance(t, (int, float)) and t > 0 else DEFAULT_STALL_S


@dataclass
class TurnTiming:
    """Where a reply's latency starts: the user's end of speech and the end-of-turn decision."""

    speech_end_t: float
    eot_t: float
    asr_final: float
    eot_wall: float


class Reply:
    def __init__(
        self,
        turn: int,
        *,
        llm: LLM | None,
        tts: TTS,
        messages: Sequence[Message] = (),
        fixed_text: str | None = None,
        player: Player,
        clock: Clock,
        emit: Callable[[Event], None],
        llm_pool: Executor,
        tts_pool: Executor,
        first_chunk_min_words: int = 2,
        gated: bool = False,
        user_text: str = "",
    ) -> None:
        self.turn = turn
        self.llm = llm
        self.tts = tts
        self.messages = list(messages)
        self.fixed_text = fixed_text
        self.player = player
        self.clock = clock
        self.emit = emit
        self.llm_pool = llm_pool
        self.tts_pool = tts_pool
        self.chunker = TextChunker(first_chunk_min_words)
        self.cancel_flag = threading.Event()
        self.generated = ""
        self.heard: list[str] = []
        self.started_wall = PerfTimer.now()
        self.started_t = clock.now()
        self.first_token_wall: float | None = None
        self.first_chunk_wall: float | None = None
        self.first_audio_wall: float | None = None
        self.first_played_t: float | None = None
        self.played_samples = 0
        self.audio_event = asyncio.Event()
        self.produced_all = False
        self.produced_seen = False
        """Paced runs (the player stages audio, :mod:`duplex.pacing`): the reply counts as
        produced only from the frame the engine saw it so, not the instant its task ended."""
        self.cancelled = False
        self.error: str | None = None
        self._chunks = 0
        self.task: asyncio.Task[None] | None = None
        self.gated = gated
        """A speculative reply: computed while the user may still go on, its audio held
        back until :meth:`confirm` (end of turn) or dropped by :meth:`cancel`."""
        self.user_text = user_text
        self._held: list[Segment] = []
        self.timing: TurnTiming | None = None
        """Set when the reply answers a turn (or a ``say``); spent by :meth:`latency`."""

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.create_task(self._produce(), name=f"reply-{self.turn}")

    @property
    def finished(self) -> bool:
        """All audio produced and played (or cancelled)."""
        produced = self.produced_seen if self.player.staging else self.produced_all
        return self.cancelled or (produced and not self._has_audio_in_player())

    def _has_audio_in_player(self) -> bool:
        return self.player.busy

    async def cancel(self) -> None:
        """Stop everything of this reply now: LLM, TTS and queued audio."""
        self.cancelled = True
        self.cancel_flag.set()
        self.player.flush(self.turn)
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def confirm(self, clock_now: float) -> None:
        """The end of turn came and the prompt still holds: release the held audio."""
        self.gated = False
        self.started_t = clock_now
        for seg in self._held:
            self.player.enqueue(seg)
        self._held.clear()
        self.audio_event.set()

    async def wait_audio(self) -> None:
        """Wait until this reply queued more audio or finished producing (lockstep mode)."""
        while not self.gated and not self.player.busy and not self.produced_all and not self.cancelled:
            self.audio_event.clear()
            await self.audio_event.wait()

    # --- production ------------------------------------------------------------------------

    async def _produce(self) -> None:
        try:
            if self.fixed_text is not None:
                for chunk in self.chunker.push(self.fixed_text + " ") + self.chunker.flush():
                    await self._speak(chunk)
                self.generated = self.fixed_text
            else:
                await self._from_llm()
        except asyncio.CancelledError:
            raise
        except DuplexError as exc:
            self.error = str(exc)
            self.cancel_flag.set()  # the LLM's thread stops: nothing more of this reply is spoken
            self.emit(StageError(self.clock.now(), stage=_stage_of(exc), message=str(exc)))
            if self._chunks == 0 and not isinstance(exc, TTSError):
                await self._apologise()
        finally:
            self.produced_all = True
            self.audio_event.set()

    async def _from_llm(self) -> None:
        assert self.llm is not None
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[object] = asyncio.Queue()
        llm, messages, flag = self.llm, self.messages, self.cancel_flag

        def worker() -> None:
            try:
                for piece in llm.stream(messages, flag):
                    loop.call_soon_threadsafe(q.put_nowait, piece)
                    if flag.is_set():
                        break
            except Exception as exc:  # surfaces in the loop as a StageError, never lost
                loop.call_soon_threadsafe(q.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(q.put_nowait, _DONE)

        loop.run_in_executor(self.llm_pool, worker)
        stall_s = stall_timeout(llm)
        while True:
            try:
                item = await asyncio.wait_for(q.get(), stall_s)
            except TimeoutError:
                # A stalled model cannot be interrupted (llama.cpp is in C): stop waiting
                # for it; its thread stops at the next token it yields, if ever.
                flag.set()
                raise LLMError(f"the LLM sent nothing for {stall_s:g} s (llm.read_timeout_s); "
                               "reply abandoned") from None
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise LLMError(f"LLM failed: {item}") from item
            piece = str(item)
            if self.first_token_wall is None:
                self.first_token_wall = PerfTimer.now()
            self.generated += piece
            self.emit(LLMToken(self.clock.now(), turn=self.turn, text=piece))
            for chunk in self.chunker.push(piece):
                await self._speak(chunk)
        for chunk in self.chunker.flush():
            await self._speak(chunk)

    async def _speak(self, text: str) -> None:
        if self.cancelled:
            return
        index = self._chunks
        self.emit(TextToTTS(self.clock.now(), turn=self.turn, index=index, text=text))
        self._chunks += 1
        if self.first_chunk_wall is None:
            self.first_chunk_wall = PerfTimer.now()
        loop = asyncio.get_running_loop()
        tts = self.tts

        def synth() -> np.ndarray:
            parts = list(tts.synthesize(text))
            return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

        try:
            audio = await loop.run_in_executor(self.tts_pool, synth)
        except TTSError:
            raise
        except Exception as exc:  # piper/onnxruntime errors are untyped
            raise TTSError(f"TTS failed on {text!r}: {exc}") from exc
        if self.cancelled or audio.size == 0:
            return
        if self.first_audio_wall is None:
            self.first_audio_wall = PerfTimer.now()
        seg = Segment(self.turn, audio, text, word_timing(text, audio), index=index)
        if self.gated:
            self._held.append(seg)
            return
        while not self.player.has_room():
            await asyncio.sleep(0.01)
        self.player.enqueue(seg)
        self.audio_event.set()

    async def _apologise(self) -> None:
        """The reply failed before a word of it was spoken: say so briefly (spoken and
        recorded like any reply), or stay silent if the voice fails too."""
        if self.cancelled:
            return
        try:
            await self._speak(APOLOGY)
        except TTSError as exc:
            self.emit(StageError(self.clock.now(), stage="tts", message=str(exc)))

    # --- accounting ------------------------------------------------------------------------

    def on_played(self, played: PlayedChunk, t: float) -> bool:
        """Account a chunk of this reply the speaker played; True on the first one."""
        first = self.first_played_t is None
        if first:
            self.first_played_t = t
        self.played_samples += played.n_voiced
        self.heard.extend(played.words)
        return first

    def latency(self, now: float, live: bool) -> TurnLatency | None:
        """The turn's latency breakdown, once (``None`` when there is no timing left)."""
        tm, self.timing = self.timing, None
        if tm is None:
            return None
        llm_ft = (self.first_token_wall - self.started_wall) if self.first_token_wall else None
        tts_fa = (self.first_audio_wall - self.first_chunk_wall) if self.first_audio_wall and self.first_chunk_wall else None
        v2v: float | None = None
        if self.first_played_t is not None:
            if live:
                v2v = self.first_played_t - tm.speech_end_t
            elif self.first_audio_wall is not None:
                # Lockstep: compute took no session time, so add the real compute still
                # outstanding at the decision (none if a speculative reply was ready):
                # what a live run on this machine would have waited.
                v2v = (tm.eot_t - tm.speech_end_t) + max(0.0, self.first_audio_wall - tm.eot_wall)
        return TurnLatency(
            now, turn=self.turn, end_of_turn=round(tm.eot_t - tm.speech_end_t, 6),
            asr_final=round(tm.asr_final, 6),
            llm_first_token=round(llm_ft, 6) if llm_ft is not None else None,
            tts_first_audio=round(tts_fa, 6) if tts_fa is not None else None,
            voice_to_voice=round(v2v, 6) if v2v is not None else None,
        )

    @property
    def heard_text(self) -> str:
        return " ".join(self.heard)


def _stage_of(exc: DuplexError) -> str:
    """The stage a reply's error names in its :class:`StageError`."""
    if isinstance(exc, LLMError):
        return "llm"
    if isinstance(exc, TTSError):
        return "tts"
    return "reply"


class Voice:
    """The voice and language of the next reply: the recogniser's language, with a
    matching voice where one can be loaded (built once per language, off the loop)."""

    def __init__(self, tts_cfg: TTSConfig, default: TTS, pool: Executor, emit: Callable[[Event], None]) -> None:
        self.cfg = tts_cfg
        self.default = default
        self.tts = default
        self.lang: str | None = None
        self._pool = pool
        self._emit = emit
        self._voices: dict[str, TTS] = {}

    def instruction(self) -> str:
        """The system-prompt line asking for a reply in the user's language ('' for the default)."""
        if not self.lang or base_language(self.lang) == base_language(self.cfg.language):
            return ""
        return reply_language_instruction(self.lang)

    async def follow(self, asr: object, t: float) -> bool:
        """Follow the language ``asr`` heard last; True when the reply's prompt must change."""
        lang = getattr(asr, "language", None)
        if not lang or lang == self.lang:
            return False
        first = self.lang is None
        self.lang = lang
        self._emit(LanguageDetected(t, language=lang,
                                    probability=float(getattr(asr, "language_probability", 0.0) or 0.0)))
        voice_cfg, notice = voice_for_language(self.cfg, lang)
        if voice_cfg is None:
            self.tts = self.default
            if notice:
                self._emit(Notice(t, message=notice))
        elif voice_cfg == self.cfg:
            self.tts = self.default
        else:
            if lang not in self._voices:
                loop = asyncio.get_running_loop()
                try:
                    self._voices[lang] = await loop.run_in_executor(self._pool, make_tts, voice_cfg)
                except DuplexError as exc:
                    self._emit(StageError(t, stage="tts", message=f"no voice for {lang}: {exc}"))
                    self._voices[lang] = self.default
            self.tts = self._voices[lang]
        return not (first and self.instruction() == "")

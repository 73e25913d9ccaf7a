"""One agent reply: LLM tokens → text chunks → TTS → the player's queue.

All per-turn state lives in a :class:`Reply`, which the engine throws away whole.
Cancellation (barge-in) sets the LLM's cancel flag, cancels and awaits the producing
task, and flushes this turn's audio from the player; the thread computing the
current token or sentence finishes on its own and its result is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

import numpy as np

from duplex.audio.player import Player, Segment, word_timing
from duplex.clock import Clock, PerfTimer
from duplex.errors import DuplexError
from duplex.events import Event, LLMToken, StageError, TextToTTS
from duplex.stages.chunker import TextChunker
from duplex.stages.llm import LLM, Message
from duplex.stages.tts import TTS

log = logging.getLogger(__name__)

_DONE = object()


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
        self.cancelled = False
        self.error: str | None = None
        self._chunks = 0
        self.task: asyncio.Task[None] | None = None
        self.gated = gated
        """A speculative reply: computed while the user may still go on, its audio held
        back until :meth:`confirm` (end of turn) or dropped by :meth:`cancel`."""
        self.user_text = user_text
        self._held: list[Segment] = []

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.create_task(self._produce(), name=f"reply-{self.turn}")

    @property
    def finished(self) -> bool:
        """All audio produced and played (or cancelled)."""
        return self.cancelled or (self.produced_all and not self._has_audio_in_player())

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
            self.emit(StageError(self.clock.now(), stage="reply", message=str(exc)))
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
        while True:
            item = await q.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise DuplexError(f"LLM failed: {item}") from item
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
        self.emit(TextToTTS(self.clock.now(), turn=self.turn, index=self._chunks, text=text))
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
        except DuplexError:
            raise
        except Exception as exc:  # piper/onnxruntime errors are untyped
            raise DuplexError(f"TTS failed on {text!r}: {exc}") from exc
        if self.cancelled or audio.size == 0:
            return
        if self.first_audio_wall is None:
            self.first_audio_wall = PerfTimer.now()
        seg = Segment(self.turn, audio, text, word_timing(text, audio))
        if self.gated:
            self._held.append(seg)
            return
        while not self.player.has_room():
            await asyncio.sleep(0.01)
        self.player.enqueue(seg)
        self.audio_event.set()

    # --- accounting ------------------------------------------------------------------------

    @property
    def heard_text(self) -> str:
        return " ".join(self.heard)

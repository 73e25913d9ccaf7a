"""Playback with a play cursor: which samples, hence which words, the listener heard.

The engine pulls exactly one chunk (``CHUNK_SAMPLES``, 32 ms) per tick and hands it to
a sink, so a flush on barge-in silences the speaker within one chunk. Each queued
:class:`Segment` knows where its words end (``word_ends``), so every played chunk
reports the words it completed and the reply's *heard* text is exact to the chunk.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from duplex.audio import CHUNK_SAMPLES


@dataclass(frozen=True, slots=True)
class Segment:
    """Synthesised audio for one text chunk of one reply."""

    turn: int
    audio: np.ndarray
    text: str
    word_ends: tuple[tuple[int, str], ...] = ()
    """(sample offset in ``audio`` where the word is complete, the word)."""
    kind: str = "reply"
    """``reply`` or ``backchannel`` (the agent's own mm-hmm)."""
    index: int = 0
    """Which text chunk of its reply this is (0, 1, ...)."""


@dataclass(frozen=True, slots=True)
class PlayedChunk:
    audio: np.ndarray
    turn: int | None
    """The reply this audio belongs to, or None for silence."""
    n_voiced: int
    """Samples of real (queued) audio in the chunk; the rest is silence."""
    words: tuple[str, ...] = ()
    """Words completed by this chunk."""
    kind: str = "reply"
    segment_done: bool = False


@dataclass
class _Cursor:
    seg: Segment
    pos: int = 0
    next_word: int = 0


class Player:
    """A bounded queue of segments, drained one chunk per tick."""

    def __init__(self, max_pending_samples: int) -> None:
        self.max_pending = max_pending_samples
        self._queue: deque[Segment] = deque()
        self._cur: _Cursor | None = None
        self.cursor = 0
        """Samples handed to the sink so far (silence included): the play cursor."""
        self.pending = 0
        self._silence = np.zeros(CHUNK_SAMPLES, dtype=np.float32)
        self.flushed_samples = 0
        self.paused = False
        """While paused, :meth:`pull` gives silence and the queue and its cursor stay put."""
        self.staging = False
        """Reply audio waits in a staging area until :meth:`release` (paced runs, see
        :mod:`duplex.pacing`: it enters the queue only at a frame edge)."""
        self._staged: list[Segment] = []

    @property
    def busy(self) -> bool:
        return self._cur is not None or bool(self._queue)

    def has_room(self) -> bool:
        return self.pending < self.max_pending

    def enqueue(self, seg: Segment) -> None:
        if self.staging and seg.kind == "reply":
            self._staged.append(seg)
        else:
            self._queue.append(seg)
        self.pending += len(seg.audio)

    def release(self, turn: int | None = None, index: int | None = None) -> list[Segment]:
        """Move staged reply audio into the queue: all of it, or the one chunk
        (``turn``, ``index``); returns what moved, in order."""
        moved = [s for s in self._staged if turn is None or (s.turn == turn and s.index == index)]
        if moved:
            gone = {id(s) for s in moved}
            self._staged = [s for s in self._staged if id(s) not in gone]
            self._queue.extend(moved)
        return moved

    def is_staged(self, turn: int, index: int) -> bool:
        return any(s.turn == turn and s.index == index for s in self._staged)

    def flush(self, turn: int | None = None) -> int:
        """Drop queued and partly played audio (of ``turn``, or all); returns samples dropped."""
        dropped = 0
        if self._cur is not None and (turn is None or self._cur.seg.turn == turn):
            dropped += len(self._cur.seg.audio) - self._cur.pos
            self._cur = None
        keep: deque[Segment] = deque()
        for s in self._queue:
            if turn is None or s.turn == turn:
                dropped += len(s.audio)
            else:
                keep.append(s)
        self._queue = keep
        dropped += sum(len(s.audio) for s in self._staged if turn is None or s.turn == turn)
        self._staged = [s for s in self._staged if not (turn is None or s.turn == turn)]
        self.pending -= dropped
        self.flushed_samples += dropped
        return dropped

    def pause(self) -> None:
        """Hold playback at the current sample (the next :meth:`pull` is silent)."""
        self.paused = True

    def resume(self) -> None:
        """Play on from exactly the sample where :meth:`pause` held."""
        self.paused = False

    def flush_kind(self, kind: str) -> int:
        """Drop queued and playing audio of one kind (the agent's backchannel clip)."""
        dropped = 0
        if self._cur is not None and self._cur.seg.kind == kind:
            dropped += len(self._cur.seg.audio) - self._cur.pos
            self._cur = None
        keep = deque(s for s in self._queue if s.kind != kind)
        dropped += sum(len(s.audio) for s in self._queue if s.kind == kind)
        self._queue = keep
        self.pending -= dropped
        self.flushed_samples += dropped
        return dropped

    @property
    def playing_kind(self) -> str | None:
        """The kind of the segment under the cursor (``None`` between segments)."""
        return self._cur.seg.kind if self._cur is not None else None

    def pull(self) -> PlayedChunk:
        """The next chunk for the speaker: queued audio, padded with silence (all silence when paused)."""
        if self.paused:
            self.cursor += CHUNK_SAMPLES
            return PlayedChunk(self._silence, None, 0)
        if self._cur is None and self._queue:
            self._cur = _Cursor(self._queue.popleft())
        cur = self._cur
        if cur is None:
            self.cursor += CHUNK_SAMPLES
            return PlayedChunk(self._silence, None, 0)
        seg = cur.seg
        n = min(CHUNK_SAMPLES, len(seg.audio) - cur.pos)
        out = np.zeros(CHUNK_SAMPLES, dtype=np.float32)
        out[:n] = seg.audio[cur.pos : cur.pos + n]
        end = cur.pos + n
        words: list[str] = []
        while cur.next_word < len(seg.word_ends) and seg.word_ends[cur.next_word][0] <= end:
            words.append(seg.word_ends[cur.next_word][1])
            cur.next_word += 1
        cur.pos = end
        done = cur.pos >= len(seg.audio)
        if done:
            # Words not yet reported (rounding) are complete once the segment is.
            words.extend(w for _, w in seg.word_ends[cur.next_word :])
            self._cur = None
        self.pending -= n
        self.cursor += CHUNK_SAMPLES
        return PlayedChunk(out, seg.turn, n, tuple(words), seg.kind, done)


def word_timing(text: str, audio: np.ndarray, threshold: float = 0.01) -> tuple[tuple[int, str], ...]:
    """Where each word of ``text`` ends in ``audio``.

    Piper gives no word alignment, so words are spread over the voiced span (first to
    last sample above ``threshold``) in proportion to their length in characters plus
    one for the gap; good to a word or so, which is what "heard" needs.
    """
    ws = text.split()
    if not ws:
        return ()
    voiced = np.flatnonzero(np.abs(audio) > threshold)
    if voiced.size == 0:
        return tuple((len(audio), w) for w in ws)
    a, b = int(voiced[0]), int(voiced[-1]) + 1
    weights = np.array([len(w) + 1 for w in ws], dtype=np.float64)
    ends = a + np.cumsum(weights) / weights.sum() * (b - a)
    return tuple((int(round(e)), w) for e, w in zip(ends, ws, strict=True))


@dataclass
class SinkStats:
    written: int = 0
    underruns: int = 0
    extra: dict[str, int] = field(default_factory=dict)

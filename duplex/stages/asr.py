"""Streaming speech recognition: the interface and the packaged pocketsphinx backend."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from duplex.audio import SAMPLE_RATE
from duplex.errors import ASRError

log = logging.getLogger(__name__)


class StreamingASR(Protocol):
    """One utterance at a time: ``start``, ``accept`` audio, read ``partial``, ``finish``.

    Calls are synchronous (the engine runs them in an executor thread) and audio is
    float32 at 16 kHz. ``language`` is the detected language when the backend detects one.
    """

    name: str
    language: str | None

    def start(self) -> None: ...
    def accept(self, pcm: np.ndarray) -> None: ...
    def partial(self) -> str: ...
    def finish(self) -> str: ...


class PocketSphinxASR:
    """CMU PocketSphinx with its shipped en-US acoustic and language model.

    Partials come from the decoder's running best path; the final from ``end_utt``
    without lattice rescoring, so it extends the last partial instead of jumping.

    ``fwdflat=False`` skips the second (flat-lexicon) search pass at ``end_utt``: the
    partials are the same (they come from the first pass), the final is the first pass's,
    and ``finish`` drops from 0.2-1.9 s to 20-200 ms on a busy 2-core machine, all of it
    holding the GIL. :class:`~duplex.stages.whisper_asr.WhisperFinalsASR` uses it that
    way, since its finals come from Whisper.
    """

    name = "pocketsphinx"

    def __init__(self, fwdflat: bool = True) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError as exc:
            raise ASRError("pocketsphinx is not installed (pip install pocketsphinx)") from exc
        try:
            self._dec = Decoder(samprate=SAMPLE_RATE, bestpath=False, fwdflat=fwdflat, loglevel="FATAL")
        except (RuntimeError, ValueError) as exc:
            raise ASRError(f"cannot load the pocketsphinx en-US model: {exc}") from exc
        self.language: str | None = "en"
        self._active = False

    def reset(self) -> None:
        """Forget what earlier sessions adapted to (the front end's noise estimate and the
        cepstral mean), so a replay decodes the same words whatever the process decoded before."""
        if self._active:
            self._dec.end_utt()
            self._active = False
        self._dec.reinit_feat()
        self._dec.set_cmn(self._dec.config["cmninit"])

    def start(self) -> None:
        if self._active:
            self._dec.end_utt()
        self._dec.start_utt()
        self._active = True

    def accept(self, pcm: np.ndarray) -> None:
        if not self._active:
            self.start()
        data = (np.clip(pcm, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        self._dec.process_raw(data, False, False)

    def partial(self) -> str:
        hyp = self._dec.hyp() if self._active else None
        return _clean(hyp.hypstr) if hyp is not None else ""

    def finish(self) -> str:
        if not self._active:
            return ""
        self._dec.end_utt()
        self._active = False
        hyp = self._dec.hyp()
        return _clean(hyp.hypstr) if hyp is not None else ""


class GuardedASR:
    """A recogniser whose failures cost one utterance, not the conversation.

    Wraps any :class:`StreamingASR` (and its optional ``reset``, ``speculate``, ``draft``,
    ``discard_speculation``, ``partials_final``, ``language``). An exception from the
    recogniser is reported once through ``on_error`` (the message a user can act on)
    and the rest of that utterance is heard as nothing: ``partial`` and ``finish`` give
    ``""``, ``draft`` ``None``, so the floor sees a turn with no words and does not
    reply. The next utterance starts the recogniser afresh. Runs on the listener's
    thread like the recogniser it wraps; ``on_error`` must be thread-safe.
    """

    _CALLS = frozenset({"reset", "speculate", "draft", "discard_speculation", "warmup", "close"})

    def __init__(self, inner: StreamingASR, on_error: Callable[[str], None]) -> None:
        self.inner = inner
        self.on_error = on_error
        self.name = getattr(inner, "name", "asr")
        self.failed = False
        """The current utterance failed: ignore it until the next ``start``."""
        self.failures = 0

    def __getattr__(self, attr: str) -> Any:
        # Optional parts of the protocol: present here exactly when the recogniser has them.
        if attr == "inner":
            raise AttributeError(attr)
        value = getattr(self.inner, attr)
        if attr == "partials_final" and self.failed:
            return ""
        if attr in self._CALLS and callable(value):
            return self._guard(attr, value)
        return value

    def _guard(self, what: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        fallback = None if what == "draft" else ""

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.failed and what in ("speculate", "draft"):
                return fallback
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # foreign recogniser errors are untyped
                self._fail(what, exc)
                return fallback

        return call

    def _fail(self, what: str, exc: Exception) -> None:
        self.failed = True
        self.failures += 1
        log.warning("ASR failed in %s: %s", what, exc, exc_info=exc)
        self.on_error(f"speech recognition failed ({self.name}.{what}: {exc}); "
                      "that utterance is lost, listening again")

    def start(self) -> None:
        self.failed = False
        try:
            self.inner.start()
        except Exception as exc:  # foreign recogniser errors are untyped
            self._fail("start", exc)

    def accept(self, pcm: np.ndarray) -> None:
        if self.failed:
            return
        try:
            self.inner.accept(pcm)
        except Exception as exc:  # foreign recogniser errors are untyped
            self._fail("accept", exc)

    def partial(self) -> str:
        if self.failed:
            return ""
        try:
            return self.inner.partial()
        except Exception as exc:  # foreign recogniser errors are untyped
            self._fail("partial", exc)
            return ""

    def finish(self) -> str:
        if self.failed:
            # Let the recogniser close the broken utterance if it can; its words are lost.
            try:
                self.inner.finish()
            except Exception as exc:  # foreign recogniser errors are untyped
                log.debug("ASR finish after a failure: %s", exc)
            return ""
        try:
            return self.inner.finish()
        except Exception as exc:  # foreign recogniser errors are untyped
            self._fail("finish", exc)
            return ""


def _clean(text: str) -> str:
    # pocketsphinx marks fillers like <sil> or [NOISE]; they are not words.
    return " ".join(w for w in text.split() if not (w.startswith("<") or w.startswith("[") or w.startswith("++")))

"""Streaming speech recognition: the interface and the packaged pocketsphinx backend."""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

import numpy as np

from duplex.audio import SAMPLE_RATE
from duplex.errors import ASRError
from duplex.pacing import Pacing

log = logging.getLogger(__name__)


LateFinal = tuple[str, float, str | None]
"""What ``finish_later`` (an optional part of :class:`StreamingASR`) resolves to: the final
text, the seconds its decode took, and the partial recogniser's own final where finals
come from another recogniser (``None`` when the partials are the final's)."""


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
    ``discard_speculation``, ``finish_later``, ``partials_final``, ``language``). An exception from the
    recogniser is reported once through ``on_error`` (the message a user can act on)
    and the rest of that utterance is heard as nothing: ``partial`` and ``finish`` give
    ``""``, ``draft`` ``None``, so the floor sees a turn with no words and does not
    reply. The next utterance starts the recogniser afresh. Runs on the listener's
    thread like the recogniser it wraps; ``on_error`` must be thread-safe.
    """

    _CALLS = frozenset({"reset", "speculate", "draft", "discard_speculation", "warmup", "close", "background_partials",
                        "pace_partials"})

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
        if attr == "finish_later" and callable(value):
            return self._finish_later(value)
        return value

    def _finish_later(self, fn: Callable[[], Future[LateFinal]]) -> Callable[[], Future[LateFinal]]:
        """``finish_later`` guarded: a failure, now or on the recogniser's thread, gives the
        utterance no words (``("", 0.0, "")``), reported once; the recogniser's thread never
        marks the utterance that runs by then as failed."""
        nothing: LateFinal = ("", 0.0, "")

        def call() -> Future[LateFinal]:
            out: Future[LateFinal] = Future()
            if self.failed:
                self.finish()
                out.set_result(nothing)
                return out
            try:
                inner = fn()
            except Exception as exc:  # foreign recogniser errors are untyped
                self._fail("finish", exc)
                out.set_result(nothing)
                return out

            def relay(done: Future[LateFinal]) -> None:
                if done.cancelled():
                    out.set_result(nothing)
                    return
                exc = done.exception()
                if exc is None:
                    out.set_result(done.result())
                    return
                self._report("finish", exc)
                out.set_result(nothing)

            inner.add_done_callback(relay)
            return out

        return call

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
        self._report(what, exc)

    def _report(self, what: str, exc: BaseException) -> None:
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


class BackgroundPartials:
    """A streaming recogniser run on its own thread, for live runs.

    pocketsphinx decodes every frame of speech as it arrives: 5-8 ms a frame on an idle
    core, 15-120 ms on the 2-core machine while Whisper, the LLM and TTS work beside it
    (measured in a live ``duplex run``: 94 of 584 speech frames over 30 ms). On the
    listener's thread that stalls the frame loop, and every decision after it (a barge-in,
    an end of turn) waits with it. Here ``accept`` only queues the frame; ``partial`` is
    the newest hypothesis the thread has for the current utterance (a few frames behind
    when it is busy); ``start``, ``finish`` and ``reset`` keep their order with the audio
    and ``finish`` and ``reset`` wait for the thread to get there. An error on the thread
    is raised by the next call, so :class:`GuardedASR` sees it as the recogniser's own.

    With ``pacing`` set (live runs), each ``partial`` read logs how many frames of the
    utterance its hypothesis covers, so :class:`PacedPartials` can replay it.

    Lockstep runs keep the recogniser on the listener's thread (same words every run).
    """

    QUEUE_FRAMES = 256
    """About 8 s of 32 ms frames; beyond that ``accept`` waits (the recogniser cannot keep up)."""

    def __init__(self, inner: StreamingASR) -> None:
        self.inner = inner
        self.name = getattr(inner, "name", "asr")
        self.pacing: Pacing | None = None
        self._q: queue.Queue[tuple[str, Any, Future[Any] | None] | None] = queue.Queue(self.QUEUE_FRAMES)
        self._hyp: tuple[int, int, str] = (0, 0, "")
        """(utterance, frames of it decoded, hypothesis): written by the thread in one go."""
        self._utt = 0
        self._reads = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="duplex-partials", daemon=True)
        self._thread.start()

    @property
    def language(self) -> str | None:
        return getattr(self.inner, "language", None)

    def start(self) -> None:
        self._raise()
        self._utt += 1
        self._reads = 0
        self._q.put(("start", self._utt, None))

    def accept(self, pcm: np.ndarray) -> None:
        self._raise()
        self._q.put(("accept", np.array(pcm, dtype=np.float32), None))

    def partial(self) -> str:
        self._raise()
        utt, frames, text = self._hyp
        if utt != self._utt:  # the thread has not reached this utterance yet
            frames, text = 0, ""
        self._reads += 1
        if self.pacing is not None:
            self.pacing.note(f"partial:{self._utt}:{self._reads}", frames)
        return text

    def finish(self) -> str:
        return str(self._call("finish"))

    def finish_later(self) -> Future[str]:
        """``finish`` without waiting for the thread to get there: the final arrives on the
        future (an error on the thread is its exception)."""
        self._raise()
        fut: Future[str] = Future()
        self._q.put(("finish", None, fut))
        return fut

    def reset(self) -> None:
        if callable(getattr(self.inner, "reset", None)):
            self._call("reset")
        self._utt = 0
        self._reads = 0

    def close(self) -> None:
        """Stop the thread once it has done what is queued."""
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()

    def _call(self, what: str) -> Any:
        self._raise()
        fut: Future[Any] = Future()
        self._q.put((what, None, fut))
        return fut.result()

    def _raise(self) -> None:
        err, self._error = self._error, None
        if err is not None:
            raise ASRError(f"{self.name} failed on its thread: {err}") from err

    def _run(self) -> None:
        utt, frames = 0, 0
        while True:
            item = self._q.get()
            if item is None:
                return
            what, arg, fut = item
            try:
                if what == "accept":
                    self.inner.accept(arg)
                    frames += 1
                    if self._q.empty():  # behind: the next frame's hypothesis will do
                        self._hyp = (utt, frames, self.inner.partial())
                    continue
                if what == "start":
                    utt, frames = arg, 0
                    self._hyp = (utt, 0, "")
                    self.inner.start()
                    continue
                result = getattr(self.inner, what)()
                if what == "finish":
                    self._hyp = (utt, 0, "")
            except Exception as exc:  # foreign recogniser errors are untyped: the caller's next call raises
                if fut is None:
                    self._error = exc
                else:
                    fut.set_exception(exc)
                continue
            if fut is not None:
                fut.set_result(result)


class PacedPartials:
    """Replays a live run's :class:`BackgroundPartials` on the listener's thread.

    Frames are held back and fed to the recogniser only as far as the recording's
    ``partial`` read covered (its :class:`~duplex.pacing.Pacing` value), so each read gives
    the hypothesis the live run gave on that frame; ``finish`` feeds the rest first.
    """

    def __init__(self, inner: StreamingASR, pacing: Pacing) -> None:
        self.inner = inner
        self.name = getattr(inner, "name", "asr")
        self.pacing = pacing
        self._pending: deque[np.ndarray] = deque()
        self._fed = 0
        self._utt = 0
        self._reads = 0

    @property
    def language(self) -> str | None:
        return getattr(self.inner, "language", None)

    def start(self) -> None:
        self.inner.start()
        self._utt += 1
        self._reads = 0
        self._pending.clear()
        self._fed = 0

    def accept(self, pcm: np.ndarray) -> None:
        self._pending.append(np.array(pcm, dtype=np.float32))

    def partial(self) -> str:
        self._reads += 1
        key = f"partial:{self._utt}:{self._reads}"
        frames = self.pacing.value(key)
        if frames is None:  # the recording never read this one: the replay has diverged
            frames = self._fed + len(self._pending)
        self._feed(frames)
        self.pacing.note(key, frames)
        return self.inner.partial() if frames > 0 else ""

    def finish(self) -> str:
        self._feed(self._fed + len(self._pending))
        return self.inner.finish()

    def reset(self) -> None:
        reset = getattr(self.inner, "reset", None)
        if callable(reset):
            reset()
        self._utt = 0
        self._reads = 0
        self._pending.clear()
        self._fed = 0

    def _feed(self, frames: int) -> None:
        while self._fed < frames and self._pending:
            self.inner.accept(self._pending.popleft())
            self._fed += 1


def _clean(text: str) -> str:
    # pocketsphinx marks fillers like <sil> or [NOISE]; they are not words.
    return " ".join(w for w in text.split() if not (w.startswith("<") or w.startswith("[") or w.startswith("++")))

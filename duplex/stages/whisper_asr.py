"""faster-whisper as a streaming recogniser: growing-window re-decoding with local agreement.

Whisper is not streaming: it reads up to 30 s of audio and writes the whole text. To get
partials while the user speaks, each ``partial()`` re-decodes the utterance so far (at most
once per ``asr.partial_every_ms`` of new audio) and a word is *committed* once two
consecutive decodes agree on it and on every word before it (LocalAgreement-2, after
Macháček et al., "Turning Whisper into Real-Time Transcription System", 2023). A partial
is ``committed words + the latest decode's tail``: the committed prefix only ever grows, so
what the user sees never flickers; only the tentative tail may change.

An utterance longer than ``asr.window_s`` is cut at the end of its last committed word
(found by one decode with word timestamps); the words before the cut are carried as text
and as the decoding prompt, so compute stays bounded however long the user talks.

``finish()`` decodes the whole window once more: for an utterance shorter than the window
the final is exactly what one batch ``transcribe`` of the same audio gives.

:class:`WhisperFinalsASR` is the default profile's ear: pocketsphinx streams the partials
(cheap, and what the turn predictor was trained on) and Whisper writes each final. The
final is decoded speculatively on a worker thread when the user pauses
(:meth:`WhisperFinalsASR.speculate`, called by the listener), so that at the end of the
turn it is usually already there; audio that arrives later, if it is speech, throws the
speculation away.

Loading never downloads: ``asr.model`` is a model that ships in a package (``tiny.en``,
``base``), a ``package:`` directory, a local CTranslate2 directory or a name in the
Hugging Face cache (see :func:`duplex.resources.locate_whisper`).
"""

from __future__ import annotations

import logging
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from duplex.audio import SAMPLE_RATE
from duplex.config import ASRConfig
from duplex.clock import PerfTimer
from duplex.errors import ASRError, ModelError
from duplex.resources import force_offline, locate_whisper
from duplex.pacing import Pacing
from duplex.stages.asr import BackgroundPartials, LateFinal, PacedPartials, PocketSphinxASR, StreamingASR
from duplex.stages.llm import default_threads
from duplex.stages.multilingual import LanguageTracker

log = logging.getLogger(__name__)

MIN_DECODE_SAMPLES = SAMPLE_RATE * 3 // 10
"""Below 0.3 s Whisper mostly hallucinates; partials wait for at least this much audio."""
PROMPT_WORDS = 32
"""Carried words given back to the decoder as its prompt after a cut."""
HOP_SAMPLES = 160
"""Whisper's mel frame hop (10 ms at 16 kHz)."""
SHORT_WINDOW_MIN_S = 8.0
SHORT_WINDOW_PAD_S = 2.0
"""A final is encoded over ``max(8 s, audio + 2 s)`` instead of Whisper's fixed 30 s: the
encoder's cost is linear in the window, so a 3 s utterance decodes ~5x faster (tiny.en,
int8, one thread: 120 vs 640 ms p50 on the real clips, WER identical on every one; see
benchmarks/asr.py). Shorter windows make Whisper repeat itself on short clips ("go forward
10 meters" x 6 with a 4 s window), which is what the 8 s floor and the repetition check
guard against."""
NO_SPEECH_PROB = 0.6
NO_SPEECH_LOGPROB = -1.0
"""A final is empty when Whisper's no-speech probability is above 0.6 and its mean token
log-probability below -1 (faster-whisper's defaults for the same test)."""
SHORT_WINDOW_MAX_S = 28.0
"""Audio longer than this is decoded over the full 30 s window."""
_REPEAT = re.compile(r"(\b.{6,}?)(?:\s*\1){2,}", re.IGNORECASE)
"""A phrase of 6+ characters said three times in a row: the short window's failure mode."""


def _norm(word: str) -> str:
    return re.sub(r"[^\w']+", "", word.casefold())


@dataclass
class LocalAgreement:
    """LocalAgreement-2 on word hypotheses of one window.

    ``committed`` only grows: a word joins it when the previous and the current hypothesis
    agree on it and on everything before it (compared without case and punctuation).
    """

    committed: list[str] = field(default_factory=list)
    previous: list[str] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)

    def update(self, words: list[str]) -> None:
        n = 0
        for a, b in zip(self.previous, words):
            if _norm(a) != _norm(b):
                break
            n += 1
        k = len(self.committed)
        consistent = [_norm(w) for w in words[:k]] == [_norm(w) for w in self.committed]
        if n > k and consistent:
            self.committed.extend(words[k:n])
        # The tail is what this decode says beyond the committed words; if it no longer
        # agrees with them, its words past the same count are the best guess we have.
        self.tail = list(words[len(self.committed) :])
        self.previous = list(words)

    def text(self) -> str:
        return " ".join(self.committed + self.tail)


@dataclass
class _Utterance:
    """Per-utterance state, thrown away whole by ``start``."""

    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # (n,) window since the last cut
    carried: list[str] = field(default_factory=list)  # committed words of audio cut away
    agreement: LocalAgreement = field(default_factory=LocalAgreement)
    decoded_at: int = 0  # window length (samples) at the last decode
    detected: str | None = None  # language of the last partial decode
    language: str | None = None  # locked at the first cut: the window no longer holds the start
    partial: str = ""


class WhisperASR:
    """faster-whisper (CTranslate2) behind the :class:`~duplex.stages.asr.StreamingASR` interface.

    Attributes:
        language: the language of the last finished utterance (``asr.language`` when set);
            for finals from :meth:`transcribe` (the default and quality profiles), the
            user's language through :class:`~duplex.stages.multilingual.LanguageTracker`.
        language_probability: the detector's probability for it (1.0 when configured).
    """

    name = "faster-whisper"

    def __init__(self, cfg: ASRConfig) -> None:
        force_offline()
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise ASRError("faster-whisper is not installed (pip install faster-whisper)") from exc
        try:
            path = locate_whisper(cfg)
        except ModelError as exc:
            raise ASRError(str(exc)) from exc
        try:
            self._model = WhisperModel(
                str(path),
                device=cfg.device,
                compute_type=cfg.compute_type,
                cpu_threads=default_threads(cfg.cpu_threads),
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ASRError(
                f"cannot load faster-whisper model {path} on {cfg.device}/{cfg.compute_type}: {first}"
            ) from exc
        self.cfg = cfg
        self.model_path = path
        self.multilingual = bool(self._model.model.is_multilingual)
        if cfg.language and not self.multilingual and cfg.language != "en":
            raise ASRError(f"faster-whisper model {path} is English-only; asr.language={cfg.language!r} needs a multilingual model")
        self.language: str | None = cfg.language or (None if self.multilingual else "en")
        self.language_probability = 1.0 if self.language else 0.0
        self.tracker = LanguageTracker()
        """Hysteresis for finals from :meth:`transcribe`: ``language`` is the tracked one."""
        self.detected_language: str | None = self.language
        self.detected_probability = self.language_probability
        """The last utterance's own detection, before hysteresis."""
        self._step = max(1, SAMPLE_RATE * cfg.partial_every_ms // 1000)
        self._window = int(cfg.window_s * SAMPLE_RATE)
        self._u = _Utterance()
        self._audio_lock = threading.Lock()
        self._decode_lock = threading.Lock()  # partial() and finish() may run on different threads
        self.decodes = 0
        """Decoder runs so far (partials, cuts and finals)."""

    def warmup(self) -> None:
        """One decode of silence, so the first utterance does not pay for lazy initialisation."""
        self._transcribe(np.zeros(SAMPLE_RATE, np.float32), _Utterance())

    # --- StreamingASR -----------------------------------------------------------------

    def start(self) -> None:
        with self._audio_lock:
            self._u = _Utterance()

    def accept(self, pcm: np.ndarray) -> None:
        pcm = np.asarray(pcm, dtype=np.float32).reshape(-1)
        with self._audio_lock:  # held for a copy only: never across a decode
            self._u.audio = np.concatenate([self._u.audio, pcm])

    def partial(self) -> str:
        """The stable prefix plus the latest tentative tail (re-decoded when enough audio is new)."""
        with self._decode_lock:
            u = self._u
            with self._audio_lock:
                n = u.audio.size
            if n < MIN_DECODE_SAMPLES or n - u.decoded_at < self._step:
                return u.partial
            if n > self._window:
                self._cut(u)
            with self._audio_lock:
                audio = u.audio
            segs, lang, _ = self._transcribe(audio, u)
            u.decoded_at = audio.size
            u.detected = lang
            u.agreement.update(_words(segs))
            u.partial = " ".join(u.carried + [u.agreement.text()]).strip()
            return u.partial

    @property
    def stable(self) -> str:
        """The committed prefix of the current utterance: it only ever grows."""
        u = self._u
        return " ".join(u.carried + u.agreement.committed)

    def finish(self) -> str:
        """Decode the whole window; sets ``language`` and ``language_probability``."""
        with self._decode_lock:
            with self._audio_lock:
                u, self._u = self._u, _Utterance()
            if u.audio.size < MIN_DECODE_SAMPLES // 2:
                return " ".join(u.carried)
            segs, lang, prob = self._transcribe(u.audio, u)
            if lang is not None:
                self.language, self.language_probability = lang, prob
            return " ".join(u.carried + _words(segs)).strip()

    def transcribe(self, audio: np.ndarray) -> str:
        """One batch decode of a whole utterance (no streaming state); sets ``language``.

        Safe to call from any one thread at a time (the decode lock serialises it with
        ``partial``/``finish``)."""
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if audio.size < MIN_DECODE_SAMPLES // 2:
            return ""
        with self._decode_lock:
            short = self._transcribe_window(audio) if audio.size <= SHORT_WINDOW_MAX_S * SAMPLE_RATE else None
            if short is not None:
                text, lang, prob = short
            else:
                segs, lang, prob = self._transcribe(audio, _Utterance())
                text = " ".join(_words(segs))
            self.detected_language, self.detected_probability = lang, prob
            if lang is not None and not self.cfg.language and self.multilingual:
                self.language = self.tracker.update(lang, prob, len(text.split()))
                self.language_probability = self.tracker.probability
            elif lang is not None:
                self.language, self.language_probability = lang, prob
        return text

    def _transcribe_window(self, audio: np.ndarray) -> tuple[str, str | None, float] | None:
        """One greedy decode over a window just longer than the audio (see SHORT_WINDOW_MIN_S).

        CTranslate2's encoder takes any number of frames up to 3000; faster-whisper always
        pads to 3000. Returns ``None`` when the text repeats itself or fills the token
        budget, for the caller to decode the standard 30 s way.
        """
        import ctranslate2
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        window = int(min(30.0 * SAMPLE_RATE, max(SHORT_WINDOW_MIN_S * SAMPLE_RATE, audio.size + SHORT_WINDOW_PAD_S * SAMPLE_RATE)))
        padded = np.zeros(window, np.float32)
        padded[: audio.size] = audio
        try:
            feats = self._model.feature_extractor(padded)[:, : window // HOP_SAMPLES]  # (n_mels, frames)
            enc = self._model.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats[None], np.float32)), to_cpu=False)
            language, prob = self.cfg.language or (None if self.multilingual else "en"), 1.0
            if language is None:
                token, prob = self._model.model.detect_language(enc)[0][0]
                language = token[2:-2]
            tok = Tokenizer(self._model.hf_tokenizer, self.multilingual, task="transcribe", language=language)
            res = self._model.model.generate(
                enc, [[*tok.sot_sequence, tok.no_timestamps]], beam_size=self.cfg.beam_size, max_length=224,
                suppress_blank=True, suppress_tokens=list(get_suppressed_tokens(tok, [-1])),
                return_scores=True, return_no_speech_prob=True,
            )[0]
        except (RuntimeError, ValueError) as exc:
            raise ASRError(f"faster-whisper failed to decode: {exc}") from exc
        self.decodes += 1
        ids = [t for t in res.sequences_ids[0] if t < tok.eot]
        # faster-whisper's own rule for a silent segment: Whisper says "no speech" and does
        # not believe its words either (what it writes on a cough or a breath is its
        # training set's subtitles: "Thanks for watching", "ご視聴ありがとうございました").
        if res.no_speech_prob > NO_SPEECH_PROB and res.scores[0] < NO_SPEECH_LOGPROB:
            return "", language, float(prob)
        text = tok.decode(ids).strip()
        if len(ids) >= 220 or _REPEAT.search(text):
            log.debug("whisper short window repeated itself (%r); decoding the full window", text[:80])
            return None
        return " ".join(text.split()), language, float(prob)

    # --- decoding ---------------------------------------------------------------------

    def _transcribe(self, audio: np.ndarray, u: _Utterance, word_timestamps: bool = False) -> tuple[list, str | None, float]:
        """One decode: its segments, the language and its probability (detected or configured)."""
        language = self.cfg.language or u.language or (None if self.multilingual else "en")
        prompt = " ".join(u.carried[-PROMPT_WORDS:]) or None
        try:
            segments, info = self._model.transcribe(
                audio,
                language=language,
                beam_size=self.cfg.beam_size,
                best_of=1,
                temperature=0.0,  # no fallback ladder: a voice turn cannot wait for five decodes
                condition_on_previous_text=False,
                initial_prompt=prompt,
                without_timestamps=not word_timestamps,
                word_timestamps=word_timestamps,
                vad_filter=False,  # duplex's VAD already cut the utterance
            )
            segs = list(segments)
        except (RuntimeError, ValueError) as exc:
            raise ASRError(f"faster-whisper failed to decode: {exc}") from exc
        self.decodes += 1
        if language is not None:
            return segs, language, 1.0
        return segs, info.language, float(info.language_probability)

    def _cut(self, u: _Utterance) -> None:
        """Drop audio up to the end of the last committed word and carry its words as text."""
        with self._audio_lock:
            audio = u.audio
        committed = u.agreement.committed
        cut = 0
        if committed:
            segs, _, _ = self._transcribe(audio, u, word_timestamps=True)
            stamped = [w for s in segs for w in (s.words or [])]
            k = min(len(committed), len(stamped))
            if k:
                cut = int(stamped[k - 1].end * SAMPLE_RATE)
        if not 0 < cut < audio.size:
            # Nothing committed in a whole window (noise, or a model that never agrees
            # with itself): keep the newest half and let the older audio go unrecognised.
            cut = audio.size - self._window // 2
            log.debug("whisper window cut without a committed word at sample %d", cut)
        # The window no longer holds the start of the utterance: keep its language.
        u.language = u.language or u.detected
        u.carried = u.carried + committed
        u.agreement = LocalAgreement()
        with self._audio_lock:
            u.audio = u.audio[cut:]
        u.decoded_at = 0


def _words(segments: list) -> list[str]:
    return " ".join(s.text.strip() for s in segments).split()


PARTIALS_SECOND_PASS = False
"""Whether pocketsphinx runs its second search pass at the end of each run. Its streaming
partials are the same either way; what changes is the partial the listener keeps after the
run, which the turn predictor reads until the next run starts (it was trained with the
pass). The pass costs 0.2-1.9 s per utterance holding the GIL (the event loop stalls that
long); without it the predictor's live end-of-turn p50 moved from 861 to 263 ms in
benchmarks/latency.py. Off since the predictor was re-evaluated on the real validation
cases without it (the evaluation harness hears with this ear; README, turn-taking)."""


@dataclass
class _Speculation:
    """A final decoded ahead of time from the first ``samples`` of the utterance."""

    samples: int
    future: Future[tuple[str, float]]


class WhisperFinalsASR:
    """Streaming partials from a cheap recogniser, finals from Whisper, decoded ahead.

    Partials are exactly the partial recogniser's (pocketsphinx for the default profile: the
    turn predictor was trained on them). The final is one batch Whisper decode of the whole
    utterance, run on a single worker thread, never on the caller's event loop.

    ``speculate()`` (the listener calls it when the user has been quiet for a moment) starts
    that decode on the audio so far; ``discard_speculation()`` (the user spoke again) drops
    it. ``finish()`` returns the speculative result when one is pending, waiting for it if it
    is still running, and otherwise decodes now; ``finish_later()`` does the same without
    waiting (the final arrives on a future). Only quiet audio can arrive between a
    speculation and the finish, so the two decodes would read the same words.

    Attributes:
        partials_final: the partial recogniser's final of the last utterance.
        last_final_compute: seconds the last final's Whisper decode took (wherever it ran).
        last_final_wait: seconds ``finish`` waited for it (0 when the speculation was done).
        speculations, speculations_used: counts, for the benchmark.
    """

    name = "pocketsphinx+faster-whisper"

    def __init__(self, whisper: WhisperASR, partials: StreamingASR) -> None:
        self.whisper = whisper
        self.partials = partials
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper-final")
        self._chunks: list[np.ndarray] = []
        self._samples = 0
        self._spec: _Speculation | None = None
        self.last_final_compute = 0.0
        self.last_final_wait = 0.0
        self.speculations = 0
        self.speculations_used = 0
        self.partials_final = ""
        """The partial recogniser's own final of the last utterance (the listener keeps it
        as the partial after the run, so the policies see the words they were trained on)."""

    @classmethod
    def from_config(cls, cfg: ASRConfig, second_pass: bool = PARTIALS_SECOND_PASS) -> WhisperFinalsASR:
        asr = cls(WhisperASR(cfg), PocketSphinxASR(fwdflat=second_pass))
        asr.warmup()
        return asr

    @property
    def language(self) -> str | None:
        return self.whisper.language

    @property
    def language_probability(self) -> float:
        return self.whisper.language_probability

    def warmup(self) -> None:
        self.whisper.warmup()

    def close(self) -> None:
        """Stop the worker threads (a running decode finishes first)."""
        self.background_partials(False)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def background_partials(self, on: bool) -> None:
        """Live runs: the partial recogniser on its own thread (:class:`BackgroundPartials`),
        so its per-frame decoding never stalls the frame loop. Lockstep runs: on the caller's."""
        if on and isinstance(self.partials, BackgroundPartials):
            self.partials.pacing = None  # a new run: pace_partials sets its own
            return
        inner = self._raw_partials()
        self.partials = BackgroundPartials(inner) if on else inner

    def pace_partials(self, pacing: Pacing) -> None:
        """Log (live) when each background partial was read and how far it had decoded,
        or replay that on the caller's thread (:class:`PacedPartials`) for a replay of a
        live session."""
        if pacing.replaying:
            self.partials = PacedPartials(self._raw_partials(), pacing)
        elif isinstance(self.partials, BackgroundPartials):
            self.partials.pacing = pacing

    def _raw_partials(self) -> StreamingASR:
        """The partial recogniser itself, with any thread or replay wrapper taken off."""
        p = self.partials
        if isinstance(p, BackgroundPartials):
            p.close()
        return p.inner if isinstance(p, BackgroundPartials | PacedPartials) else p

    # --- StreamingASR -----------------------------------------------------------------

    def reset(self) -> None:
        """A new conversation: forget the partial recogniser's adaptation and the user's language."""
        reset = getattr(self.partials, "reset", None)
        if reset is not None:
            reset()
        self._drop()
        w = self.whisper
        w.tracker.reset()
        w.language = w.cfg.language or (None if w.multilingual else "en")
        w.language_probability = 1.0 if w.language else 0.0

    def start(self) -> None:
        self.partials.start()
        self._drop()

    def accept(self, pcm: np.ndarray) -> None:
        self.partials.accept(pcm)
        chunk = np.array(pcm, dtype=np.float32).reshape(-1)  # a copy: the caller reuses its buffer
        self._chunks.append(chunk)
        self._samples += chunk.size

    def partial(self) -> str:
        return self.partials.partial()

    def finish(self) -> str:
        t0 = PerfTimer.now()
        fut = self._whisper_final()
        # While Whisper decodes on its thread (CTranslate2 releases the GIL).
        self.partials_final = self.partials.finish()
        text, self.last_final_compute = fut.result()
        self.last_final_wait = PerfTimer.now() - t0
        return text

    def finish_later(self) -> Future[LateFinal]:
        """End the utterance without waiting: (Whisper's final, its decode seconds, the
        partial recogniser's final) arrive on the returned future once both recognisers
        are done. Live runs use this so a final still decoding never holds up the frame."""
        whisper = self._whisper_final()
        later = getattr(self.partials, "finish_later", None)
        own: Future[str]
        if later is not None:
            own = later()
        else:
            own = Future()
            own.set_result(self.partials.finish())
        out: Future[LateFinal] = Future()
        lock = threading.Lock()

        def settle(_: Future[Any]) -> None:
            with lock:
                if out.done() or not (whisper.done() and own.done()):
                    return
                if whisper.cancelled() or own.cancelled():  # the session closed under it
                    out.set_result(("", 0.0, ""))
                    return
                exc = whisper.exception() or own.exception()
                if exc is not None:
                    out.set_exception(exc)
                    return
                text, compute = whisper.result()
                self.partials_final = own.result()
                out.set_result((text, compute, own.result()))

        whisper.add_done_callback(settle)
        own.add_done_callback(settle)
        return out

    def _whisper_final(self) -> Future[tuple[str, float]]:
        """Whisper's final of the utterance ending now: the speculation's decode when one
        covers it, else a new one; the utterance's audio is let go."""
        spec, self._spec = self._spec, None
        if spec is not None and not spec.future.cancelled():
            self.speculations_used += 1
            fut = spec.future
        else:
            fut = self._pool.submit(self._decode, self._audio())
        self._chunks, self._samples = [], 0
        return fut

    # --- speculation ------------------------------------------------------------------

    def speculate(self) -> None:
        """Start decoding the utterance so far on the worker thread (no-op if already doing so)."""
        if self._samples == 0 or (self._spec is not None and self._spec.samples == self._samples):
            return
        self._drop()
        self.speculations += 1
        self._spec = _Speculation(self._samples, self._pool.submit(self._decode, self._audio()))

    def draft(self, wait: bool = False) -> str | None:
        """The speculative final's text once decoded (``wait``: block until it is), else None."""
        spec = self._spec
        if spec is None or spec.future.cancelled() or not (wait or spec.future.done()):
            return None
        return spec.future.result()[0]

    def discard_speculation(self) -> None:
        """The user went on speaking: the speculative final no longer covers the utterance."""
        self._drop()

    def _drop(self) -> None:
        spec, self._spec = self._spec, None
        if spec is not None:
            spec.future.cancel()  # only if it has not started; a running decode finishes unused

    def _audio(self) -> np.ndarray:
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0] if self._chunks else np.zeros(0, np.float32)

    def _decode(self, audio: np.ndarray) -> tuple[str, float]:
        t0 = PerfTimer.now()
        text = self.whisper.transcribe(audio)
        return text, PerfTimer.now() - t0

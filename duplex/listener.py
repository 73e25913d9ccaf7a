"""The listening side, frame by frame: VAD, speech runs and streaming ASR.

Shared by the engine and the offline policy harness (``policies``' evaluation), so a
policy sees exactly the same inputs in both. Synchronous and deterministic: the
engine runs :meth:`Listener.step` in an executor thread, one frame at a time.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, fields

import numpy as np

from duplex.audio import FRAME_MS, FRAME_SAMPLES
from duplex.clock import PerfTimer
from duplex.config import ASRConfig, VADConfig
from duplex.pacing import Pacing
from duplex.stages.asr import LateFinal, StreamingASR
from duplex.stages.vad import VAD, SpeechSegmenter

PREROLL_FRAMES = 10
"""Frames (320 ms) kept before an onset and fed to ASR, so the first word is not clipped."""
SPECULATE_FINAL_MS = 64
"""Quiet inside a speech run after which an ASR that can (``speculate``) starts decoding
the final on its own thread, so it is ready when the run ends (the VAD hangover) or the
policy ends the turn; speech after it discards that decode."""
SPECULATE_FINAL_FRAMES = max(1, SPECULATE_FINAL_MS // FRAME_MS)
LATE_FINALS_KEY = "listener:late-finals"
"""Noted at the start of a live run whose finals come late (see ``Listener.late_finals``)."""


@dataclass(frozen=True, slots=True)
class ListenerFrame:
    vad: float
    user_speaking: bool
    speech_run: float
    silence: float
    partial: str
    utterance: int
    started: bool = False
    ended: bool = False
    run_duration: float = 0.0
    partial_changed: bool = False
    final: str | None = None
    """Set on the frame a speech run ended: the ASR's final text of that utterance (``None``
    there when ``final_pending``)."""
    asr_compute: float = 0.0
    draft: str | None = None
    """While the user pauses inside a run: the final the ASR decoded ahead (what
    ``final`` will be if the user says nothing more), once it is ready; else ``None``."""
    # New fields go last: the evaluation caches pickled frames, which unpickle by position.
    final_pending: bool = False
    """Live runs: the run ended while its final was still decoding; it comes in
    ``late_final`` on a later frame."""
    late_final: tuple[int, str, float] | None = None
    """Live runs: a final that was still decoding when its run ended, on the first frame it
    was ready: (utterance, text, decode seconds)."""

    def __getstate__(self) -> tuple[object, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    def __setstate__(self, state: tuple[object, ...]) -> None:
        """Frames pickled before a field was added (the evaluation's listener caches) get
        its default."""
        for i, f in enumerate(fields(self)):
            object.__setattr__(self, f.name, state[i] if i < len(state) else f.default)


class Listener:
    def __init__(self, vad: VAD, asr: StreamingASR | None, vad_cfg: VADConfig, asr_cfg: ASRConfig) -> None:
        self.vad = vad
        self.asr = asr
        self.seg = SpeechSegmenter(
            vad_cfg.threshold,
            max(1, vad_cfg.min_speech_ms // FRAME_MS),
            max(1, vad_cfg.hangover_ms // FRAME_MS),
        )
        self.partial_every = max(1, asr_cfg.partial_every_ms // FRAME_MS)
        self._speculate = getattr(asr, "speculate", None)
        self._discard = getattr(asr, "discard_speculation", None)
        self._draft = getattr(asr, "draft", None)
        self.wait_drafts = False
        """Wait for a speculative final instead of reporting it once ready: lockstep runs
        (files, replays) set it so the reply they start on it does not depend on compute
        speed; live runs never wait."""
        self.pacing: Pacing | None = None
        """Paced runs: when a draft and the background recogniser's partials were used."""
        self.late_finals = False
        """Paced runs with an ASR that can (``finish_later``): a run's end never waits for its
        final; the final arrives on the first frame it is decoded (key ``final:U``)."""
        self.reset()

    def set_live(self, live: bool) -> None:
        """Pace the recogniser for a live run (never wait: speculative finals reported once
        ready, partials decoded on their own thread where the recogniser can) or a lockstep
        one (wait, decode on this thread: the same words every run)."""
        self.wait_drafts = not live
        background = getattr(self.asr, "background_partials", None)
        if background is not None:
            background(live)

    def use_pacing(self, pacing: Pacing | None) -> None:
        """Log (live) or replay (a replay of a live session) when asynchronous ASR results
        were used: speculative finals here, background partials in the recogniser."""
        self.pacing = pacing
        pace = getattr(self.asr, "pace_partials", None)
        if pace is not None and pacing is not None:
            pace(pacing)
        # A recording says whether its finals came late (those made before they could are
        # replayed as they ran: the run's end waited for its final).
        self.late_finals = pacing is not None and getattr(self.asr, "finish_later", None) is not None and \
            (not pacing.replaying or pacing.value(LATE_FINALS_KEY) is not None)
        if self.late_finals and pacing is not None and not pacing.replaying:
            pacing.note(LATE_FINALS_KEY)

    def reset(self) -> None:
        self.vad.reset()
        self.seg.reset()
        reset_asr = getattr(self.asr, "reset", None)
        if reset_asr is not None:
            reset_asr()
        self._preroll: deque[np.ndarray] = deque(maxlen=PREROLL_FRAMES)
        self.utterance = 0
        self.partial = ""
        self._frames_in_utt = 0
        self._silence_frames = 10_000
        self._speculating = False
        self._speculations = 0
        self._late: deque[tuple[int, Future[LateFinal]]] = deque()

    def close_utterance(self) -> tuple[str | None, float]:
        """End the current speech run now (the policy decided early); returns (final, compute s).

        With ``late_finals`` the final is ``None`` when it is still decoding: it comes in a
        later frame's ``late_final``."""
        if not self.seg.speaking:
            return self.partial, 0.0
        self.seg.reset()
        self._speculating = False
        t0 = PerfTimer.now()
        final, compute, after = self._finish()
        self.partial = after
        return final, compute if final is None else PerfTimer.now() - t0

    def _finish(self) -> tuple[str | None, float, str]:
        """End the utterance's recognition: (final, its decode seconds where known, the
        partial after the run). The final is ``None`` while it decodes (``late_finals``)
        and the partial then stays the last one until the final comes."""
        if self.asr is None:
            return "", 0.0, self.partial
        if not self.late_finals:
            final = self.asr.finish()
            return final, 0.0, self._partial_after(final)
        self._late.append((self.utterance, self.asr.finish_later()))  # type: ignore[attr-defined]
        if len(self._late) == 1:  # no older final before it: it may be ready already
            late = self._late_final()
            if late is not None:
                return late[1], late[2], self.partial
        return None, 0.0, self.partial

    def _late_final(self) -> tuple[int, str, float] | None:
        """The oldest final still decoding, if it is ready on this frame (replaying: if it
        was on this frame of the recording). While its utterance is still the last one,
        the partial becomes the partial recogniser's final, as it would on the run's end."""
        if not self._late or self.pacing is None:
            return None
        utt, fut = self._late[0]

        def ready(wait: bool) -> LateFinal | None:
            return fut.result() if wait or fut.done() else None

        got = self.pacing.visible(f"final:{utt}", ready)
        if got is None:
            return None
        self._late.popleft()
        text, compute, own = got
        if utt == self.utterance and not self.seg.speaking:
            self.partial = text if own is None else own
        return utt, text, compute

    def _partial_after(self, final: str) -> str:
        """The partial once a run ends: the final, or, when finals come from another
        recogniser than partials, the partial recogniser's own last words (what the
        policies' lexical features were trained on)."""
        own = getattr(self.asr, "partials_final", None)
        return final if own is None else own

    def step(self, mic: np.ndarray) -> ListenerFrame:
        assert mic.shape == (FRAME_SAMPLES,), mic.shape
        prob = self.vad(mic)
        edge = self.seg.step(prob)
        started = edge == "start"
        ended = edge == "end"
        final: str | None = None
        changed = False
        pending = False
        compute = 0.0
        run_duration = 0.0
        if started:
            self.utterance += 1
            self.partial = ""
            self._frames_in_utt = 0
            self._speculating = False
            if self.asr is not None:
                t0 = PerfTimer.now()
                self.asr.start()
                for f in self._preroll:
                    self.asr.accept(f)
                compute += PerfTimer.now() - t0
        if self.seg.speaking or ended:
            if self.asr is not None:
                t0 = PerfTimer.now()
                self.asr.accept(mic)
                self._frames_in_utt += 1
                if self._speculate is not None and self._discard is not None and not ended:
                    if prob >= self.seg.threshold:
                        if self._speculating:
                            self._discard()
                            self._speculating = False
                    elif not self._speculating and self._silence_frames + 1 >= SPECULATE_FINAL_FRAMES:
                        self._speculate()
                        self._speculating = True
                        self._speculations += 1
                if ended:
                    self._speculating = False
                    before = self.partial
                    final, _, after = self._finish()
                    pending = final is None
                    changed = after != before
                    self.partial = after
                elif self._frames_in_utt % self.partial_every == 0:
                    p = self.asr.partial()
                    changed = p != self.partial
                    self.partial = p
                compute += PerfTimer.now() - t0
            elif ended:
                final = ""
        late = self._late_final() if self._late else None
        draft = None
        if self._speculating and self._draft is not None:
            if self.pacing is None:
                draft = self._draft(self.wait_drafts)
            else:
                draft = self.pacing.visible(f"draft:{self._speculations}", self._draft)
        if ended:
            run_duration = self.seg.run_frames * FRAME_MS / 1000
        self._preroll.append(mic)
        if prob >= self.seg.threshold:
            self._silence_frames = 0
        else:
            self._silence_frames += 1
        return ListenerFrame(
            vad=prob,
            user_speaking=self.seg.speaking,
            speech_run=self.seg.run_frames * FRAME_MS / 1000 if self.seg.speaking else 0.0,
            silence=self._silence_frames * FRAME_MS / 1000,
            partial=self.partial,
            utterance=self.utterance,
            started=started,
            ended=ended,
            run_duration=run_duration,
            partial_changed=changed,
            final=final,
            draft=draft,
            asr_compute=compute,
            final_pending=pending,
            late_final=late,
        )

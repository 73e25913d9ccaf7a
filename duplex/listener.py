"""The listening side, frame by frame: VAD, speech runs and streaming ASR.

Shared by the engine and the offline policy harness (``policies``' evaluation), so a
policy sees exactly the same inputs in both. Synchronous and deterministic: the
engine runs :meth:`Listener.step` in an executor thread, one frame at a time.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from duplex.audio import FRAME_MS, FRAME_SAMPLES
from duplex.clock import PerfTimer
from duplex.config import ASRConfig, VADConfig
from duplex.pacing import Pacing
from duplex.stages.asr import StreamingASR
from duplex.stages.vad import VAD, SpeechSegmenter

PREROLL_FRAMES = 10
"""Frames (320 ms) kept before an onset and fed to ASR, so the first word is not clipped."""
SPECULATE_FINAL_MS = 64
"""Quiet inside a speech run after which an ASR that can (``speculate``) starts decoding
the final on its own thread, so it is ready when the run ends (the VAD hangover) or the
policy ends the turn; speech after it discards that decode."""
SPECULATE_FINAL_FRAMES = max(1, SPECULATE_FINAL_MS // FRAME_MS)


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
    """Set on the frame a speech run ended: the ASR's final text of that utterance."""
    asr_compute: float = 0.0
    draft: str | None = None
    """While the user pauses inside a run: the final the ASR decoded ahead (what
    ``final`` will be if the user says nothing more), once it is ready; else ``None``."""


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

    def close_utterance(self) -> tuple[str, float]:
        """End the current speech run now (the policy decided early); returns (final, compute s)."""
        if not self.seg.speaking:
            return self.partial, 0.0
        self.seg.reset()
        self._speculating = False
        t0 = PerfTimer.now()
        final = self.asr.finish() if self.asr is not None else ""
        self.partial = self._partial_after(final)
        return final, PerfTimer.now() - t0

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
                    final = self.asr.finish()
                    after = self._partial_after(final)
                    changed = after != self.partial
                    self.partial = after
                elif self._frames_in_utt % self.partial_every == 0:
                    p = self.asr.partial()
                    changed = p != self.partial
                    self.partial = p
                compute += PerfTimer.now() - t0
            elif ended:
                final = ""
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
        )

"""Live runs decode partials on their own thread: same words, and the frame thread never waits."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from duplex.audio import FRAME_SAMPLES
from duplex.audio.wav import read_audio
from duplex.errors import ASRError
from duplex.stages.asr import BackgroundPartials, GuardedASR, PocketSphinxASR

DATA = Path(__file__).resolve().parent / "data"


def _frames(audio: np.ndarray):
    audio = np.pad(audio, (0, -audio.size % FRAME_SAMPLES))
    for i in range(0, audio.size, FRAME_SAMPLES):
        yield audio[i : i + FRAME_SAMPLES]


def test_the_background_recogniser_writes_the_same_final_and_only_partials_the_recogniser_had() -> None:
    audio = read_audio(DATA / "librivox_0870.wav")
    sync = PocketSphinxASR(fwdflat=False)
    sync.start()
    every: set[str] = {""}
    for frame in _frames(audio):
        sync.accept(frame)
        every.add(sync.partial())
    bg = BackgroundPartials(PocketSphinxASR(fwdflat=False))
    try:
        bg.start()
        seen = []
        for frame in _frames(audio):
            bg.accept(frame)
            seen.append(bg.partial())
        assert bg.finish() == sync.finish() != ""
        assert set(seen) <= every, "a partial is one the recogniser had at some frame, only later"
        assert bg.partial() == ""
        # A second utterance after the first: the thread keeps the order of start/accept/finish.
        bg.start()
        for frame in _frames(audio[: len(audio) // 2]):
            bg.accept(frame)
        assert bg.finish()
    finally:
        bg.close()


class _Stuck:
    """A recogniser that decodes nothing until the test lets it."""

    name = "stuck"

    def __init__(self) -> None:
        self.go = threading.Event()
        self.accepted = 0

    def start(self) -> None:
        pass

    def accept(self, pcm: np.ndarray) -> None:
        self.go.wait()
        self.accepted += 1

    def partial(self) -> str:
        return f"{self.accepted} frames"

    def finish(self) -> str:
        return f"{self.accepted} frames in all"


def test_accept_never_waits_for_the_recogniser_and_finish_waits_for_all_of_it() -> None:
    inner = _Stuck()
    bg = BackgroundPartials(inner)
    try:
        bg.start()
        for _ in range(50):  # the recogniser is stuck: on the caller's thread this would hang
            bg.accept(np.zeros(FRAME_SAMPLES, np.float32))
        assert inner.accepted == 0 and bg.partial() == ""
        inner.go.set()
        assert bg.finish() == "50 frames in all"
    finally:
        inner.go.set()
        bg.close()


class _Broken(_Stuck):
    def accept(self, pcm: np.ndarray) -> None:
        raise RuntimeError("decoder state corrupt")


def test_an_error_on_the_thread_is_the_next_calls_and_costs_the_guarded_ear_one_utterance() -> None:
    bg = BackgroundPartials(_Broken())
    try:
        bg.start()
        bg.accept(np.zeros(FRAME_SAMPLES, np.float32))
        bg.finish()  # runs after the failed accept: the error is now recorded
        with pytest.raises(ASRError, match="decoder state corrupt"):
            bg.partial()
        errors: list[str] = []
        guarded = GuardedASR(bg, errors.append)
        guarded.start()
        guarded.accept(np.zeros(FRAME_SAMPLES, np.float32))
        guarded.finish()
        assert guarded.partial() == "" and len(errors) == 1 and "decoder state corrupt" in errors[0]
    finally:
        bg.close()

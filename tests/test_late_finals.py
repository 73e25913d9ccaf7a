"""A final still decoding never holds up the frame (live runs): the run's end is reported
at once, the words arrive on a later frame, and an end of turn waits for them.

Before this, the listener waited for Whisper's final on the frame the speech run ended:
100-400 ms on a busy 2-core machine (1.6 s seen in a live demo), during which no frame was
played: every "okay" under the agent's voice cut a hole into it.
"""

from __future__ import annotations

import pickle
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from duplex.audio import FRAME_SAMPLES
from duplex.config import ASRConfig, VADConfig
from duplex.events import Arrived, ASRFinal, BargeIn, Decision, EndOfTurn, UserSpeechEnded, UserSpeechStarted
from duplex.listener import LATE_FINALS_KEY, Listener, ListenerFrame
from duplex.pacing import Pacing
from duplex.stages.asr import GuardedASR, LateFinal
from harness import FakeASR, FakeLLM, ScriptedPolicy, make_models, run_timeline, says
from tests.test_pacing import _Vad

DECODE_S = 0.3
"""How long each final takes to decode on the recogniser's thread."""


class LateFinalsASR(FakeASR):
    """FakeASR whose finals decode on a thread of their own for ``decode_s``, as Whisper's do."""

    def __init__(self, script, decode_s: float = DECODE_S) -> None:
        super().__init__(script)
        self.decode_s = decode_s
        self.later = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="fake-final")

    def finish_later(self) -> Future[LateFinal]:
        text = self.partial()
        self.later += 1

        def decode() -> LateFinal:
            time.sleep(self.decode_s)
            return text, self.decode_s, None

        return self._pool.submit(decode)

    def finish(self) -> str:
        time.sleep(self.decode_s)
        self.finishes += 1
        return self.partial()


def _timed_listener(steps: list[float]):
    def wrap(engine) -> None:
        inner = engine.listener.step

        def step(mic: np.ndarray):
            t0 = time.perf_counter()
            try:
                return inner(mic)
            finally:
                steps.append(time.perf_counter() - t0)

        engine.listener.step = step
    return wrap


def test_a_live_run_never_waits_for_a_final_and_the_turn_ends_on_its_words():
    script = [says("tell me about the moon", 0.0, 0.6), says("okay", 2.4, 2.7)]
    asr = LateFinalsASR(script)
    steps: list[float] = []
    run = run_timeline(script, models=make_models(script, asr=asr, llm=FakeLLM(["The moon is a rock " * 8])),
                       duration=4.5, realtime=True, on_engine=_timed_listener(steps))
    assert asr.later == 2 and asr.finishes == 0, "the live run waited for a final"
    assert max(steps) < DECODE_S / 2, f"a listener step took {max(steps) * 1000:.0f} ms"
    ended = run.of(UserSpeechEnded)
    finals = {e.utterance: e for e in run.of(ASRFinal)}
    assert finals[1].text == "tell me about the moon" and finals[2].text == "okay"
    assert finals[1].t > ended[0].t and finals[2].t > ended[1].t, "the finals came with the runs' ends"
    eot = run.first(EndOfTurn)
    assert eot.text == "tell me about the moon" and eot.t >= finals[1].t
    assert run.of(UserSpeechStarted)[1].agent_speaking, "the 'okay' was not under the agent's voice"
    assert not run.of(BargeIn)
    keys = [e.key for e in run.of(Arrived)]
    assert LATE_FINALS_KEY in keys and "final:1" in keys and "final:2" in keys


def test_a_lockstep_run_still_waits_for_its_finals():
    script = [says("tell me about the moon", 0.0, 0.6)]
    asr = LateFinalsASR(script, decode_s=0.05)
    run = run_timeline(script, models=make_models(script, asr=asr), duration=2.0)
    assert asr.finishes == 1 and asr.later == 0
    assert run.first(ASRFinal).t == run.first(UserSpeechEnded).t
    assert run.first(EndOfTurn).text == "tell me about the moon"


def _ends(pacing: Pacing, asr, frame_s: float = 0.0) -> list[tuple[int, bool, object]]:
    lis = Listener(_Vad(5), asr, VADConfig(hangover_ms=96), ASRConfig())
    lis.use_pacing(pacing)
    out = []
    for frame in range(40):
        pacing.frame = frame
        lf = lis.step(np.zeros(FRAME_SAMPLES, np.float32))
        time.sleep(frame_s)
        if lf.ended or lf.late_final is not None:  # (the decode's seconds are each run's own)
            out.append((frame, lf.final_pending, lf.late_final[:2] if lf.late_final else None))
    return out


def test_a_late_final_replays_on_its_recorded_frame_and_old_recordings_wait_as_they_did():
    script = [says("hello", 0.0, 0.2)]
    rec = Pacing()
    live = _ends(rec, LateFinalsASR(script, decode_s=0.25), frame_s=0.02)
    assert live[0][1] is True and live[-1][2] is not None and live[-1][0] > live[0][0]
    log = rec.drain()
    play = Pacing.from_events([Arrived(0.0, key=k, frame=f, value=v) for f, k, v in log])
    assert _ends(play, LateFinalsASR(script, decode_s=0.0)) == live, "replayed on another frame"
    # A recording made before finals came late has no such key: its replay waits, as it ran.
    old = Pacing.from_events([Arrived(0.0, key=k, frame=f, value=v) for f, k, v in log
                              if k != LATE_FINALS_KEY and not k.startswith("final:")])
    asr = LateFinalsASR(script, decode_s=0.0)
    again = _ends(old, asr)
    assert asr.later == 0 and asr.finishes == 1 and again[0][1] is False and len(again) == 1


def test_a_final_that_fails_on_its_thread_is_one_lost_utterance_reported_once():
    errors: list[str] = []

    class Broken(LateFinalsASR):
        def finish_later(self) -> Future[LateFinal]:
            fut: Future[LateFinal] = Future()
            fut.set_exception(RuntimeError("decoder crashed"))
            return fut

    guarded = GuardedASR(Broken([says("hi", 0.0, 0.2)]), errors.append)
    guarded.start()
    assert guarded.finish_later().result(timeout=1) == ("", 0.0, "")
    assert len(errors) == 1 and "decoder crashed" in errors[0]
    assert not guarded.failed, "the recogniser's thread marked the next utterance as failed"
    assert not hasattr(GuardedASR(FakeASR([]), errors.append), "finish_later")


def test_an_end_of_turn_inside_the_hangover_waits_for_the_words_not_the_frame():
    script = [says("tell me about the moon", 0.0, 0.6)]

    def end_in_hangover(x):  # the policy closes the utterance before the VAD does
        return Decision.END_OF_TURN if x.user_turn_open and x.user_speaking and x.silence >= 0.1 else None

    asr = LateFinalsASR(script)
    closes: list[float] = []

    def timed(engine) -> None:
        inner = engine.listener.close_utterance

        def close():
            t0 = time.perf_counter()
            try:
                return inner()
            finally:
                closes.append(time.perf_counter() - t0)

        engine.listener.close_utterance = close

    run = run_timeline(script, policy=ScriptedPolicy(rule=end_in_hangover), models=make_models(script, asr=asr),
                       duration=2.0, realtime=True, on_engine=timed)
    assert asr.later == 1 and asr.finishes == 0 and closes and max(closes) < DECODE_S / 2, closes
    final, eot = run.first(ASRFinal), run.first(EndOfTurn)
    assert eot.text == final.text == "tell me about the moon"
    assert eot.t >= final.t > run.first(UserSpeechEnded).t


def test_a_barge_in_committed_after_its_words_came_keeps_them():
    """Said under the agent's voice, the run ends and its final comes (no user turn holds
    it yet); the policy commits the barge-in a few frames later: the turn has the words."""
    script = [says("tell me about the moon", 0.0, 0.6), says("stop now", 2.4, 2.8)]
    policy = ScriptedPolicy(at={3.3: Decision.BARGE_IN})
    run = run_timeline(script, policy=policy, models=make_models(script, llm=FakeLLM(["The moon is a rock " * 8])),
                       duration=5.0)
    assert run.of(UserSpeechStarted)[1].agent_speaking
    assert run.first(BargeIn).t > run.of(UserSpeechEnded)[1].t, "the barge-in came with the run's end"
    assert [e.text for e in run.of(EndOfTurn)] == ["tell me about the moon", "stop now"]


def test_frames_cached_before_the_late_final_fields_still_load():
    """The evaluation's listener caches hold pickled frames (by position): the new fields
    come last and take their defaults, the old ones keep their values."""
    frame = ListenerFrame(0.7, True, 0.3, 0.064, "so the", 4, draft="So the.", asr_compute=0.02)
    old_state = frame.__getstate__()[:-2]  # what a frame pickled on de991a3 holds
    old = ListenerFrame.__new__(ListenerFrame)
    old.__setstate__(old_state)
    assert old == frame and old.draft == "So the." and old.late_final is None and not old.final_pending
    late = ListenerFrame(0.1, False, 0.0, 0.3, "", 4, late_final=(4, "So the plan.", 0.2))
    assert pickle.loads(pickle.dumps(late)) == late

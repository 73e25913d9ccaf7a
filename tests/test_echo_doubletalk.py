"""The rule policy's double-talk detector: residual echo is not the user."""

from __future__ import annotations

import numpy as np

from duplex.audio import FRAME_SAMPLES
from duplex.config import RulesConfig
from duplex.events import Decision
from duplex.turn import PolicyInput
from policies.doubletalk import DoubleTalkDetector
from policies.rules import RulePolicy

F = FRAME_SAMPLES
RNG = np.random.default_rng(0)


def tone(db: float) -> np.ndarray:
    return (RNG.standard_normal(F) * 10 ** (db / 20)).astype(np.float32)


def frame(t: float, run: float, mic_db: float, raw_db: float | None, play_db: float = -20.0,
          partial: str = "the tall mountain is") -> PolicyInput:
    return PolicyInput(t=t, mic=tone(mic_db), playback=tone(play_db), vad=0.9, user_speaking=True,
                       speech_run=run, silence=0.0, agent_speaking=True, agent_spoken=t, partial=partial,
                       user_turn_open=False, raw_mic=None if raw_db is None else tone(raw_db))


def run_policy(policy: RulePolicy, mic_db: float, raw_db: float | None, seconds: float = 1.2) -> list[Decision]:
    out = []
    n = int(seconds / 0.032)
    for i in range(n):
        d = policy.step(frame(0.032 * (i + 1), 0.032 * (i + 3), mic_db, raw_db)).decision
        if d is not None:
            out.append(d)
    return out


def test_residual_echo_never_barges_in_with_aec():
    # Echo at -26 dBFS cancelled down to -58 dBFS (32 dB ERLE), but loud enough for the VAD.
    assert Decision.BARGE_IN not in run_policy(RulePolicy(), mic_db=-56.0, raw_db=-24.0)


def test_user_over_echo_barges_in_with_aec():
    # The user at -30 dBFS under echo at -24: the canceller removes the echo, not the user.
    assert run_policy(RulePolicy(), mic_db=-31.0, raw_db=-23.0)[:1] == [Decision.BARGE_IN]


def test_no_aec_no_gate_keeps_the_old_behaviour():
    # Without raw_mic and with the gate off, the detector is not consulted at all.
    assert run_policy(RulePolicy(), mic_db=-56.0, raw_db=None)[:1] == [Decision.BARGE_IN]
    gated = RulePolicy(RulesConfig(double_talk_gate=True))
    assert Decision.BARGE_IN not in run_policy(gated, mic_db=-40.0, raw_db=None)
    assert run_policy(gated, mic_db=-18.0, raw_db=None)[:1] == [Decision.BARGE_IN]


def test_vote_is_per_run():
    dtd = DoubleTalkDetector()
    # A run of echo residue...
    assert not any(dtd.step(frame(0.1 * i, 0.1 * i + 0.1, -57.0, -25.0)) for i in range(5))
    # ...then a new run (speech_run restarts) of the user's voice passes quickly.
    votes = [dtd.step(frame(1 + 0.1 * i, 0.1 * i + 0.1, -30.0, -24.0)) for i in range(3)]
    assert votes == [False, True, True]
    assert dtd.last_reduction_db is not None and dtd.last_reduction_db < 12


def test_a_stop_word_barges_in_after_stop_word_min_ms_other_words_after_the_minimum_run():
    def first_barge_in(policy: RulePolicy, partial: str) -> float | None:
        for i in range(40):
            run = 0.032 * (i + 1)
            x = frame(run, run, -20.0, None, partial=partial)
            if policy.step(x).decision is Decision.BARGE_IN:
                return run
        return None

    cfg = RulesConfig(stop_word_min_ms=160, barge_in_min_speech_ms=400)
    stop_at = first_barge_in(RulePolicy(cfg), "wait")
    words_at = first_barge_in(RulePolicy(cfg), "the tall mountain")
    assert stop_at is not None and 0.16 <= stop_at < 0.2
    assert words_at is not None and 0.4 <= words_at < 0.44
    later = first_barge_in(RulePolicy(RulesConfig(stop_word_min_ms=300)), "wait")
    assert later is not None and 0.3 <= later < 0.34

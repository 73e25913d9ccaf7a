"""The ``other_speaker`` case label: read from a case file, scored as a false barge-in by another voice."""

from __future__ import annotations

import numpy as np
import pytest

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.events import Decision
from duplex.session.export import LABELS
from policies import eval as peval
from policies.harness import LabelledEvent, Trace, read_events

FRAME_S = FRAME_SAMPLES / SAMPLE_RATE


def trace(seconds: float, plan: dict[float, Decision]) -> Trace:
    n = round(seconds / FRAME_S)
    t = (np.arange(n) + 1) * FRAME_S
    decisions: list[Decision | None] = [None] * n
    for at, d in plan.items():
        decisions[int(np.searchsorted(t, at - 1e-9))] = d
    return Trace(t, decisions, [{}] * n, np.zeros(n), np.ones(n, dtype=bool), np.zeros(n, dtype=bool))


def test_other_speaker_is_a_case_label(tmp_path):
    assert "other_speaker" in LABELS
    p = tmp_path / "c.tsv"
    p.write_text("1.0\t2.0\tother_speaker\n3.0\t3.5\tbarge_in\n", encoding="utf-8")
    assert [e.label for e in read_events(p)] == ["other_speaker", "barge_in"]


def test_a_barge_in_on_another_voice_is_a_false_barge_in_by_other_voices():
    events = [LabelledEvent(1.0, 2.0, "other_speaker"), LabelledEvent(4.0, 5.0, "other_speaker"),
              LabelledEvent(7.0, 7.8, "barge_in")]
    s = peval.score_case(events, trace(9.0, {1.3: Decision.BARGE_IN, 7.3: Decision.BARGE_IN}))
    assert s.confusion == [("other_speaker", "barge_in"), ("other_speaker", "noise"), ("barge_in", "barge_in")]
    assert s.spurious_barge_ins == 0
    m = peval.summarise([s], np.array([0.001]))
    assert m["false_barge_in_other_speaker"] == pytest.approx(0.5)
    assert m["counts"]["other_speaker"] == 2
    assert m["missed_barge_in_rate"] == 0.0
    assert m["false_barge_in_rate"] is None  # backchannels and noise only: no such events here
    assert "false barge-in on other voices" in peval.format_table({"policies": {"p": m}})

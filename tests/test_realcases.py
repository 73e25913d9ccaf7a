"""Real validation cases: which segments of a diarised recording become which kind of case."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies import realcases as rc

REAL = rc.REALAUDIO


def test_backchannels_are_short_segments_inside_someone_elses_turn() -> None:
    segs = [rc.Seg(0.0, 5.0, "A"), rc.Seg(2.0, 2.4, "B"), rc.Seg(5.2, 5.6, "B"), rc.Seg(6.0, 9.0, "A"),
            rc.Seg(7.0, 8.5, "B")]
    assert rc.backchannels(segs) == [rc.Seg(2.0, 2.4, "B")], "alone (5.2) or long (1.5 s): not a backchannel"


def test_barge_onsets_skip_a_speaker_resuming_after_a_short_pause() -> None:
    segs = [rc.Seg(0.0, 2.0, "A"), rc.Seg(2.3, 4.0, "A"), rc.Seg(4.5, 6.0, "B"), rc.Seg(6.1, 6.5, "A")]
    assert rc.barge_onsets(segs) == [rc.Seg(0.0, 2.0, "A"), rc.Seg(4.5, 6.0, "B")]


def test_clean_turns_end_only_where_the_speaker_really_finished() -> None:
    segs = [rc.Seg(0.0, 3.0, "A"), rc.Seg(3.2, 6.0, "B"), rc.Seg(5.0, 9.0, "A")]
    turns = rc.clean_turns(segs, total=10.0)
    a = next(t for t in turns if t.start == 0.0)
    assert a.eot and a.end == pytest.approx(3.0)
    b = next(t for t in turns if t.start == pytest.approx(3.2))
    assert not b.eot and b.end == pytest.approx(4.95), "A took over mid-turn: B was cut off, no end of turn"


def test_source_of_case_names() -> None:
    assert rc.source_of("02phone-bc1-echo") == "02phone"
    assert rc.source_of("barge_goforward_echo") == "other"


@pytest.mark.skipif(not (REAL / "02_pyannote_sample_phonecall").is_dir(), reason="needs ../shared/realaudio")
def test_the_phone_call_gives_its_real_backchannel() -> None:
    segs = rc.read_rttm(REAL / "02_pyannote_sample_phonecall" / "sample.rttm")
    bcs = rc.backchannels(segs)
    assert [(round(s.start, 2), s.speaker) for s in bcs] == [(18.15, "speaker91")]


@pytest.mark.skipif(not REAL.is_dir(), reason="needs ../shared/realaudio")
def test_every_source_yields_cases(tmp_path: Path) -> None:
    b = rc.CaseBuilder()
    src = next(s for s in rc.SOURCES if s.key == "03ami")
    names = [name for name, audio, events in b.cases(src)]
    kinds = {n.split("-")[1].rstrip("0123456789") for n in names}
    assert kinds == {"bc", "barge", "turn"}
    assert {n.rsplit("-", 1)[1] for n in names} == set(rc.VARIANTS)

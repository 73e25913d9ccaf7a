"""Live sessions replay exactly (issue 16, part 1): what a live run did not wait for is
logged with the frame it was used on (:mod:`duplex.pacing`), and a replay follows the log.

The parts first (the log, the player's staging, the background recogniser's partials, the
listener's drafts), then the whole: a conversation recorded live on the wall clock with a
barge-in, replayed with ``duplex replay --compare``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from duplex.audio import FRAME_SAMPLES
from duplex.audio.player import Player, Segment
from duplex.audio.wav import read_audio
from duplex.cli import main
from duplex.commands import common
from duplex.config import ASRConfig, VADConfig
from duplex.events import Arrived, event_from_dict
from duplex.listener import Listener
from duplex.pacing import Pacing
from duplex.session.report import decision_lines
from duplex.session.store import load_session
from duplex.stages.asr import BackgroundPartials, PacedPartials, PocketSphinxASR
from tests.test_asr_background import _Stuck

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def replaying(log: Pacing) -> Pacing:
    """A replaying pacing from what ``log`` recorded (as a session would carry it)."""
    return Pacing.from_events([Arrived(0.0, key=k, frame=f, value=v) for f, k, v in log.drain()])


# --- the log ------------------------------------------------------------------------------


def test_a_result_is_logged_on_the_frame_it_was_first_used_and_replayed_from_that_frame() -> None:
    rec = Pacing()
    ready = {"a": False}

    def fetch(wait: bool) -> str | None:
        return "words" if ready["a"] or wait else None

    got = []
    for frame in range(6):
        rec.frame = frame
        ready["a"] = frame >= 3
        got.append(rec.visible("draft:1", fetch))
    assert got == [None, None, None, "words", "words", "words"]
    play = replaying(rec)
    waited = []

    def fetch_replay(wait: bool) -> str | None:
        waited.append(wait)
        return "words" if wait else None

    again = []
    for frame in range(6):
        play.frame = frame
        again.append(play.visible("draft:1", fetch_replay))
    assert again == got
    assert waited == [True, True, True], "the replay waits for the result on its recorded frame"
    assert play.visible("draft:2", fetch_replay) is None, "never used live: never used in the replay"


def test_scoped_keys_and_due_keys_keep_their_recorded_order() -> None:
    rec = Pacing()
    first, second = rec.scoped("p0:"), rec.scoped("p1:")
    rec.frame = 4
    first.note("eou:1")
    second.note("eou:1")  # a policy switched in later counts afresh, under its own prefix
    rec.note("seg:2:1")
    rec.note("seg:2:0")
    rec.note("seg:2:0")  # only the first use counts
    rec.frame = 9
    rec.note("seg:3:0")
    log = rec.drain()
    assert [k for _, k, _ in log] == ["p0:eou:1", "p1:eou:1", "seg:2:1", "seg:2:0", "seg:3:0"]
    play = Pacing.from_events([Arrived(0.0, key=k, frame=f, value=v) for f, k, v in log])
    play.frame = 3
    assert play.due_with("seg:") == []
    play.frame = 8
    assert play.due_with("seg:") == ["seg:2:1", "seg:2:0"]
    play.frame = 20
    assert play.due_with("seg:") == ["seg:3:0"]
    assert play.scoped("p1:").due("eou:1") and not play.scoped("p2:").due("eou:1")


def test_arrivals_round_trip_through_the_session_format() -> None:
    ev = Arrived(1.25, key="partial:3:2", frame=39, value=17)
    assert event_from_dict(json.loads(ev.to_json())) == ev


# --- the player ---------------------------------------------------------------------------


def _seg(turn: int, index: int, kind: str = "reply") -> Segment:
    return Segment(turn, np.full(FRAME_SAMPLES * 2, 0.1, np.float32), "hi", kind=kind, index=index)


def test_staged_reply_audio_plays_only_once_released_and_a_flush_drops_it() -> None:
    player = Player(10 * FRAME_SAMPLES)
    player.staging = True
    player.enqueue(_seg(1, 0))
    player.enqueue(_seg(1, 1))
    player.enqueue(_seg(-1, 0, kind="backchannel"))  # the agent's own clip is never staged
    assert player.playing_kind is None and player.is_staged(1, 0)
    assert player.pull().kind == "backchannel"
    assert [s.index for s in player.release(1, 1)] == [1]
    assert not player.is_staged(1, 1) and player.is_staged(1, 0)
    player.flush(1)
    assert not player.is_staged(1, 0) and player.pending == FRAME_SAMPLES
    player.enqueue(_seg(2, 0))
    assert [s.turn for s in player.release()] == [2]


# --- the recogniser's background partials -------------------------------------------------


class _Slow(_Stuck):
    """The held-back recogniser of the background tests, held (the thread lags) or not."""

    def __init__(self, hold: bool) -> None:
        super().__init__()
        if not hold:
            self.go.set()

    def start(self) -> None:
        self.accepted = 0


def test_a_lagging_background_partial_is_replayed_as_the_same_partial() -> None:
    rec = Pacing()
    slow = _Slow(hold=True)
    bg = BackgroundPartials(slow)
    bg.pacing = rec
    frame = np.zeros(FRAME_SAMPLES, np.float32)
    try:
        bg.start()
        seen = []
        for k in range(12):
            bg.accept(frame)
            if k == 5:
                slow.go.set()
            if k % 3 == 2:
                seen.append(bg.partial())
        final = bg.finish()
    finally:
        slow.go.set()
        bg.close()
    assert seen[0] == "" and final == "12 frames in all"
    paced = PacedPartials(_Slow(hold=False), replaying(rec))
    paced.start()
    again = []
    for k in range(12):
        paced.accept(frame)
        if k % 3 == 2:
            again.append(paced.partial())
    assert again == seen
    assert paced.finish() == final


def test_real_partials_recorded_on_a_thread_replay_word_for_word() -> None:
    audio = read_audio(DATA / "librivox_0870.wav")
    audio = np.pad(audio, (0, -audio.size % FRAME_SAMPLES))
    frames = audio.reshape(-1, FRAME_SAMPLES)
    rec = Pacing()
    bg = BackgroundPartials(PocketSphinxASR(fwdflat=False))
    bg.pacing = rec
    try:
        bg.start()
        seen = []
        for k, f in enumerate(frames):
            bg.accept(f)
            time.sleep(0.004)  # a frame loop much faster than real time, slower than a spin
            if k % 4 == 3:
                seen.append(bg.partial())
        final = bg.finish()
    finally:
        bg.close()
    log = rec.drain()
    assert any(v < 4 * r for r, (_, _, v) in enumerate(log, 1)), "the thread never lagged: nothing tested"
    play = Pacing.from_events([Arrived(0.0, key=k, frame=f, value=v) for f, k, v in log])
    paced = PacedPartials(PocketSphinxASR(fwdflat=False), play)
    paced.start()
    again = []
    for k, f in enumerate(frames):
        paced.accept(f)
        if k % 4 == 3:
            again.append(paced.partial())
    assert again == seen and any(seen)
    assert paced.finish() == final != ""


# --- the listener's speculative finals ----------------------------------------------------


class _Speculating(_Slow):
    """A recogniser with speculative finals that become ready when the test says."""

    def __init__(self) -> None:
        super().__init__(hold=False)
        self.ready = False
        self.speculations = 0

    def speculate(self) -> None:
        self.speculations += 1

    def discard_speculation(self) -> None:
        pass

    def draft(self, wait: bool = False) -> str | None:
        return "a draft" if (self.ready or wait) else None


class _Vad:
    """Speech for the first ``speech`` frames, then quiet."""

    def __init__(self, speech: int) -> None:
        self.speech, self.k = speech, 0

    def reset(self) -> None:
        self.k = 0

    def __call__(self, frame: np.ndarray) -> float:
        self.k += 1
        return 0.9 if self.k <= self.speech else 0.0


def _listen(pacing: Pacing, ready_from: int | None) -> list[str | None]:
    asr = _Speculating()
    lis = Listener(_Vad(10), asr, VADConfig(hangover_ms=640), ASRConfig())
    lis.use_pacing(pacing)
    drafts = []
    for frame in range(24):
        pacing.frame = frame
        asr.ready = ready_from is not None and frame >= ready_from
        drafts.append(lis.step(np.zeros(FRAME_SAMPLES, np.float32)).draft)
    return drafts


def test_a_draft_is_used_on_the_frame_the_live_run_first_had_it() -> None:
    rec = Pacing()
    live = _listen(rec, ready_from=15)
    assert live.index("a draft") == 15
    assert _listen(replaying(rec), ready_from=None) == live, "the replay waits for it on frame 15, not before"


# --- the whole conversation -----------------------------------------------------------------


@pytest.fixture
def loaded(models, monkeypatch):
    monkeypatch.setattr(common, "load_models", lambda cfg, make_policy: models)
    return models


def test_a_live_recording_with_a_barge_in_replays_exactly(capsys, tmp_path, loaded):
    """Recorded on the wall clock (``--realtime``) with the predictor (its text model
    scores beside the frame loop) and background partials; replayed twice."""
    out = tmp_path / "live"
    rc = main(["run", "--simulate", str(ROOT / "examples" / "replay_bargein_1.toml"), "--realtime",
               "--policy", "predictor", "--out", str(out), "-q"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    session = load_session(out)
    assert session.meta["clock"] == "live"
    kinds = {e.key.split(":")[0] for e in session.events if isinstance(e, Arrived)}
    assert {"partial", "seg", "done", "p0", "final", "listener"} <= kinds, kinds
    assert sum(e.type == "barge_in" for e in session.events) == 1
    replays = []
    for k in range(2):
        rc = main(["replay", str(out), "--compare", "--out", str(tmp_path / f"replay{k}")])
        cap = capsys.readouterr()
        assert rc == 0, cap.out[-3000:]
        assert "decisions identical to the recording" in cap.out
        assert "approximately" not in cap.err
        replays.append(decision_lines(load_session(tmp_path / f"replay{k}").events))
    assert replays[0] == replays[1] == decision_lines(session.events)
    assert (tmp_path / "replay0" / "agent.wav").read_bytes() == (out / "agent.wav").read_bytes()
    # A hand-edited arrival is no traceback: the replay runs and says it differs.
    events = out / "events.jsonl"
    text = events.read_text(encoding="utf-8")
    assert '"key":"seg:1:0"' in text
    events.write_text(text.replace('"key":"seg:1:0"', '"key":"seg:one"'), encoding="utf-8")
    rc = main(["replay", str(out), "--compare"])
    cap = capsys.readouterr()
    assert rc == 1 and "decisions DIFFER" in cap.out, cap.out[-2000:]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_live_recording_with_five_barge_ins_on_a_loaded_machine_replays_exactly(tmp_path):
    """The real commands in fresh processes, two CPU burners beside the recording (so
    models answer late and the agent plays silence where it waited), none beside the
    replay (so they answer early and must be held back)."""
    out = tmp_path / "live"
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        p = subprocess.run([sys.executable, "-m", "duplex.cli", "run", "--simulate",
                            str(ROOT / "examples" / "replay_bargein_5.toml"), "--realtime", "--out", str(out), "-q"],
                           cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert all(b.poll() is None for b in burners), "a burner died: the load was not there"
    finally:
        for b in burners:
            b.kill()
            b.wait()
    assert p.returncode == 0, p.stderr[-3000:]
    assert load_session(out).meta["clock"] == "live"
    assert sum(e.type == "barge_in" for e in load_session(out).events) == 5
    p = subprocess.run([sys.executable, "-m", "duplex.cli", "replay", str(out), "--compare"], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:]
    assert "decisions identical to the recording" in p.stdout

"""Deterministic replay with interruptions (issue 16, part 1).

Sessions with 1, 5 and 20 barge-ins are recorded with ``duplex run --simulate`` (the
scripts in ``examples/replay_bargein_*.toml``: every barge-in cuts an LLM reply and is
itself a question, so the next reply comes from the LLM after a cancel), replayed with
``duplex replay --compare`` (exit 0: decisions identical), and recorded N = 3 times by
the same command: the session files must be byte-identical.

Byte-identical means: ``mic.wav`` and ``agent.wav`` byte for byte; ``session.json``
but for ``started`` (the wall-clock date); ``events.jsonl`` line for line after
:func:`normalised_events` takes out what measures the machine rather than the
conversation:

* wall-clock compute times: ``asr_final.compute`` and ``turn_latency``'s
  ``asr_final``, ``llm_first_token``, ``tts_first_audio``, ``voice_to_voice`` (in
  lockstep that last one adds the compute still outstanding at the decision);
* how far the LLM got before it was cancelled, which is how fast it ran: the
  ``llm_token`` and ``text_to_tts`` events (their count and session times) and
  ``agent_turn_ended.generated`` (already outside replay's comparison,
  :attr:`AgentTurnEnded.NOT_COMPARED`). What was *heard* (``audio_played``,
  ``agent_turn_ended.heard``, ``agent.wav``) is compared.

The in-process tests share one set of loaded models across recordings and replays, as
a CI job or a TUI session that replays would: the LLM's KV cache and the recogniser
carry state from one conversation into the next. The slow load test runs the real
command in fresh processes, with two busy CPU burners beside it.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from duplex.cli import main
from duplex.commands import common
from duplex.session.store import load_session

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
N_RUNS = 3

WALL_CLOCK_FIELDS: dict[str, tuple[str, ...]] = {
    "asr_final": ("compute",),
    "turn_latency": ("asr_final", "llm_first_token", "tts_first_audio", "voice_to_voice"),
    "agent_turn_ended": ("generated",),
}
"""Fields that measure compute speed, left out of the byte comparison."""
SPEED_EVENTS = frozenset({"llm_token", "text_to_tts"})
"""Events whose number depends on how far the LLM got before a cancel."""


def script(n_barge_ins: int) -> Path:
    return EXAMPLES / f"replay_bargein_{n_barge_ins}.toml"


def normalised_events(session: Path) -> list[str]:
    """``events.jsonl`` without the machine-speed events and fields (module docstring)."""
    out = []
    for line in (session / "events.jsonl").read_text(encoding="utf-8").splitlines():
        ev = json.loads(line)
        if ev["type"] in SPEED_EVENTS:
            continue
        for k in WALL_CLOCK_FIELDS.get(ev["type"], ()):
            ev.pop(k)
        out.append(json.dumps(ev, sort_keys=True, separators=(",", ":")))
    return out


def normalised_meta(session: Path) -> dict:
    meta = json.loads((session / "session.json").read_text(encoding="utf-8"))
    meta.pop("started")
    return meta


def assert_identical_sessions(sessions: list[Path]) -> None:
    """Every session's files equal the first's (byte for byte, less the exclusions)."""
    first = sessions[0]
    for other in sessions[1:]:
        for wav in ("mic.wav", "agent.wav"):
            assert (first / wav).read_bytes() == (other / wav).read_bytes(), f"{wav}: {first} vs {other}"
        a, b = normalised_events(first), normalised_events(other)
        if a != b:
            k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            raise AssertionError(f"events.jsonl of {other.name} differs from {first.name} at event {k} "
                                 f"({len(a)} vs {len(b)} events):\n  {a[k] if k < len(a) else '<end>'}\n"
                                 f"  {b[k] if k < len(b) else '<end>'}")
        assert normalised_meta(first) == normalised_meta(other)


def barge_ins(session: Path) -> int:
    return sum(1 for e in load_session(session).events if e.type == "barge_in")


@pytest.fixture
def loaded(models, monkeypatch):
    """The commands use the session's loaded models (the fixture's config is the default
    profile with ``--policy rules``, what the command lines below ask for)."""
    monkeypatch.setattr(common, "load_models", lambda cfg, make_policy: models)
    return models


def record(capsys, n_barge_ins: int, out: Path) -> None:
    rc = main(["run", "--simulate", str(script(n_barge_ins)), "--policy", "rules", "--out", str(out), "-q"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert f"session recorded in {out}/" in cap.out


def replay_compare(capsys, session: Path) -> str:
    rc = main(["replay", str(session), "--compare"])
    cap = capsys.readouterr()
    assert rc == 0, cap.out[-3000:]
    assert "decisions identical to the recording" in cap.out
    return cap.out


def check_deterministic(capsys, tmp_path: Path, n_barge_ins: int) -> None:
    runs = [tmp_path / f"run{k}" for k in range(N_RUNS)]
    for d in runs:
        record(capsys, n_barge_ins, d)
    assert barge_ins(runs[0]) == n_barge_ins
    assert_identical_sessions(runs)
    replay_compare(capsys, runs[0])


def test_one_barge_in_records_identically_and_replays_exactly(capsys, tmp_path, loaded):
    check_deterministic(capsys, tmp_path, 1)


@pytest.mark.slow
def test_five_barge_ins_record_identically_and_replay_exactly(capsys, tmp_path, loaded):
    check_deterministic(capsys, tmp_path, 5)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 4 conversations of ~2 session-minutes: over 10 min on a loaded 2-core box
def test_twenty_barge_ins_record_identically_and_replay_exactly(capsys, tmp_path, loaded):
    check_deterministic(capsys, tmp_path, 20)


def test_the_normalisation_still_sees_a_changed_decision(tmp_path, cfg):
    """The comparison can fail: one heard word changed in events.jsonl is a difference."""
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        for wav in ("mic.wav", "agent.wav"):
            (d / wav).write_bytes(b"RIFF")
        (d / "session.json").write_text(json.dumps({"started": str(d), "complete": True}))
    line = {"t": 1.0, "type": "agent_turn_ended", "turn": 1, "interrupted": True, "heard": "The moon",
            "generated": "The moon is far"}
    (a / "events.jsonl").write_text(json.dumps(line) + "\n" + json.dumps({"t": 1.0, "type": "llm_token"}) + "\n")
    (b / "events.jsonl").write_text(json.dumps({**line, "generated": "The moon is"}) + "\n")
    assert_identical_sessions([a, b])  # speed only: equal
    (b / "events.jsonl").write_text(json.dumps({**line, "heard": "The sun"}) + "\n")
    with pytest.raises(AssertionError, match="differs"):
        assert_identical_sessions([a, b])


# --- fresh processes, the machine loaded -------------------------------------------------


@contextlib.contextmanager
def cpu_burners(n: int = 2) -> Iterator[list[subprocess.Popen]]:
    """``n`` processes spinning Python loops (as many as this machine's cores, at most 2)."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


def duplex_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "duplex.cli", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_fresh_processes_under_cpu_load_record_identically_and_replay_exactly(tmp_path):
    """The real command, three fresh processes, two CPU burners running beside them."""
    runs = [tmp_path / f"run{k}" for k in range(N_RUNS)]
    with cpu_burners() as burners:
        for d in runs:
            p = duplex_cli("run", "--simulate", str(script(5)), "--policy", "rules", "--out", str(d), "-q")
            assert p.returncode == 0, p.stderr
        p = duplex_cli("replay", str(runs[0]), "--compare")
        assert all(b.poll() is None for b in burners), "a burner died: the load was not there"
    assert p.returncode == 0, p.stdout[-3000:]
    assert "decisions identical to the recording" in p.stdout
    assert barge_ins(runs[0]) == 5
    assert_identical_sessions(runs)


def test_run_names_the_speaker_gate_once(capsys, tmp_path, loaded):
    """The transcript carries the gate's notice; the mode line is printed only with -q."""
    for quiet, expected in ((False, "[   0.00]   note: speaker gate:"), (True, "speaker gate:")):
        out = tmp_path / f"q{int(quiet)}"
        argv = ["run", "--simulate", str(script(1)), "--policy", "rules", "--out", str(out)]
        rc = main(argv + (["-q"] if quiet else []))
        cap = capsys.readouterr()
        assert rc == 0, cap.err
        lines = [line for line in cap.out.splitlines() if "speaker gate:" in line]
        assert len(lines) == 1 and lines[0].startswith(expected), lines

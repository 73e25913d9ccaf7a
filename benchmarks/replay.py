"""Replay speed: a recorded session of a minute or more, replayed on the simulated clock.

Records one long scripted conversation (questions, answers, backchannels, barge-ins) in
lockstep, or takes ``--session DIR``, then replays it ``--repeat`` times through the whole
pipeline (VAD, ASR, policy, LLM, TTS regenerated) and reports wall time against session
time: a ratio below 1 is faster than real time. Process CPU time is reported too: on a
shared machine it says what the replay itself costs, whatever else is running. Each
replay must give the same decision events (checked). Results go to one JSON file keyed
by policy (the policy runs on the loop every 32 ms frame, so it is part of the cost).

    python benchmarks/replay.py [--session DIR | --keep DIR] [--policy rules] [--repeat 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE  # noqa: E402
from duplex.config import load_config  # noqa: E402
from duplex.session.replay import replay, session_config  # noqa: E402
from duplex.session.report import compare_decisions, decision_lines  # noqa: E402
from duplex.session.scenario import ScenarioRunner, parse_scenario  # noqa: E402
from duplex.session.store import load_session  # noqa: E402
from duplex.stages.factory import load_models  # noqa: E402
from policies import make_policy  # noqa: E402

MIN_SESSION_S = 60.0

LONG_CONVERSATION = {
    "name": "replay-benchmark",
    "description": "A minute or more of conversation: nine questions, three backchannels, two barge-ins.",
    "max_wait_s": 30.0,
    "tail_s": 2.0,
    "say": [
        {"text": "Hi there. Can you tell me something about the moon?", "at": 0.5},
        {"text": "Mm-hmm.", "after_agent_speech": 1.5},
        {"text": "How far away is it from the earth?", "after_agent_done": 0.8},
        {"text": "Wait, stop. How long would it take to fly there?", "after_agent_speech": 2.0},
        {"text": "And what about Mars?", "after_agent_done": 0.8},
        {"text": "Okay.", "after_agent_speech": 2.0},
        {"text": "Could people live on Mars [pause 500] one day?", "after_agent_done": 0.8},
        {"text": "No, no. I mean without space suits.", "after_agent_speech": 2.5},
        {"text": "What is the biggest planet?", "after_agent_done": 0.8},
        {"text": "Thank you. And the smallest one?", "after_agent_done": 0.8},
        {"text": "Is Jupiter made of gas?", "after_agent_done": 0.8},
        {"text": "Yeah.", "after_agent_speech": 1.5},
        {"text": "How many moons does it have?", "after_agent_done": 0.8},
        {"text": "Great, thanks a lot.", "after_agent_done": 0.8},
    ],
}


def record(cfg, models, out: Path) -> tuple[Path, float]:
    t0 = time.perf_counter()
    res = ScenarioRunner(cfg, models, keep_dir=out).run(parse_scenario(LONG_CONVERSATION))
    assert res.session_dir is not None
    return res.session_dir, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/replay.py", description=__doc__.split("\n")[0])
    ap.add_argument("--session", help="replay this session instead of recording the built-in conversation")
    ap.add_argument("--keep", help="record the built-in conversation into this directory (kept for --session)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--policy", help="record and replay with this policy (default: the profile's)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "replay.json"))
    args = ap.parse_args(argv)

    overrides = [{"recording": {"enabled": False}}]
    if args.policy:
        overrides.append({"policy": {"name": args.policy}})
    cfg = load_config(None, overrides)
    t0 = time.perf_counter()
    models = load_models(cfg, make_policy)
    load_s = time.perf_counter() - t0
    record_wall = None
    tmp = tempfile.TemporaryDirectory(prefix="duplex-replay-bench-")
    if args.session:
        session_dir = Path(args.session)
    else:
        session_dir, record_wall = record(cfg, models, Path(args.keep or tmp.name))
    session = load_session(session_dir)
    if session.duration < MIN_SESSION_S:
        print(f"warning: the session is {session.duration:.1f} s, shorter than {MIN_SESSION_S:.0f} s", file=sys.stderr)
    rcfg = session_config(session, overrides=overrides[1:])

    runs = []
    first = None
    for _ in range(args.repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        res = asyncio.run(replay(session, rcfg, models))
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        replayed_s = res.stats.frames * FRAME_SAMPLES / SAMPLE_RATE
        lines = decision_lines(res.events)
        first = first or lines
        runs.append({"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "replayed_s": round(replayed_s, 3),
                     "ratio": round(wall / replayed_s, 3), "cpu_ratio": round(cpu / replayed_s, 3),
                     "decisions": len(lines), "identical_to_first": lines == first,
                     "identical_to_recording": not compare_decisions(session.events, res.events),
                     "load_avg_1m": round(os.getloadavg()[0], 2)})

    best = min(runs, key=lambda r: r["ratio"])
    result = {
        "session_s": round(session.duration, 3),
        "record_wall_s": round(record_wall, 3) if record_wall is not None else None,
        "model_load_s": round(load_s, 3),
        "runs": runs,
        "best_ratio": best["ratio"],
        "faster_than_real_time": best["ratio"] < 1.0,
        "deterministic": all(r["identical_to_first"] for r in runs),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "config": {"asr": cfg.asr.backend, "llm": cfg.llm.model, "tts": cfg.tts.backend, "policy": cfg.policy.name},
        "command": "python benchmarks/replay.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    print(f"session {session.duration:.1f} s ({len(first or [])} decision events); models loaded in {load_s:.1f} s"
          + (f"; recorded in {record_wall:.1f} s" if record_wall is not None else ""))
    print(f"{'run':>3}  {'wall s':>7}  {'cpu s':>7}  {'wall/session':>12}  {'cpu/session':>11}  {'load':>5}  same decisions")
    for k, r in enumerate(runs, 1):
        print(f"{k:>3}  {r['wall_s']:7.1f}  {r['cpu_s']:7.1f}  {r['ratio']:12.2f}  {r['cpu_ratio']:11.2f}  "
              f"{r['load_avg_1m']:5.1f}  {'yes' if r['identical_to_first'] and r['identical_to_recording'] else 'NO'}")
    print(f"best: {best['ratio']:.2f}x real time ({'faster' if best['ratio'] < 1 else 'slower'} than real time)")
    # One file for every policy measured: each run replaces its own policy's entry.
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        merged = json.loads(out.read_text(encoding="utf-8")).get("by_policy", {})
    except (OSError, ValueError, AttributeError):
        merged = {}
    merged[cfg.policy.name] = result
    out.write_text(json.dumps({"by_policy": merged}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.cleanup()
    return 0 if result["deterministic"] else 1


if __name__ == "__main__":
    sys.exit(main())

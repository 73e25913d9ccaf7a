"""Benchmark: how long each frame's listen-and-decide hop takes in a live conversation.

``python benchmarks/frame_hop.py [--runs 3]`` holds the packaged demo conversation
(``examples/demo.toml``: a question, an "okay" under the agent's voice, a barge-in, two
more turns) live on the wall clock (``--realtime``, the default profile: Whisper finals,
pocketsphinx partials, the predictor, every model on this CPU) and times every frame's
hop to the executor (echo canceller, listener, speaker gate, policy) on the wall clock.
The engine plays the next 32 ms chunk only after the hop returns, so a hop longer than
a frame is a hole in the agent's voice (and a late decision). Reported: hop p50 / p99 /
max, hops over one frame, and the longest hop on the frames a speech run ended (the
frames that used to wait for Whisper's final), split by whether the agent was speaking.
Prints a table and adds it to ``benchmarks/results/frame_hop.json`` under ``--label``
(other labels there are kept: run it in two trees with ``--out`` pointing at one file
for a side-by-side, as the README's before/after was made).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from duplex.app import make_source, run_conversation  # noqa: E402
from duplex.audio import FRAME_MS  # noqa: E402
from duplex.config import load_config  # noqa: E402
from duplex.stages.factory import load_models  # noqa: E402
from policies import make_policy  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "frame_hop.json"
SCRIPT = ROOT / "examples" / "demo.toml"


def run_once(models: Any) -> list[tuple[float, bool, bool]]:
    """One live demo conversation; per frame: (hop seconds, agent speaking, a run ended)."""
    hops: list[tuple[float, bool, bool]] = []

    def timed(engine: Any) -> None:
        inner = engine._hear

        def hear(policy: Any, mic: Any, playback: Any, floor: Any, t_sim: Any) -> Any:
            t0 = time.perf_counter()
            out = inner(policy, mic, playback, floor, t_sim)
            hops.append((time.perf_counter() - t0, bool(floor.agent_speaking), bool(out[0].ended)))
            return out

        engine._hear = hear

    cfg = load_config(None, [])
    source = make_source(None, str(SCRIPT), models, True)
    asyncio.run(run_conversation(cfg, models, source, on_engine=timed))
    return hops


def summary(hops: list[tuple[float, bool, bool]]) -> dict[str, Any]:
    ms = np.array([h[0] for h in hops]) * 1000
    ends = [h[0] * 1000 for h in hops if h[2]]
    ends_agent = [h[0] * 1000 for h in hops if h[2] and h[1]]
    return {
        "frames": len(hops),
        "hop_ms_p50": round(float(np.percentile(ms, 50)), 1),
        "hop_ms_p99": round(float(np.percentile(ms, 99)), 1),
        "hop_ms_max": round(float(ms.max()), 1),
        "hops_over_one_frame": int((ms > FRAME_MS).sum()),
        "run_end_hop_ms_max": round(max(ends), 1) if ends else None,
        "run_end_hop_ms": [round(x, 1) for x in ends],
        "run_end_under_agent_hop_ms": [round(x, 1) for x in ends_agent],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--label", default="this tree")
    a = ap.parse_args(argv)
    models = load_models(load_config(None, []), make_policy)
    hops: list[tuple[float, bool, bool]] = []
    runs = []
    for _ in range(a.runs):
        h = run_once(models)
        runs.append(summary(h))
        hops += h
    total = summary(hops)
    total["run_end_hop_ms_p50"] = round(float(np.median(total["run_end_hop_ms"])), 1) if total["run_end_hop_ms"] else None
    print("| tree | frames | hop p50 / p99 / max (ms) | hops over 32 ms | run-end hops (ms) | run ends under the agent's voice (ms) |")
    print("| --- | ---: | ---: | ---: | --- | --- |")
    print(f"| {a.label} | {total['frames']} | {total['hop_ms_p50']} / {total['hop_ms_p99']} / {total['hop_ms_max']} "
          f"| {total['hops_over_one_frame']} | {total['run_end_hop_ms']} | {total['run_end_under_agent_hop_ms']} |")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    report = json.loads(a.out.read_text()) if a.out.exists() else {}
    report.setdefault("script", str(SCRIPT.relative_to(ROOT)))
    report.setdefault("trees", {})[a.label] = {**total, "runs": runs}
    a.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

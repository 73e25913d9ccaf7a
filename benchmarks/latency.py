"""Latency benchmark: voice-to-voice per turn and barge-in stop time, per policy.

Runs scripted users (``benchmarks/scripts/*.toml``) through the whole packaged stack,
paced on the wall clock like a microphone (``--mode realtime``, the default), so every
figure is a real measurement on this machine: end of user speech → first agent audio
(voice-to-voice), split into the end-of-turn decision, ASR final, LLM first token and
TTS first audio; and barge-in onset → agent silent. Policies run side by side in one
process on the same models. ``--mode lockstep`` runs on the simulated clock instead
(fast; voice-to-voice then adds the measured compute to the decision delay).

    python benchmarks/latency.py [--policies rules,predictor] [--mode realtime]
    duplex bench ...            (the same)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from duplex.app import run_conversation  # noqa: E402
from duplex.config import load_config  # noqa: E402
from duplex.engine import load_models  # noqa: E402
from duplex.events import AgentStopped, BargeIn, TurnLatency  # noqa: E402
from duplex.simuser import SimulatedUser, UserVoice, load_script  # noqa: E402


def pct(xs: list[float], q: float) -> float | None:
    return float(np.percentile(xs, q)) if xs else None


def ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f}"


def run_policy(cfg, models, scripts: list[Path], realtime: bool) -> dict:
    lat: list[TurnLatency] = []
    stops: list[float] = []
    reactions: list[float] = []
    for s in scripts:
        voice, utts = load_script(s)
        user = SimulatedUser(utts, UserVoice(voice, models.tts), base_dir=s.parent, realtime=realtime)
        res = asyncio.run(run_conversation(cfg, models, user))
        lat += [e for e in res.events if isinstance(e, TurnLatency)]
        stops += [e.latency for e in res.events if isinstance(e, AgentStopped)]
        reactions += [e.reaction for e in res.events if isinstance(e, BargeIn)]
    v2v = [x.voice_to_voice for x in lat if x.voice_to_voice is not None]
    col = {
        "turns": len(lat),
        "v2v_p50": pct(v2v, 50), "v2v_p95": pct(v2v, 95),
        "eot_p50": pct([x.end_of_turn for x in lat], 50),
        "asr_final_p50": pct([x.asr_final for x in lat], 50),
        "llm_ttft_p50": pct([x.llm_first_token for x in lat if x.llm_first_token is not None], 50),
        "tts_first_audio_p50": pct([x.tts_first_audio for x in lat if x.tts_first_audio is not None], 50),
        "barge_ins": len(stops),
        "barge_in_decision_p50": pct(reactions, 50),
        "stop_p50": pct(stops, 50), "stop_p95": pct(stops, 95),
        "turn_latencies": [x.to_dict() for x in lat],
    }
    return col


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="duplex bench", description=__doc__.split("\n")[0])
    ap.add_argument("--policies", default="rules,predictor")
    ap.add_argument("--mode", choices=["realtime", "lockstep"], default="realtime")
    ap.add_argument("--scripts", nargs="*", default=None)
    ap.add_argument("--config", default=None)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "latency.json"))
    args = ap.parse_args(argv)
    base = load_config(args.config, [{"recording": {"enabled": False}}])
    scripts = [Path(p) for p in args.scripts] if args.scripts else sorted((ROOT / "benchmarks" / "scripts").glob("*.toml"))
    print(f"loading models ({base.llm.backend} {Path(base.llm.model).name}, {base.tts.backend}, {base.asr.backend})...",
          file=sys.stderr)
    models = load_models(base)
    results: dict[str, dict] = {}
    for name in [p.strip() for p in args.policies.split(",") if p.strip()]:
        cfg = replace(base, policy=replace(base.policy, name=name))
        print(f"running {len(scripts)} scripted conversations with policy {name} ({args.mode})...", file=sys.stderr)
        results[name] = run_policy(cfg, models, scripts, args.mode == "realtime")
    rows = [
        ("turns", "turns", str), ("voice-to-voice p50 (ms)", "v2v_p50", ms), ("voice-to-voice p95 (ms)", "v2v_p95", ms),
        ("  end-of-turn decision p50", "eot_p50", ms), ("  ASR final p50", "asr_final_p50", ms),
        ("  LLM first token p50", "llm_ttft_p50", ms), ("  TTS first audio p50", "tts_first_audio_p50", ms),
        ("barge-ins", "barge_ins", str), ("  barge-in decision p50 (ms)", "barge_in_decision_p50", ms),
        ("  onset → agent silent p50 (ms)", "stop_p50", ms), ("  onset → agent silent p95 (ms)", "stop_p95", ms),
    ]
    names = list(results)
    print(f"\n| metric ({args.mode}) | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for label, key, fmt in rows:
        print(f"| {label} | " + " | ".join(fmt(results[n][key]) for n in names) + " |")
    out = {"mode": args.mode, "scripts": [s.name for s in scripts], "machine": platform.machine(),
           "cpus": __import__("os").cpu_count(), "policies": results,
           "command": "python benchmarks/latency.py " + " ".join(argv or sys.argv[1:])}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    print(f"\nwritten {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Latency benchmark: voice-to-voice per turn and barge-in stop time, per policy.

Runs scripted users (:data:`DEFAULT_SCRIPTS`, shipped in ``duplex/bench/scripts``)
through the whole stack, paced on the wall clock like a microphone (``realtime``, the
default), so every figure is a real measurement on this machine: end of user speech →
first agent audio (voice-to-voice), split into the end-of-turn decision, ASR final, LLM
first token and TTS first audio; and barge-in onset → agent silent. Policies run side by
side in one process on the same models (built by ``models.make_policy``).
``lockstep`` runs on the simulated clock instead (fast; voice-to-voice then adds the
measured compute to the decision delay).

``duplex bench`` and ``python benchmarks/latency.py`` both run :func:`run_benchmark`.
"""

from __future__ import annotations

import asyncio
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from duplex.app import run_conversation
from duplex.config import Config
from duplex.errors import ConfigError
from duplex.audio import FRAME_MS
from duplex.events import AgentPaused, AgentResumed, AgentStopped, BargeIn, Event, TurnLatency
from duplex.simuser import SimulatedUser, UserVoice, load_script
from duplex.stages.factory import Models

SCRIPTS_DIR = Path(__file__).resolve().parent / "scripts"
DEFAULT_SCRIPTS = tuple(sorted(SCRIPTS_DIR.glob("*.toml")))
MODES = ("realtime", "lockstep")

Progress = Callable[[str], None]


def silent_after_onset(events: list[Event]) -> list[float]:
    """Onset to the agent going silent, per barge-in: the pause that preceded the commit
    (when the policy paused first, that is when the user heard the agent stop), else the
    stop after the commit."""
    out: list[float] = []
    paused: dict[int, float] = {}
    for e in events:
        if isinstance(e, AgentPaused):
            paused[e.turn] = e.reaction + FRAME_MS / 1000  # the chunk after the decision is silent
        elif isinstance(e, AgentResumed):
            paused.pop(e.turn, None)
        elif isinstance(e, AgentStopped):
            out.append(min(e.latency, paused.pop(e.turn, e.latency)))
    return out


def pct(xs: Sequence[float], q: float) -> float | None:
    return float(np.percentile(xs, q)) if xs else None


def ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f}"


def run_policy(cfg: Config, models: Models, scripts: Sequence[Path], realtime: bool) -> dict[str, Any]:
    """Every script once with ``cfg``'s policy; the latency figures (seconds) of all turns."""
    lat: list[TurnLatency] = []
    stops: list[float] = []
    reactions: list[float] = []
    for s in scripts:
        voice, utts = load_script(s)
        user = SimulatedUser(utts, UserVoice(voice, models.tts), base_dir=s.parent, realtime=realtime)
        res = asyncio.run(run_conversation(cfg, models, user))
        lat += [e for e in res.events if isinstance(e, TurnLatency)]
        stops += silent_after_onset(res.events)
        reactions += [e.reaction for e in res.events if isinstance(e, BargeIn)]
    v2v = [x.voice_to_voice for x in lat if x.voice_to_voice is not None]
    return {
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


def check_scripts(paths: Sequence[str | Path] | None) -> list[Path]:
    """The scripts to run (the shipped ones by default), each parsed once so a bad one
    fails before any model loads."""
    scripts = [Path(p) for p in paths] if paths else list(DEFAULT_SCRIPTS)
    if not scripts:
        raise ConfigError(f"no benchmark scripts (none given and none in {SCRIPTS_DIR})")
    for s in scripts:
        load_script(s)
    return scripts


def run_benchmark(base: Config, models: Models, policies: Sequence[str], scripts: Sequence[Path],
                  mode: str = "realtime", progress: Progress | None = None) -> dict[str, Any]:
    """Run every script with every policy; the JSON-ready report (see :func:`format_table`)."""
    if mode not in MODES:
        raise ConfigError(f"bench mode must be one of {', '.join(MODES)}, got {mode!r}")
    results: dict[str, dict[str, Any]] = {}
    for name in policies:
        cfg = replace(base, policy=replace(base.policy, name=name))
        if progress is not None:
            progress(f"running {len(scripts)} scripted conversations with policy {name} ({mode})...")
        results[name] = run_policy(cfg, models, scripts, mode == "realtime")
    return {"mode": mode, "scripts": [s.name for s in scripts], "machine": platform.machine(),
            "cpus": os.cpu_count(), "policies": results}


ROWS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("turns", "turns", str), ("voice-to-voice p50 (ms)", "v2v_p50", ms), ("voice-to-voice p95 (ms)", "v2v_p95", ms),
    ("  end-of-turn decision p50", "eot_p50", ms), ("  ASR final p50", "asr_final_p50", ms),
    ("  LLM first token p50", "llm_ttft_p50", ms), ("  TTS first audio p50", "tts_first_audio_p50", ms),
    ("barge-ins", "barge_ins", str), ("  barge-in decision p50 (ms)", "barge_in_decision_p50", ms),
    ("  onset → agent silent p50 (ms)", "stop_p50", ms), ("  onset → agent silent p95 (ms)", "stop_p95", ms),
)


def format_table(report: dict[str, Any]) -> str:
    """A Markdown table: metrics as rows, policies as columns."""
    results = report["policies"]
    names = list(results)
    lines = [f"| metric ({report['mode']}) | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, key, fmt in ROWS:
        lines.append(f"| {label} | " + " | ".join(fmt(results[n][key]) for n in names) + " |")
    return "\n".join(lines)

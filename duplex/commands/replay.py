"""``duplex replay``: a recorded session through the pipeline again, on the simulated clock.

Exit status: 0 fine, 1 when ``--compare`` finds decisions that differ from the recording.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from duplex.app import ConsolePrinter
from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.clock import PerfTimer
from duplex.config import Config
from duplex.commands.common import (
    EXIT_DIFFERENT,
    EXIT_OK,
    add_config_arguments,
    load_all_models,
    note,
    overrides,
    session_dir,
    session_failure,
    write_json,
)
from duplex.commands.run import report_end
from duplex.commands.talk import tui_exit
from duplex.session.recorder import model_identities
from duplex.session.replay import (
    ReplaySource,
    recorded_commands,
    recorded_pacing,
    replay,
    replays_exactly,
    session_config,
)
from duplex.session.report import build_report, compare_decisions, decision_lines
from duplex.session.store import Session, load_session
from duplex.stages.factory import Models
from tui.cli import run_tui



def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("session", help="a session directory")
    p.add_argument("--realtime", action="store_true", help="pace on the wall clock")
    p.add_argument("--compare", action="store_true", help="exit 1 if decisions differ from the recording")
    p.add_argument("--json", help="write the interruption report here")
    p.add_argument("--out", "-o", help="record the replay as a new session here")
    p.add_argument("--force", action="store_true", help="with --out: record over a session already there")
    p.add_argument("--tui", action="store_true", help="watch the replay in the terminal UI")
    add_config_arguments(p)


def run(args: argparse.Namespace, models: Models | None = None) -> int:
    """``models``: already loaded ones (tests), else they load for the session's config."""
    session = load_session(args.session)
    for w in session.warnings:
        note(w)
    if not session.complete:
        why = session.meta.get("failed") or "it did not close (the recording process was killed or crashed)"
        note(f"the session is incomplete: {why}; it replays up to where the recording stops")
    cfg = session_config(session, args.config, overrides(args))
    changed = model_changes(session.meta.get("models") or {}, model_identities(cfg))
    if changed:
        note("models differ from the recording (" + "; ".join(changed) + "): decisions may differ")
    with session_dir(args, cfg, "replay", fresh=False) as out:
        status = replay_into(args, session, cfg, models, out)
    if out is None or status not in (EXIT_OK, EXIT_DIFFERENT):
        return status
    recorded = report_end(out, session_failure(out), None)
    return recorded or status


def replay_into(args: argparse.Namespace, session: Session, cfg: Config, models: Models | None,
                out: Path | None) -> int:
    """Load the models and replay ``session`` (into ``out`` if given); the report on stdout."""
    if args.tui:
        m = load_all_models(cfg, models)
        source = ReplaySource(session.mic, recorded_commands(session.events, session.n_frames),
                              realtime=True, name=f"replay of {session.path.name}", pacing=recorded_pacing(session))
        return tui_exit(run_tui(cfg, m, source, out, f"replay of {session.path.name}"))

    m = load_all_models(cfg, models)
    subscribers = [ConsolePrinter()] if args.realtime else []
    t0 = PerfTimer.now()
    result = asyncio.run(replay(session, cfg, m, realtime=args.realtime, session_dir=out,
                                subscribers=subscribers, switch_policy=not getattr(args, "policy", None)))
    wall = PerfTimer.now() - t0
    session_s = result.stats.frames * FRAME_SAMPLES / SAMPLE_RATE
    report = build_report(result.events)
    print(f"replayed {session.path} ({session.duration:.1f} s recorded, {session_s:.1f} s with the drain) "
          f"with policy {cfg.policy.name} in {wall:.1f} s ({wall / max(session_s, 1e-9):.2f}x real time)")
    print(report.format())
    status = 0
    diff: list[str] = []
    if args.compare:
        if args.realtime and session.meta.get("clock") != "live":
            # A live session's replay follows its recorded arrivals, paced or not; a lockstep
            # one paced on the wall clock stops waiting for its models.
            note("--realtime replays of a lockstep session run on the wall clock: their decisions vary "
                 "from run to run")
        if not replays_exactly(session):
            note("the recording ran live on an older duplex (wall clock, arrivals not recorded); "
                 "a replay reproduces its decisions only approximately")
        diff = compare_decisions(session.events, result.events)
        n = len(decision_lines(session.events))
        if diff:
            print(f"decisions DIFFER from the recording ({n} recorded, {len(decision_lines(result.events))} replayed):")
            print("\n".join(diff[:60]) + ("\n..." if len(diff) > 60 else ""))
            status = EXIT_DIFFERENT
        else:
            print(f"decisions identical to the recording ({n} decision events)")
    if args.json:
        write_json({
            "session": str(session.path),
            "policy": cfg.policy.name,
            "recorded_s": session.duration,
            "replayed_s": session_s,
            "wall_s": round(wall, 3),
            "report": report.to_dict(),
            "recorded_report": build_report(session.events).to_dict(),
            "compare": {"identical": not diff, "diff": diff} if args.compare else None,
        }, args.json)
    return status


def model_changes(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between the models a session recorded and the ones configured now."""
    out = []
    for key in ("vad", "asr", "llm", "tts"):
        if recorded.get(key) and recorded.get(key) != now.get(key):
            out.append(f"{key}: {recorded.get(key)} -> {now.get(key)}")
    rp, np_ = recorded.get("packages") or {}, now.get("packages") or {}
    for pkg in sorted(set(rp) & set(np_)):
        if pkg != "duplex" and rp[pkg] != np_[pkg]:
            out.append(f"{pkg} {rp[pkg]} -> {np_[pkg]}")
    return out

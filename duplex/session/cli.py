"""``duplex replay``, ``duplex test-scenarios`` and ``duplex export-case``.

Argument parsing lives in :mod:`duplex.cli`; these functions take its namespace and
return the exit status: 0 fine, 1 a difference or a failed scenario (for CI), 2 a
user error (raised as :class:`DuplexError`, printed on one line by the CLI).
Each takes ``models`` so tests can reuse models already loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.clock import PerfTimer
from duplex.errors import DuplexError

EXIT_DIFFERENT = 1


def _overrides(args: argparse.Namespace) -> list[dict[str, Any]]:
    from duplex.config import parse_override

    out = [parse_override(s) for s in getattr(args, "set", None) or []]
    if getattr(args, "policy", None):
        out.append({"policy": {"name": args.policy}})
    if getattr(args, "llm_url", None):
        out.append({"llm": {"backend": "openai", "url": args.llm_url}})
    return out


def _note(msg: str) -> None:
    print(f"duplex: note: {msg}", file=sys.stderr)


def _load_models(cfg: Any, models: Any) -> Any:
    if models is not None:
        return models
    from duplex.engine import load_models

    print(f"duplex: loading models ({cfg.asr.backend}, {cfg.llm.backend}, {cfg.tts.backend}, "
          f"policy {cfg.policy.name})...", file=sys.stderr)
    return load_models(cfg)


def _write_json(obj: Any, path: str) -> None:
    from duplex.cli import json_dump

    try:
        json_dump(obj, path)
    except OSError as exc:
        raise DuplexError(f"cannot write {path}: {exc.strerror or exc}") from exc


# --- replay ---------------------------------------------------------------------------------


def replay_main(args: argparse.Namespace, models: Any = None) -> int:
    from duplex.app import ConsolePrinter
    from duplex.session.recorder import model_identities
    from duplex.session.replay import replay, session_config, was_lockstep
    from duplex.session.report import build_report, compare_decisions, decision_lines
    from duplex.session.store import load_session

    session = load_session(args.session)
    for w in session.warnings:
        _note(w)
    overrides = _overrides(args)
    cfg = session_config(session, args.config, overrides)
    recorded_models = session.meta.get("models") or {}
    now_models = model_identities(cfg)
    changed = _model_changes(recorded_models, now_models)
    if changed:
        _note("models differ from the recording (" + "; ".join(changed) + "): decisions may differ")
    out = Path(args.out) if args.out else None

    if args.tui:
        try:
            from tui.cli import run_tui  # type: ignore[import-not-found]
        except ImportError as exc:
            raise DuplexError("the terminal UI is not available") from exc
        from duplex.session.replay import ReplaySource, recorded_commands

        m = _load_models(cfg, models)
        source = ReplaySource(session.mic, recorded_commands(session.events, session.n_frames),
                              realtime=True, name=f"replay of {session.path.name}")
        return int(run_tui(cfg, m, source, out, f"replay of {session.path.name}"))

    m = _load_models(cfg, models)
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
        if args.realtime:
            _note("--realtime replays run on the wall clock: their decisions vary from run to run")
        if not was_lockstep(session):
            _note("the recording ran live (wall clock); a simulated-clock replay reproduces its decisions only approximately")
        diff = compare_decisions(session.events, result.events)
        n = len(decision_lines(session.events))
        if diff:
            print(f"decisions DIFFER from the recording ({n} recorded, {len(decision_lines(result.events))} replayed):")
            print("\n".join(diff[:60]) + ("\n..." if len(diff) > 60 else ""))
            status = EXIT_DIFFERENT
        else:
            print(f"decisions identical to the recording ({n} decision events)")
    if args.json:
        _write_json({
            "session": str(session.path),
            "policy": cfg.policy.name,
            "recorded_s": session.duration,
            "replayed_s": session_s,
            "wall_s": round(wall, 3),
            "report": report.to_dict(),
            "recorded_report": build_report(session.events).to_dict(),
            "compare": {"identical": not diff, "diff": diff} if args.compare else None,
        }, args.json)
    if out is not None:
        print(f"replay recorded in {out}/")
    return status


def _model_changes(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    out = []
    for key in ("vad", "asr", "llm", "tts"):
        if recorded.get(key) and recorded.get(key) != now.get(key):
            out.append(f"{key}: {recorded.get(key)} -> {now.get(key)}")
    rp, np_ = recorded.get("packages") or {}, now.get("packages") or {}
    for pkg in sorted(set(rp) & set(np_)):
        if pkg != "duplex" and rp[pkg] != np_[pkg]:
            out.append(f"{pkg} {rp[pkg]} -> {np_[pkg]}")
    return out


# --- scenarios ------------------------------------------------------------------------------


def scenarios_main(args: argparse.Namespace, models: Any = None) -> int:
    from duplex.config import load_config
    from duplex.session.scenario import ScenarioRunner, find_scenarios, load_scenario

    paths = find_scenarios(args.dir)
    scenarios = [load_scenario(p) for p in paths]  # every file valid before any model loads
    only = getattr(args, "only", None)
    if only:
        scenarios = [s for s in scenarios if any(o in s.name for o in only)]
        if not scenarios:
            raise DuplexError(f"no scenario name contains {' or '.join(map(repr, only))}")
    cfg = load_config(args.config)
    overrides = _overrides(args)
    cfg_now = load_config(args.config, overrides)  # what the models are loaded for
    m = _load_models(cfg_now, models)
    keep = Path(args.keep) if args.keep else None
    runner = ScenarioRunner(cfg, m, overrides, keep_dir=keep)
    results = []
    t0 = PerfTimer.now()
    print(f"{len(scenarios)} scenario(s), policy {cfg_now.policy.name}")
    for scn in scenarios:
        res = runner.run(scn)
        results.append(res)
        print(res.explain() if res.status in ("fail", "xfail", "xpass") else res.summary(), flush=True)
    counts = {k: sum(r.status == k for r in results) for k in ("pass", "fail", "xfail", "xpass")}
    print(f"\n{counts['pass']} passed, {counts['fail']} failed, {counts['xfail']} known failures, "
          f"{counts['xpass']} known failures passed, in {PerfTimer.now() - t0:.0f} s")
    if counts["fail"]:
        print("failed: " + ", ".join(r.scenario.name for r in results if r.status == "fail"))
    if args.json:
        _write_json({"policy": cfg_now.policy.name, "counts": counts,
                     "results": [r.to_dict() for r in results]}, args.json)
    return EXIT_DIFFERENT if counts["fail"] else 0


# --- export ---------------------------------------------------------------------------------


def export_main(args: argparse.Namespace) -> int:
    from duplex.session.export import export_case
    from duplex.session.store import load_session

    session = load_session(args.session)
    for w in session.warnings:
        _note(w)
    wav, tsv, labels = export_case(session, args.out)
    kinds = ", ".join(f"{sum(x.label == k for x in labels)} {k}" for k in sorted({x.label for x in labels}))
    print(f"wrote {wav} (stereo 16 kHz: agent, mic; {session.duration:.1f} s) and {tsv} "
          f"({len(labels)} events{': ' + kinds if kinds else ''})")
    return 0

"""``duplex test-scenarios``: run scripted-user scenarios and check their expectations.

Exit status: 0 when every scenario passes (known failures allowed), 1 when one fails.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from duplex.clock import PerfTimer
from duplex.commands.common import EXIT_DIFFERENT, add_config_arguments, load_all_models, overrides, write_json
from duplex.config import load_config
from duplex.errors import DuplexError
from duplex.session.scenario import ScenarioRunner, find_scenarios, load_scenario
from duplex.stages.factory import Models



def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="a directory of scenario files (or one file)")
    p.add_argument("--json", help="write results here")
    p.add_argument("--keep", help="record each scenario's session under this directory")
    p.add_argument("--only", "-k", action="append", metavar="TEXT",
                   help="run only scenarios whose name contains TEXT (repeatable)")
    add_config_arguments(p)


def run(args: argparse.Namespace, models: Models | None = None) -> int:
    """``models``: already loaded ones (tests), else they load for the configured profile."""
    paths = find_scenarios(args.dir)
    scenarios = [load_scenario(p) for p in paths]  # every file valid before any model loads
    only = getattr(args, "only", None)
    if only:
        scenarios = [s for s in scenarios if any(o in s.name for o in only)]
        if not scenarios:
            raise DuplexError(f"no scenario name contains {' or '.join(map(repr, only))}")
    cfg = load_config(args.config)
    extra = overrides(args)
    cfg_now = load_config(args.config, extra)  # what the models are loaded for
    m = load_all_models(cfg_now, models)
    keep = Path(args.keep) if args.keep else None
    runner = ScenarioRunner(cfg, m, extra, keep_dir=keep)
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
        write_json({"policy": cfg_now.policy.name, "counts": counts,
                    "results": [r.to_dict() for r in results]}, args.json)
    return EXIT_DIFFERENT if counts["fail"] else 0

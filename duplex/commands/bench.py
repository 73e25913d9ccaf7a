"""``duplex bench``: the latency benchmark (:mod:`duplex.bench.latency`), per policy."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from duplex.bench.latency import MODES, SCRIPTS_DIR, check_scripts, format_table, run_benchmark
from duplex.commands.common import add_config_arguments, load_all_models, overrides, write_json
from duplex.config import load_config
from duplex.errors import ConfigError
from policies import POLICY_NAMES



def add_arguments(p: argparse.ArgumentParser, json_default: str | None = None) -> None:
    p.add_argument("--policies", default="rules,predictor",
                   help=f"comma-separated, side by side on the same models (of: {', '.join(POLICY_NAMES)})")
    p.add_argument("--mode", choices=MODES, default="realtime",
                   help="realtime: paced on the wall clock like a microphone (default); lockstep: simulated clock, fast")
    p.add_argument("--scripts", nargs="*", default=None, metavar="SCRIPT",
                   help=f"simulated-user scripts (default: the shipped ones in {SCRIPTS_DIR.name}/)")
    p.add_argument("--json", default=json_default, help="write the full report here"
                   + (f" (default {json_default})" if json_default else ""))
    add_config_arguments(p, engine=False)


def run(args: argparse.Namespace, command: str | None = None) -> int:
    policies = [n.strip() for n in args.policies.split(",") if n.strip()]
    unknown = [n for n in policies if n not in POLICY_NAMES]
    if unknown or not policies:
        raise ConfigError(f"--policies wants names from {', '.join(POLICY_NAMES)}, got {args.policies!r}")
    scripts = check_scripts(args.scripts)
    base = load_config(args.config, [*overrides(args), {"recording": {"enabled": False}}])
    models = load_all_models(base)
    report = run_benchmark(base, models, policies, scripts, args.mode,
                           progress=lambda msg: print(msg, file=sys.stderr))
    print("\n" + format_table(report))
    report["command"] = command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    if args.json:
        write_json(report, args.json)
        print(f"\nwritten {args.json}")
    return 0

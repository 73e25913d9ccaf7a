"""Latency benchmark: voice-to-voice per turn and barge-in stop time, per policy.

The benchmark itself lives in the package (:mod:`duplex.bench.latency`, also
``duplex bench``); this script runs it from a checkout and records the result in
``benchmarks/results/latency.json``.

    python benchmarks/latency.py [--policies rules,predictor] [--mode realtime]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from duplex.commands import bench, guarded  # noqa: E402
from duplex.commands.common import Parser  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "latency.json"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = Parser(prog="python benchmarks/latency.py", description=__doc__.split("\n")[0])
    bench.add_arguments(ap, json_default=str(RESULTS))
    args: argparse.Namespace = ap.parse_args(argv)
    return guarded(lambda a: bench.run(a, command="python benchmarks/latency.py " + " ".join(argv)), args)


if __name__ == "__main__":
    sys.exit(main())

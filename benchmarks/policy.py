"""Benchmark: the duplex predictor side by side with the rule policy and smart-turn v3.2.

``python benchmarks/policy.py`` evaluates all three policies in one run on

* ``synthetic-test``: the generator's held-out ``test`` split (voices, and a fifth of the
  sentences, never seen in training; built by ``policies.data`` if missing), and
* ``real``: cases with real recorded speakers as the user (``policies.realcases``),

prints one Markdown table per set and writes ``benchmarks/results/policy.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from policies import data as gen  # noqa: E402
from policies import realcases  # noqa: E402
from policies.eval import POLICIES, evaluate, format_table, make_named_policy  # noqa: E402
from policies.harness import list_cases  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "policy.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--sets", nargs="*", default=["synthetic-test", "real"])
    a = ap.parse_args(argv)
    sets: dict[str, Path] = {}
    if "synthetic-test" in a.sets:
        test = gen.CACHE / "test"
        if not test.exists() or len(list(test.glob("*.npz"))) < gen.DEFAULT_COUNTS["test"]:
            gen.build({"test": gen.DEFAULT_COUNTS["test"]})
        sets["synthetic-test"] = test
    if "real" in a.sets:
        if not realcases.DEFAULT_OUT.exists():
            realcases.build()
        sets["real"] = realcases.DEFAULT_OUT
    policies = {n: make_named_policy(n) for n in POLICIES}
    out: dict[str, dict] = {}
    for name, d in sets.items():
        report = evaluate(list_cases(d), policies)
        out[name] = report
        print(f"\n## {name}: {report['cases']} cases ({d})\n")
        print(format_table(report))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {k: {"cases": v["cases"], "policies": v["policies"]} for k, v in out.items()}
    a.out.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: the duplex predictor side by side with the rule policy and smart-turn v3.2.

``python benchmarks/policy.py`` evaluates all three policies in one run on

* ``synthetic-test``: the generator's held-out ``test`` split (voices, and a fifth of the
  sentences, never seen in training; built by ``policies.data`` if missing), and
* ``real``: cases with real recorded speakers as the user (``policies.realcases``),

prints one Markdown table per set and writes ``benchmarks/results/policy.json``.

``--weights NAME=PATH`` (repeatable) adds the predictor with other weights as a column,
to compare a newly trained candidate with the shipped weights in the same run::

    python -m policies.train --out /tmp/candidate --steps 3000 --threads 2
    python benchmarks/policy.py --weights candidate=/tmp/candidate/predictor.pt \
        --out benchmarks/results/predictor_candidate.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from duplex.config import PolicyConfig, PredictorConfig  # noqa: E402
from policies import data as gen  # noqa: E402
from policies import make_policy  # noqa: E402
from policies import realcases  # noqa: E402
from policies.eval import POLICIES, evaluate, format_table, make_named_policy  # noqa: E402
from policies.harness import list_cases  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "policy.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--sets", nargs="*", default=["synthetic-test", "real"])
    ap.add_argument("--weights", action="append", default=[], metavar="NAME=PATH",
                    help="also evaluate the predictor with these weights, as column predictor[NAME]")
    a = ap.parse_args(argv)
    extra: dict[str, Path] = {}
    for spec in a.weights:
        name, sep, path = spec.partition("=")
        if not sep or not name or not Path(path).is_file():
            ap.error(f"--weights wants NAME=PATH to a predictor.pt, got {spec!r}")
        extra[f"predictor[{name}]"] = Path(path)
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
    for name, path in extra.items():
        policies[name] = make_policy(PolicyConfig(name="predictor", predictor=PredictorConfig(weights=str(path))))
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

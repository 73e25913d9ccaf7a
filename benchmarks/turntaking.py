"""Benchmark: turn-taking on real speech first, then on generated voices, every policy in one run.

``python benchmarks/turntaking.py`` evaluates side by side

* ``predictor``: the shipped weights with the v2 decisions (pause, then decide; the end
  of turn fused with the text's completeness),
* ``predictor-v1``: the same weights with the first release's decisions (a barge-in and
  an end of turn as soon as a probability crosses its threshold),
* ``rules`` and ``smart-turn`` (v3.2, pipecat's end-of-turn model; rules while the
  agent speaks),

on

* ``real``: every case :mod:`policies.realcases` builds from ``../shared/realaudio``
  (13 recordings of real people; validation only, never training), summarised overall
  and per source, with each policy's end-of-turn operating curve (false cut-offs at a
  300 ms budget, the delay at which false cut-offs fall to 5 %);
* ``generated-test``: the generator's held-out ``test`` split (voices and a fifth of the
  sentences never seen in training; built by :mod:`policies.data` if missing).

It prints Markdown tables and writes ``benchmarks/results/turntaking.json``.
``--weights NAME=PATH`` adds a candidate predictor as one more column.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from duplex.config import PredictorConfig  # noqa: E402
from duplex.turn import TurnPolicy  # noqa: E402
from policies import data as gen  # noqa: E402
from policies import realcases  # noqa: E402
from policies.eval import (  # noqa: E402
    POLICIES,
    eot_curve,
    evaluate,
    format_curve,
    format_sources,
    format_table,
    make_named_policy,
    operating_policy,
    predictor_with,
)
from policies.harness import list_cases  # noqa: E402
from policies.predictor import DecisionParams, PredictorPolicy, logit  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "turntaking.json"


def v1_policy(threshold: float | None = None) -> TurnPolicy:
    """The shipped weights with v1's decisions (its end-of-turn threshold, or ``threshold``)."""
    pol = PredictorPolicy(PredictorConfig(), text_eou=False)
    params = DecisionParams.v1(pol.meta)
    if threshold is not None:
        params = replace(params, eot_threshold=logit(threshold) + params.eot_bias)
    pol.params = params
    pol.name = "predictor-v1"
    return pol


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--sets", nargs="*", default=["real", "generated-test"], choices=["real", "generated-test"])
    ap.add_argument("--weights", action="append", default=[], metavar="NAME=PATH",
                    help="also evaluate the predictor with these weights, as column predictor[NAME]")
    ap.add_argument("--no-curve", action="store_true", help="skip the end-of-turn operating-point sweep")
    a = ap.parse_args(argv)
    extra: dict[str, str] = {}
    for spec in a.weights:
        name, sep, path = spec.partition("=")
        if not sep or not name or not Path(path).is_file():
            ap.error(f"--weights wants NAME=PATH to a predictor.pt, got {spec!r}")
        extra[f"predictor[{name}]"] = path

    def build(name: str, value: float | None = None) -> TurnPolicy:
        if name == "predictor-v1":
            return v1_policy(value)
        if name in extra:
            return predictor_with(extra[name], value)
        return make_named_policy(name) if value is None else operating_policy(name, value)

    names = ["predictor", "predictor-v1", *extra, *(n for n in POLICIES if n != "predictor")]
    sets: dict[str, Path] = {}
    if "real" in a.sets:
        if not realcases.DEFAULT_OUT.exists() or not any(realcases.DEFAULT_OUT.glob("*.wav")):
            realcases.build()
        sets["real"] = realcases.DEFAULT_OUT
    if "generated-test" in a.sets:
        test = gen.CACHE / "test"
        if not test.exists() or len(list(test.glob("*.npz"))) < gen.DEFAULT_COUNTS["test"]:
            gen.build({"test": gen.DEFAULT_COUNTS["test"]})
        sets["generated-test"] = test
    out: dict[str, dict] = {}
    for set_name, d in sets.items():
        wavs = list_cases(d)
        report = evaluate(wavs, {n: build(n) for n in names}, per_source=set_name == "real")
        if set_name == "real" and not a.no_curve:
            report["eot_curve"] = {n: eot_curve(wavs, n, build, "predictor" if n.startswith("predictor") else n)
                                   for n in names}
        out[set_name] = report
        print(f"\n## {set_name}: {report['cases']} cases ({d})\n")
        print(format_table(report))
        if "per_source" in report:
            print(f"\n### {set_name}, per source\n")
            print(format_sources(report))
        if "eot_curve" in report:
            print(f"\n### {set_name}, end of turn across operating points\n")
            print(format_curve(report))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {k: {key: v[key] for key in ("cases", "policies", "per_source", "eot_curve") if key in v} for k, v in out.items()}
    a.out.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

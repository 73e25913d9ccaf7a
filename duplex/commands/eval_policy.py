"""``duplex eval-policy``: turn policies side by side on stereo WAV + TSV cases
(:mod:`policies.eval`)."""

from __future__ import annotations

import argparse

from duplex.commands.common import write_json
from policies.eval import add_arguments as eval_arguments
from policies.eval import format_curve, format_sources, format_table
from policies.eval import run as evaluate



def add_arguments(p: argparse.ArgumentParser) -> None:
    eval_arguments(p)


def run(args: argparse.Namespace) -> int:
    report = evaluate(args)
    print(f"{report['cases']} cases in {args.cases}")
    print(format_table(report))
    if args.per_source:
        print("\n" + format_sources(report))
    if args.eot_curve:
        print("\n" + format_curve(report))
    if args.json:
        write_json(report, args.json)
    return 0

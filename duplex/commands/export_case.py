"""``duplex export-case``: a recorded session as a stereo WAV + TSV evaluation case."""

from __future__ import annotations

import argparse

from duplex.commands.common import note
from duplex.session.export import export_case
from duplex.session.store import load_session



def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("session", help="a session directory")
    p.add_argument("out", help="output path prefix (writes OUT.wav and OUT.tsv)")


def run(args: argparse.Namespace) -> int:
    session = load_session(args.session)
    for w in session.warnings:
        note(w)
    wav, tsv, labels = export_case(session, args.out)
    kinds = ", ".join(f"{sum(x.label == k for x in labels)} {k}" for k in sorted({x.label for x in labels}))
    print(f"wrote {wav} (stereo 16 kHz: agent, mic; {session.duration:.1f} s) and {tsv} "
          f"({len(labels)} events{': ' + kinds if kinds else ''})")
    return 0

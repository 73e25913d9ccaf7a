"""Evaluate turn-taking policies side by side on interchange cases.

``python -m policies.eval CASES_DIR [--policy predictor|rules|smart-turn ...] [--json OUT]``
(also ``duplex eval-policy``). Every case (``NAME.wav`` stereo: channel 0 agent playback,
channel 1 microphone; ``NAME.tsv``: ``start_s end_s label``) goes through the engine's
own listener once (cached), then through each policy (:mod:`policies.harness`).

How decisions are scored (``t`` is the end of the frame that decided):

* ``barge_in``, ``backchannel``, ``noise`` events (user sound while the agent speaks) are
  judged in ``[start - 0.05, end + 0.6]`` (cut at the next such event): predicted
  ``barge_in`` if the policy barged in there, else ``backchannel`` if it said so, else
  ``noise`` (it let the sound pass). A backchannel or noise predicted ``barge_in`` is a
  *false barge-in*; a ``barge_in`` without one is *missed*; latency is decision time
  minus ``start`` (the user's onset).
* ``end_of_turn`` events (``start`` = the user's last word, ``end`` = when the agent
  answers): the first END_OF_TURN in ``[start, end]`` is correct, its delay measured from
  ``start``; none is a *missed* end of turn. ``hold`` events (a pause the user resumes
  from): any END_OF_TURN inside is a *premature cut-off*.
* BARGE_IN decisions outside every agent-time event, and END_OF_TURN decisions outside
  every end-of-turn and hold window, are counted as *spurious* (e.g. a barge-in on the
  agent's own echo, a cut-off while the user is still talking).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from duplex.errors import DuplexError, PolicyError
from duplex.events import Decision
from duplex.turn import PolicyInput, PolicyOutput, TurnPolicy
from policies.harness import FRAME_S, Case, CaseRunner, LabelledEvent, Trace, list_cases, listen_cached, load_case

log = logging.getLogger(__name__)

POLICIES = ("predictor", "rules", "smart-turn")
AGENT_LABELS = ("barge_in", "backchannel", "noise")
USER_LABELS = ("end_of_turn", "hold")
ONSET_SLACK_S = 0.05
TAIL_S = 0.6


def make_named_policy(name: str) -> TurnPolicy:
    """Build a policy by name with default configuration."""
    from duplex.config import PolicyConfig
    from policies import make_policy

    if name not in POLICIES:
        raise PolicyError(f"unknown policy {name!r} (known: {', '.join(POLICIES)})")
    return make_policy(PolicyConfig(name=name))  # type: ignore[arg-type]


@dataclass
class CaseScore:
    """Per-event outcomes of one policy on one case."""

    confusion: list[tuple[str, str]] = field(default_factory=list)
    barge_latency: list[float] = field(default_factory=list)
    eot_delay: list[float] = field(default_factory=list)
    spurious_barge_ins: int = 0
    spurious_eots: int = 0
    agent_seconds: float = 0.0


def _times(trace: Trace, decision: Decision) -> np.ndarray:
    return np.array([t for t, d in zip(trace.t, trace.decisions, strict=True) if d is decision])


def score_case(events: Sequence[LabelledEvent], trace: Trace) -> CaseScore:
    """Score one policy's trace against one case's labels (see the module docstring)."""
    s = CaseScore(agent_seconds=float(np.sum(trace.agent_speaking)) * FRAME_S)
    bi = _times(trace, Decision.BARGE_IN)
    bc = _times(trace, Decision.BACKCHANNEL)
    eot = _times(trace, Decision.END_OF_TURN)
    agent_ev = sorted((e for e in events if e.label in AGENT_LABELS), key=lambda e: e.start)
    bi_used = np.zeros(len(bi), dtype=bool)
    for k, e in enumerate(agent_ev):
        lo = e.start - ONSET_SLACK_S
        hi = e.end + TAIL_S
        if k + 1 < len(agent_ev):
            hi = min(hi, max(e.end, agent_ev[k + 1].start - ONSET_SLACK_S))
        in_bi = (bi >= lo) & (bi <= hi)
        bi_used |= in_bi
        if in_bi.any():
            pred = "barge_in"
            if e.label == "barge_in":
                s.barge_latency.append(float(bi[in_bi].min() - e.start))
        elif ((bc >= lo) & (bc <= hi)).any():
            pred = "backchannel"
        else:
            pred = "noise"
        s.confusion.append((e.label, pred))
    s.spurious_barge_ins = int((~bi_used).sum())
    eot_used = np.zeros(len(eot), dtype=bool)
    for e in events:
        if e.label not in USER_LABELS:
            continue
        inside = (eot >= e.start) & (eot <= e.end)
        eot_used |= inside
        if e.label == "end_of_turn":
            if inside.any():
                s.eot_delay.append(float(eot[inside].min() - e.start))
                s.confusion.append(("end_of_turn", "end_of_turn"))
            else:
                s.confusion.append(("end_of_turn", "hold"))
        else:
            s.confusion.append(("hold", "end_of_turn" if inside.any() else "hold"))
    s.spurious_eots = int((~eot_used).sum())
    return s


def _pct(x: list[float], q: float) -> float | None:
    return round(float(np.percentile(x, q)) * 1000, 1) if x else None


def summarise(scores: Sequence[CaseScore], compute: np.ndarray) -> dict:
    """Aggregate case scores into the report's metrics."""
    conf = [c for s in scores for c in s.confusion]
    per_class = {}
    for lab in AGENT_LABELS + USER_LABELS:
        tp = sum(1 for t, p in conf if t == lab and p == lab)
        n_true = sum(1 for t, _ in conf if t == lab)
        n_pred = sum(1 for _, p in conf if p == lab)
        prec = tp / n_pred if n_pred else None
        rec = tp / n_true if n_true else None
        f1 = 2 * prec * rec / (prec + rec) if prec and rec else (0.0 if n_true else None)
        per_class[lab] = {"support": n_true, "precision": _r(prec), "recall": _r(rec), "f1": _r(f1)}
    non_barge = [(t, p) for t, p in conf if t in ("backchannel", "noise")]
    barges = [(t, p) for t, p in conf if t == "barge_in"]
    holds = [(t, p) for t, p in conf if t == "hold"]
    eots = [(t, p) for t, p in conf if t == "end_of_turn"]
    lat = [x for s in scores for x in s.barge_latency]
    delay = [x for s in scores for x in s.eot_delay]
    agent_min = sum(s.agent_seconds for s in scores) / 60
    return {
        "per_class": per_class,
        "false_barge_in_rate": _r(sum(p == "barge_in" for _, p in non_barge) / len(non_barge)) if non_barge else None,
        "false_barge_in_backchannel": _rate(conf, "backchannel", "barge_in"),
        "false_barge_in_noise": _rate(conf, "noise", "barge_in"),
        "missed_barge_in_rate": _r(sum(p != "barge_in" for _, p in barges) / len(barges)) if barges else None,
        "barge_in_latency_ms_p50": _pct(lat, 50),
        "barge_in_latency_ms_p95": _pct(lat, 95),
        "spurious_barge_ins": sum(s.spurious_barge_ins for s in scores),
        "spurious_barge_ins_per_agent_min": _r(sum(s.spurious_barge_ins for s in scores) / agent_min) if agent_min else None,
        "eot_premature_rate": _r(sum(p == "end_of_turn" for _, p in holds) / len(holds)) if holds else None,
        "eot_missed_rate": _r(sum(p != "end_of_turn" for _, p in eots) / len(eots)) if eots else None,
        "eot_delay_ms_p50": _pct(delay, 50),
        "eot_delay_ms_p95": _pct(delay, 95),
        "spurious_eots": sum(s.spurious_eots for s in scores),
        "frame_cost_ms_mean": round(float(np.mean(compute)) * 1000, 3) if compute.size else None,
        "frame_cost_ms_p95": round(float(np.percentile(compute, 95)) * 1000, 3) if compute.size else None,
        "counts": {"barge_in": len(barges), "backchannel+noise": len(non_barge), "hold": len(holds), "end_of_turn": len(eots)},
    }


def _rate(conf: list[tuple[str, str]], label: str, pred: str) -> float | None:
    rel = [p for t, p in conf if t == label]
    return _r(sum(p == pred for p in rel) / len(rel)) if rel else None


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def evaluate(
    cases: Sequence[Path], policies: dict[str, TurnPolicy], progress: bool = True
) -> dict:
    """Run every policy over every case; returns the JSON-ready report."""
    from tqdm import tqdm

    scores: dict[str, list[CaseScore]] = {n: [] for n in policies}
    compute: dict[str, list[np.ndarray]] = {n: [] for n in policies}
    per_case: dict[str, dict] = {}
    for wav in tqdm(cases, desc="eval", unit="case", disable=not progress):
        case = load_case(wav)
        runner = runner_for(wav, case)
        per_case[case.name] = {}
        for name, pol in policies.items():
            trace = runner.run(pol)
            sc = score_case(case.events, trace)
            scores[name].append(sc)
            compute[name].append(trace.compute_s)
            per_case[case.name][name] = {
                "confusion": sc.confusion,
                "barge_in_latency_s": [round(x, 3) for x in sc.barge_latency],
                "eot_delay_s": [round(x, 3) for x in sc.eot_delay],
                "spurious_barge_ins": sc.spurious_barge_ins,
                "spurious_eots": sc.spurious_eots,
            }
    report = {
        "cases": len(cases),
        "policies": {n: summarise(scores[n], np.concatenate(compute[n]) if compute[n] else np.zeros(0)) for n in policies},
        "per_case": per_case,
    }
    return report


def runner_for(wav: Path, case: Case) -> CaseRunner:
    return CaseRunner(case.audio, listen_cached(wav, case.audio[:, 1], asr=True))


ROWS: list[tuple[str, str]] = [
    ("false barge-in (bc+noise)", "false_barge_in_rate"),
    ("  on backchannels", "false_barge_in_backchannel"),
    ("  on noise", "false_barge_in_noise"),
    ("missed barge-ins", "missed_barge_in_rate"),
    ("barge-in latency p50 ms", "barge_in_latency_ms_p50"),
    ("barge-in latency p95 ms", "barge_in_latency_ms_p95"),
    ("spurious barge-ins /agent-min", "spurious_barge_ins_per_agent_min"),
    ("EOT premature cut-offs (holds)", "eot_premature_rate"),
    ("EOT missed", "eot_missed_rate"),
    ("EOT delay p50 ms", "eot_delay_ms_p50"),
    ("EOT delay p95 ms", "eot_delay_ms_p95"),
    ("spurious EOTs (count)", "spurious_eots"),
    ("per-frame cost mean ms", "frame_cost_ms_mean"),
    ("per-frame cost p95 ms", "frame_cost_ms_p95"),
]


def format_table(report: dict) -> str:
    """A Markdown table: metrics as rows, policies as columns."""
    names = list(report["policies"])
    lines = ["| metric | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]

    def fmt(v: object, key: str) -> str:
        if v is None:
            return "n/a"
        if key.endswith("rate") or key.startswith("false_barge_in"):
            return f"{100 * float(v):.1f} %"  # type: ignore[arg-type]
        return f"{v}"

    for label, key in ROWS:
        lines.append(f"| {label} | " + " | ".join(fmt(report["policies"][n][key], key) for n in names) + " |")
    for lab in AGENT_LABELS + USER_LABELS:
        cells = []
        for n in names:
            pc = report["policies"][n]["per_class"][lab]
            p, r, f = (pc[k] for k in ("precision", "recall", "f1"))
            cells.append("n/a" if r is None else f"{_f(p)} / {_f(r)} / {_f(f)}")
        support = report["policies"][names[0]]["per_class"][lab]["support"]
        lines.append(f"| {lab} P/R/F1 (n={support}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


# --- threshold search on the dev split ----------------------------------------------------


class _Replay:
    """A predictor whose probabilities were computed once; only its decision rules run."""

    name = "predictor-replay"

    def __init__(self, policy: object, pa: np.ndarray, pu: np.ndarray) -> None:
        self.policy = policy
        self.pa, self.pu = pa, pu
        self.i = 0

    def reset(self) -> None:
        self.i = 0
        self.policy.reset_decisions()  # type: ignore[attr-defined]

    def step(self, x: PolicyInput) -> PolicyOutput:
        out = self.policy.decide(x, self.pa[self.i], self.pu[self.i])  # type: ignore[attr-defined]
        self.i += 1
        return out


def tune_thresholds(weights: Path, dev_wavs: Sequence[Path], progress: bool = True) -> dict[str, float]:
    """Pick decision thresholds on the dev cases (held-out voices).

    Barge-in: the lowest p50 latency with at most 2 % false and 2 % missed barge-ins
    (else the fewest errors). End of turn (threshold and minimum silence): the lowest p50
    delay with at most 2 % premature cut-offs (else the fewest). Backchannel: the best
    backchannel F1.
    """
    from duplex.config import PredictorConfig
    from policies.predictor import PredictorPolicy

    pol = PredictorPolicy(PredictorConfig(weights=str(weights), barge_in_threshold=0.5, end_of_turn_threshold=0.5))
    prepared = []
    for wav in dev_wavs:
        case = load_case(wav)
        runner = runner_for(wav, case)
        pol.reset()
        pa, pu = [], []
        for x in runner.inputs():
            a, u = pol.model.step(pol.features(x))
            pa.append(a)
            pu.append(u)
        prepared.append((case, runner, _Replay(pol, np.array(pa), np.array(pu))))

    def run(thr_barge: float, thr_bc: float, thr_eot: float, min_sil: float = 0.0) -> dict:
        pol.thr_barge, pol.thr_bc, pol.thr_eot, pol.eot_min_silence = thr_barge, thr_bc, thr_eot, min_sil
        scores = [score_case(case.events, runner.run(rep)) for case, runner, rep in prepared]
        return summarise(scores, np.zeros(0))

    grid = [round(x, 3) for x in np.concatenate([np.arange(0.2, 0.9, 0.05), [0.9, 0.93, 0.96, 0.98]])]
    best_b: tuple[float, float] = (math.inf, 0.5)
    best_e: tuple[float, float, float] = (math.inf, 0.5, 0.0)
    for thr in grid:
        for min_sil in (0.0, 0.1, 0.2, 0.3, 0.45, 0.6):
            m = run(thr, 0.5, thr, min_sil)
            if min_sil == 0.0:
                fb, mb = m["false_barge_in_rate"] or 0.0, m["missed_barge_in_rate"] or 0.0
                lat = (m["barge_in_latency_ms_p50"] or 5000) / 1000
                cost_b = lat if fb <= 0.02 and mb <= 0.02 else 10 + 10 * (fb + mb) + lat
                if cost_b < best_b[0]:
                    best_b = (cost_b, thr)
                log.info("barge-in threshold %.3f: false %.3f missed %.3f p50 %.3f", thr, fb, mb, lat)
            pm, me = m["eot_premature_rate"] or 0.0, m["eot_missed_rate"] or 0.0
            dl = (m["eot_delay_ms_p50"] or 5000) / 1000
            cost_e = dl + me if pm <= 0.02 else 10 + 10 * pm + dl
            if cost_e < best_e[0]:
                best_e = (cost_e, thr, min_sil)
            log.info("end-of-turn threshold %.3f, min silence %.2f: premature %.3f p50 %.3f", thr, min_sil, pm, dl)
    best_bc = (-1.0, 0.5)
    for thr in grid:
        m = run(best_b[1], thr, best_e[1], best_e[2])
        f1 = m["per_class"]["backchannel"]["f1"] or 0.0
        if f1 > best_bc[0]:
            best_bc = (f1, thr)
    out = {
        "barge_in": float(best_b[1]), "backchannel": float(best_bc[1]), "end_of_turn": float(best_e[1]),
        "end_of_turn_min_silence_ms": int(round(best_e[2] * 1000)), "backchannel_opportunity": 0.6,
    }
    log.info("tuned thresholds on %d dev cases: %s", len(prepared), out)
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (also ``duplex eval-policy``)."""
    ap = argparse.ArgumentParser(prog="python -m policies.eval", description="Evaluate turn-taking policies side by side.")
    ap.add_argument("cases", type=Path, help="directory of NAME.wav + NAME.tsv cases")
    ap.add_argument("--policy", action="append", choices=POLICIES, help="repeatable; default: all three")
    ap.add_argument("--json", type=Path, default=None, help="write the full report here")
    ap.add_argument("--limit", type=int, default=0, help="only the first N cases")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        wavs = list_cases(a.cases)
        if a.limit:
            wavs = wavs[: a.limit]
        names = a.policy or list(POLICIES)
        policies = {n: make_named_policy(n) for n in names}
        report = evaluate(wavs, policies)
    except DuplexError as exc:
        print(f"error: {exc}")
        return 2
    print(f"{report['cases']} cases in {a.cases}")
    print(format_table(report))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

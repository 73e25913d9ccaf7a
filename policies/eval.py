"""Evaluate turn-taking policies side by side on interchange cases.

``duplex eval-policy CASES_DIR [--policy NAME ...] [--per-source] [--eot-curve] [--json OUT]``
(:mod:`duplex.commands.eval_policy` parses and prints; this module evaluates). Every case (``NAME.wav`` stereo: channel 0 agent playback,
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
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from duplex.config import PolicyConfig, PredictorConfig
from duplex.errors import PolicyError
from duplex.events import Decision
from duplex.turn import TurnPolicy
from policies import POLICY_NAMES, make_named_policy, make_policy
from policies.harness import FRAME_S, Case, CaseRunner, LabelledEvent, Trace, list_cases, listen_cached, load_case
from policies.realcases import source_of

log = logging.getLogger(__name__)

POLICIES = POLICY_NAMES
AGENT_LABELS = ("barge_in", "backchannel", "noise", "other_speaker")
"""``other_speaker``: a voice that is not the user's (a TV, another person) while the agent
speaks; a barge-in on it is a false barge-in caused by another voice."""
USER_LABELS = ("end_of_turn", "hold")
ONSET_SLACK_S = 0.05
TAIL_S = 0.6


@dataclass
class CaseScore:
    """Per-event outcomes of one policy on one case."""

    source: str = "other"
    confusion: list[tuple[str, str]] = field(default_factory=list)
    barge_latency: list[float] = field(default_factory=list)
    """Onset to the first stop the user hears (a pause or a barge-in), per barge-in caught."""
    commit_latency: list[float] = field(default_factory=list)
    """Onset to the committed barge-in (the reply cancelled)."""
    stopped: list[tuple[str, bool]] = field(default_factory=list)
    """(label, the agent paused or stopped) for every event heard while the agent spoke."""
    eot_delay: list[float] = field(default_factory=list)
    spurious_barge_ins: int = 0
    spurious_eots: int = 0
    agent_seconds: float = 0.0
    agent_backchannels: dict[str, int] = field(default_factory=dict)
    """The policy's BACKCHANNEL_OPPORTUNITY decisions by where they fell: inside a pause the
    user resumed from (``in_hold``, where a "mm-hmm" belongs), after the user's last word
    (``at_turn_end``: the agent should take the turn instead), elsewhere (``other``)."""
    user_seconds: float = 0.0


def _times(trace: Trace, decision: Decision) -> np.ndarray:
    return np.array([t for t, d in zip(trace.t, trace.decisions, strict=True) if d is decision])


def score_case(events: Sequence[LabelledEvent], trace: Trace, source: str = "other") -> CaseScore:
    """Score one policy's trace against one case's labels (see the module docstring)."""
    s = CaseScore(source=source, agent_seconds=float(np.sum(trace.agent_speaking)) * FRAME_S)
    bi = _times(trace, Decision.BARGE_IN)
    bc = np.concatenate([_times(trace, Decision.BACKCHANNEL), _times(trace, Decision.RESUME)])
    pause = _times(trace, Decision.PAUSE)
    eot = _times(trace, Decision.END_OF_TURN)
    agent_ev = sorted((e for e in events if e.label in AGENT_LABELS), key=lambda e: e.start)
    bi_used = np.zeros(len(bi), dtype=bool)
    for k, e in enumerate(agent_ev):
        lo = e.start - ONSET_SLACK_S
        hi = e.end + TAIL_S
        if k + 1 < len(agent_ev):
            hi = min(hi, max(e.end, agent_ev[k + 1].start - ONSET_SLACK_S))
        in_bi = (bi >= lo) & (bi <= hi)
        in_pause = (pause >= lo) & (pause <= hi)
        bi_used |= in_bi
        if in_bi.any():
            pred = "barge_in"
            if e.label == "barge_in":
                first = bi[in_bi].min()
                s.commit_latency.append(float(first - e.start))
                stops = pause[in_pause & (pause <= first)]
                s.barge_latency.append(float(min(first, stops.min() if stops.size else first) - e.start))
        elif ((bc >= lo) & (bc <= hi)).any():
            pred = "backchannel"
        else:
            pred = "noise"
        s.confusion.append((e.label, pred))
        s.stopped.append((e.label, bool(in_bi.any() or in_pause.any())))
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
    s.user_seconds = float(np.sum(trace.user_turn_open & ~trace.agent_speaking)) * FRAME_S
    holds = [(e.start, e.end) for e in events if e.label == "hold"]
    ends = [(e.start, e.end) for e in events if e.label == "end_of_turn"]
    for t in _times(trace, Decision.BACKCHANNEL_OPPORTUNITY):
        where = "in_hold" if any(a <= t <= b for a, b in holds) else "at_turn_end" if any(a <= t <= b for a, b in ends) else "other"
        s.agent_backchannels[where] = s.agent_backchannels.get(where, 0) + 1
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
    stopped = [(lab, st) for s in scores for lab, st in s.stopped]
    lat = [x for s in scores for x in s.barge_latency]
    commit = [x for s in scores for x in s.commit_latency]
    delay = [x for s in scores for x in s.eot_delay]
    agent_min = sum(s.agent_seconds for s in scores) / 60
    return {
        "per_class": per_class,
        "false_barge_in_rate": _r(sum(p == "barge_in" for _, p in non_barge) / len(non_barge)) if non_barge else None,
        "false_barge_in_backchannel": _rate(conf, "backchannel", "barge_in"),
        "false_barge_in_noise": _rate(conf, "noise", "barge_in"),
        "false_barge_in_other_speaker": _rate(conf, "other_speaker", "barge_in"),
        "missed_barge_in_rate": _r(sum(p != "barge_in" for _, p in barges) / len(barges)) if barges else None,
        "barge_in_latency_ms_p50": _pct(lat, 50),
        "barge_in_latency_ms_p95": _pct(lat, 95),
        "barge_in_commit_ms_p50": _pct(commit, 50),
        "backchannel_stop_or_pause_rate": _share([st for lab, st in stopped if lab == "backchannel"]),
        "backchannel_lost_turn_rate": _rate(conf, "backchannel", "barge_in"),
        "spurious_barge_ins": sum(s.spurious_barge_ins for s in scores),
        "spurious_barge_ins_per_agent_min": _r(sum(s.spurious_barge_ins for s in scores) / agent_min) if agent_min else None,
        "eot_premature_rate": _r(sum(p == "end_of_turn" for _, p in holds) / len(holds)) if holds else None,
        "eot_missed_rate": _r(sum(p != "end_of_turn" for _, p in eots) / len(eots)) if eots else None,
        "eot_delay_ms_p50": _pct(delay, 50),
        "eot_delay_ms_p95": _pct(delay, 95),
        "spurious_eots": sum(s.spurious_eots for s in scores),
        "agent_backchannels": {k: sum(sc.agent_backchannels.get(k, 0) for sc in scores) for k in ("in_hold", "at_turn_end", "other")},
        "agent_backchannels_per_user_min": _r(sum(sum(sc.agent_backchannels.values()) for sc in scores)
                                              / (sum(sc.user_seconds for sc in scores) / 60)) if any(sc.user_seconds for sc in scores) else None,
        "frame_cost_ms_mean": round(float(np.mean(compute)) * 1000, 3) if compute.size else None,
        "frame_cost_ms_p95": round(float(np.percentile(compute, 95)) * 1000, 3) if compute.size else None,
        "counts": {"barge_in": len(barges), "backchannel+noise": len(non_barge), "hold": len(holds), "end_of_turn": len(eots),
                   "other_speaker": sum(t == "other_speaker" for t, _ in conf)},
    }


def _share(flags: list[bool]) -> float | None:
    return _r(sum(flags) / len(flags)) if flags else None


def _rate(conf: list[tuple[str, str]], label: str, pred: str) -> float | None:
    rel = [p for t, p in conf if t == label]
    return _r(sum(p == pred for p in rel) / len(rel)) if rel else None


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def evaluate(
    cases: Sequence[Path], policies: dict[str, TurnPolicy], progress: bool = True, per_source: bool = True
) -> dict:
    """Run every policy over every case; returns the JSON-ready report.

    ``per_source`` adds the same summary for each source of the cases (the part of a
    case name before its first ``-``, see :func:`policies.realcases.source_of`).
    """
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
            sc = score_case(case.events, trace, source_of(case.name))
            scores[name].append(sc)
            compute[name].append(trace.compute_s)
            per_case[case.name][name] = {
                "confusion": sc.confusion,
                "stopped": sc.stopped,
                "barge_in_latency_s": [round(x, 3) for x in sc.barge_latency],
                "eot_delay_s": [round(x, 3) for x in sc.eot_delay],
                "spurious_barge_ins": sc.spurious_barge_ins,
                "spurious_eots": sc.spurious_eots,
            }
    report: dict = {
        "cases": len(cases),
        "policies": {n: summarise(scores[n], np.concatenate(compute[n]) if compute[n] else np.zeros(0)) for n in policies},
    }
    if per_source:
        sources = sorted({sc.source for sc in next(iter(scores.values()), [])})
        report["per_source"] = {
            src: {n: summarise([sc for sc in scores[n] if sc.source == src], np.zeros(0)) for n in policies}
            for src in sources
        }
    report["per_case"] = per_case
    return report


# --- end-of-turn operating curve: the turn-detector benchmarks' two numbers ------------------

OPERATING_POINTS: dict[str, tuple[str, tuple[float, ...]]] = {
    # The knob that trades premature cut-offs for delay, and the values swept.
    "rules": ("rules.end_of_turn_silence_ms", (100, 200, 300, 400, 500, 600, 800, 1000, 1200, 1500)),
    "smart-turn": ("rules.smart_turn_trigger_ms", (100, 200, 300, 400, 500, 600, 800, 1000, 1200, 1500)),
    # The fused evidence's threshold, as a probability (0 means the shipped one).
    "predictor": ("predictor.end_of_turn_threshold",
                  (0.5, 0.73, 0.88, 0.95, 0.982, 0.9933, 0.9975, 0.9991, 0.99966, 0.99988)),
}
"""Per policy: the config key that sets its end-of-turn operating point and the values swept."""


def predictor_with(weights: str, eot_threshold: float | None = None) -> TurnPolicy:
    """The predictor with other weights (a candidate), at its own or a given end-of-turn threshold."""
    pc = PredictorConfig(weights=weights)
    if eot_threshold is not None:
        pc = replace(pc, end_of_turn_threshold=float(eot_threshold))
    return make_policy(PolicyConfig(name="predictor", predictor=pc))


def operating_policy(name: str, value: float) -> TurnPolicy:
    """Policy ``name`` (a registry name) at one operating point of its end-of-turn knob."""
    if name not in OPERATING_POINTS:
        raise PolicyError(f"policy {name!r} has no end-of-turn knob to sweep")
    section, key = OPERATING_POINTS[name][0].split(".")
    cfg = PolicyConfig(name=name)  # type: ignore[arg-type]
    field_type = type(getattr(getattr(cfg, section), key))
    cfg = replace(cfg, **{section: replace(getattr(cfg, section), **{key: field_type(value)})})
    return make_policy(cfg)


def eot_curve(cases: Sequence[Path], name: str, build: Callable[[str, float], TurnPolicy] | None = None,
              kind: str | None = None) -> dict:
    """Premature cut-offs against delay across a policy's end-of-turn operating points.

    ``kind`` names the registry policy whose knob is swept (default ``name``; a column with
    other weights is a ``predictor``). Only cases with user-turn labels are run. Returns the
    curve and the two numbers
    turn-detector benchmarks quote: the false cut-off rate of the operating point that
    answers within a 300 ms budget (the slowest whose p50 delay is at most 300 ms; None if
    none is that fast) and the smallest p50 delay at which false cut-offs are at most 5 %
    (None if no operating point gets there).
    """
    build = build or operating_policy
    knob, values = OPERATING_POINTS[kind or name]
    prepared = []
    for wav in cases:
        case = load_case(wav)
        if any(e.label in USER_LABELS for e in case.events):
            prepared.append((case, runner_for(wav, case)))
    curve = []
    for v in values:
        pol = build(name, v)
        m = summarise([score_case(case.events, runner.run(pol)) for case, runner in prepared], np.zeros(0))
        curve.append({"value": v, "false_cutoff_rate": m["eot_premature_rate"], "eot_missed_rate": m["eot_missed_rate"],
                      "eot_delay_ms_p50": m["eot_delay_ms_p50"]})
    fast = [c for c in curve if c["eot_delay_ms_p50"] is not None and c["eot_delay_ms_p50"] <= 300]
    at300 = max(fast, key=lambda c: c["eot_delay_ms_p50"])["false_cutoff_rate"] if fast else None
    ok = [c["eot_delay_ms_p50"] for c in curve
          if c["false_cutoff_rate"] is not None and c["false_cutoff_rate"] <= 0.05 and c["eot_delay_ms_p50"] is not None]
    return {"knob": knob, "curve": curve,
            "false_cutoff_at_300ms": at300, "delay_ms_at_5pct_false_cutoff": min(ok) if ok else None,
            "cases": len(prepared)}


def runner_for(wav: Path, case: Case) -> CaseRunner:
    return CaseRunner(case.audio, listen_cached(wav, case.audio[:, 1], asr=True, drafts=True))


ROWS: list[tuple[str, str]] = [
    ("false barge-in (bc+noise)", "false_barge_in_rate"),
    ("  on backchannels", "false_barge_in_backchannel"),
    ("  on noise", "false_barge_in_noise"),
    ("false barge-in on other voices", "false_barge_in_other_speaker"),
    ("missed barge-ins", "missed_barge_in_rate"),
    ("barge-in latency p50 ms", "barge_in_latency_ms_p50"),
    ("barge-in latency p95 ms", "barge_in_latency_ms_p95"),
    ("barge-in commit p50 ms", "barge_in_commit_ms_p50"),
    ("backchannels that stop or pause", "backchannel_stop_or_pause_rate"),
    ("backchannels that cost the turn", "backchannel_lost_turn_rate"),
    ("spurious barge-ins /agent-min", "spurious_barge_ins_per_agent_min"),
    ("EOT premature cut-offs (holds)", "eot_premature_rate"),
    ("EOT missed", "eot_missed_rate"),
    ("EOT delay p50 ms", "eot_delay_ms_p50"),
    ("EOT delay p95 ms", "eot_delay_ms_p95"),
    ("spurious EOTs (count)", "spurious_eots"),
    ("agent backchannels /user-min", "agent_backchannels_per_user_min"),
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


SOURCE_ROWS: list[tuple[str, str]] = [
    ("bc stop/pause", "backchannel_stop_or_pause_rate"),
    ("bc lost turn", "backchannel_lost_turn_rate"),
    ("missed barge", "missed_barge_in_rate"),
    ("barge p50 ms", "barge_in_latency_ms_p50"),
    ("premature EOT", "eot_premature_rate"),
    ("EOT p50 ms", "eot_delay_ms_p50"),
]


def format_sources(report: dict) -> str:
    """One row per source and policy: the headline numbers (n/a where a source has no such event)."""
    names = list(report["policies"])
    head = "| source | policy | " + " | ".join(label for label, _ in SOURCE_ROWS) + " | events |"
    lines = [head, "| --- | --- |" + " ---: |" * (len(SOURCE_ROWS) + 1)]
    for src, by_policy in report.get("per_source", {}).items():
        for n in names:
            m = by_policy[n]
            cells = []
            for _, key in SOURCE_ROWS:
                v = m[key]
                cells.append("n/a" if v is None else (f"{100 * v:.0f} %" if key.endswith("rate") else f"{v:.0f}"))
            c = m["counts"]
            ev = f"{c['barge_in']}b {c['backchannel+noise']}bc {c['hold']}h {c['end_of_turn']}e"
            lines.append(f"| {src} | {n} | " + " | ".join(cells) + f" | {ev} |")
    return "\n".join(lines)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The evaluation's arguments (``duplex eval-policy``)."""
    ap.add_argument("cases", type=Path, help="directory of NAME.wav + NAME.tsv cases")
    ap.add_argument("--policy", action="append", choices=POLICIES, help="repeatable; default: all three")
    ap.add_argument("--weights", action="append", default=[], metavar="NAME=PATH",
                    help="an extra predictor column with these weights (repeatable)")
    ap.add_argument("--json", type=Path, default=None, help="write the full report (summary, per source, per case) here")
    ap.add_argument("--limit", type=int, default=0, help="only the first N cases")
    ap.add_argument("--per-source", action="store_true", help="also print a table per source")
    ap.add_argument("--eot-curve", action="store_true",
                    help="sweep each policy's end-of-turn operating point (false cut-offs at a 300 ms budget, delay at 5 %%)")


def run(a: argparse.Namespace, progress: bool = True) -> dict:
    """Evaluate as the parsed arguments say; returns the report (raises DuplexError)."""
    wavs = list_cases(a.cases)
    if a.limit:
        wavs = wavs[: a.limit]
    names = a.policy or list(POLICIES)
    policies = {n: make_named_policy(n) for n in names}
    extra: dict[str, str] = {}
    for spec in a.weights:
        label, sep, path = spec.partition("=")
        if not sep or not label or not path:
            raise PolicyError(f"--weights wants NAME=PATH, got {spec!r}")
        if not Path(path).exists():
            raise PolicyError(f"--weights {label}: no such file {path}")
        extra[label] = path
        policies[label] = predictor_with(path)
    report = evaluate(wavs, policies, progress=progress)
    report["cases_dir"] = str(a.cases)
    if a.eot_curve:
        def build(name: str, value: float) -> TurnPolicy:
            return predictor_with(extra[name], value) if name in extra else operating_policy(name, value)

        report["eot_curve"] = {n: eot_curve(wavs, n, build, "predictor" if n in extra else n)
                               for n in policies if n in OPERATING_POINTS or n in extra}
    return report


def format_curve(report: dict) -> str:
    rows = ["| policy | false cut-offs at a 300 ms budget | delay p50 where false cut-offs <= 5 % |", "| --- | ---: | ---: |"]
    for n, b in report.get("eot_curve", {}).items():
        f300 = b["false_cutoff_at_300ms"]
        d5 = b["delay_ms_at_5pct_false_cutoff"]
        rows.append(f"| {n} | {'never that fast' if f300 is None else f'{100 * f300:.0f} %'} | {'not reached' if d5 is None else f'{d5:.0f} ms'} |")
    return "\n".join(rows)

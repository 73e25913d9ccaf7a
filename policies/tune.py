"""Fit the predictor's decision layer on the generated dev split (held-out voices).

Never on real recordings: those are the validation that says whether it worked.
``fit_decisions(weights, dev_wavs)`` runs the network once over every dev case, then

* **end of turn**: fits a logistic regression on the silent frames of user turns (1 in
  the window after the user's last word, 0 inside a pause they resume from) over the
  fused features (``logit p(end_of_turn)``, ``logit p(text ends)``, a trailing
  continuation word, the silence so far), then slides its bias to the fastest
  operating point whose premature cut-offs stay at or under ``MAX_PREMATURE``;
* **while the agent speaks**: searches a small grid of pause and commit settings for the
  fewest backchannels stopped or paused plus missed barge-ins (weighted), then the
  fastest stop.

Replays reuse the stored network outputs, so only the decision rules run per setting.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from duplex.config import PredictorConfig
from duplex.turn import PolicyInput, PolicyOutput, words
from policies.eval import runner_for, score_case, summarise
from policies.features import CONTINUATION_WORDS
from policies.harness import load_case
from policies.predictor import DecisionParams, PredictorPolicy, _logit

log = logging.getLogger(__name__)

MAX_PREMATURE = 0.03
"""Premature cut-offs allowed on dev holds when choosing the end-of-turn operating point."""
DECISION_REGION_S = 1.2
"""Frames later into a silence than this are not fitted on: by then every policy knows."""
MISSED_WEIGHT = 2.0
"""A missed barge-in costs this many backchannels stopped (the user has to repeat themselves)."""


class _Replay:
    """A predictor whose network outputs were computed once; only its decision rules run."""

    name = "predictor-replay"

    def __init__(self, policy: PredictorPolicy, pa: np.ndarray, pu: np.ndarray) -> None:
        self.policy = policy
        self.pa, self.pu = pa, pu
        self.i = 0

    def reset(self) -> None:
        self.i = 0
        self.policy.reset_decisions()

    def step(self, x: PolicyInput) -> PolicyOutput:
        out = self.policy.decide(x, self.pa[self.i], self.pu[self.i])
        self.i += 1
        return out


def _logistic_fit(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 50) -> np.ndarray:
    """Weights (bias last) of a class-balanced logistic regression by Newton's method."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    pos = max(float(y.mean()), 1e-6)
    sw = np.where(y > 0.5, 0.5 / pos, 0.5 / max(1.0 - pos, 1e-6))
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(xb @ w)))
        g = xb.T @ (sw * (p - y)) + l2 * w
        h = (xb * (sw * p * (1 - p))[:, None]).T @ xb + l2 * np.eye(len(w))
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-6:
            break
    return w


def fit_decisions(weights: Path, dev_wavs: Sequence[Path], text_eou: bool = True) -> dict[str, float]:
    """The decision parameters for ``weights``, fitted on ``dev_wavs`` (see the module docstring)."""
    pol = PredictorPolicy(PredictorConfig(weights=str(weights)), params=DecisionParams(), text_eou=text_eou)
    prepared = []
    rows: list[list[float]] = []
    labels: list[float] = []
    for wav in dev_wavs:
        case = load_case(wav)
        runner = runner_for(wav, case)
        pol.reset()
        pa, pu = [], []
        t_eot = [(e.start, e.end) for e in case.events if e.label == "end_of_turn"]
        t_hold = [(e.start, e.end) for e in case.events if e.label == "hold"]
        for x in runner.inputs():
            a, u = pol.model.step(pol.features(x))
            pa.append(a)
            pu.append(u)
            pol._track_words(x)
            if x.agent_speaking or not x.user_turn_open or x.silence <= 0 or x.silence > DECISION_REGION_S:
                continue
            y = 1.0 if any(s <= x.t <= e for s, e in t_eot) else 0.0 if any(s <= x.t <= e for s, e in t_hold) else None
            if y is None:
                continue
            text = pol.turn_text
            ws = words(text)
            p_text = pol.text(text) if text_eou else None
            rows.append([_logit(float(u[1])), _logit(p_text) if p_text is not None else 0.0,
                         float(bool(ws) and ws[-1] in CONTINUATION_WORDS), min(x.silence, 2.0)])
            labels.append(y)
        prepared.append((case, runner, _Replay(pol, np.array(pa), np.array(pu))))
    base = DecisionParams()
    x, y = np.array(rows), np.array(labels)
    if len(y) and 0 < y.mean() < 1:
        w = _logistic_fit(x, y)
        log.info("end-of-turn logistic fit on %d frames (%.0f %% ends), for reference: %s", len(y), 100 * y.mean(), np.round(w, 3))

    def run(params: DecisionParams) -> dict:
        pol.params = params
        return summarise([score_case(case.events, runner.run(rep)) for case, runner, rep in prepared], np.zeros(0))

    # End of turn: evidence added on the logit scale (the model's, the text's), plus a
    # hazard that grows with the silence; the text weight, the slope and the threshold are
    # searched for the fastest p50 with premature cut-offs at most MAX_PREMATURE.
    best_e: tuple[float, DecisionParams] = (math.inf, base)
    for w_text in ((0.0, 0.5, 1.0) if text_eou else (0.0,)):
        for slope in (2.0, 4.0, 6.0, 8.0):
            for thr in np.arange(-2.0, 8.01, 1.0):
                p = replace(base, eot_bias=0.0, eot_w_model=1.0, eot_w_text=w_text, eot_w_cont=0.0,
                            eot_w_silence=slope, eot_threshold=float(thr), min_silence_s=0.1)
                m = run(p)
                pm, me = m["eot_premature_rate"] or 0.0, m["eot_missed_rate"] or 0.0
                dl = (m["eot_delay_ms_p50"] or 5000) / 1000
                cost = dl + me if pm <= MAX_PREMATURE else 10 + 10 * pm + dl
                log.info("eot text %.1f slope %.1f thr %.1f: premature %.3f missed %.3f p50 %.3f", w_text, slope, thr, pm, me, dl)
                if cost < best_e[0]:
                    best_e = (cost, p)
    params = best_e[1]
    best_a: tuple[float, DecisionParams] = (math.inf, params)
    grid = itertools.product((0.3, 0.5, 0.7, 0.9), (0.15, 0.2, 0.3), (0.8, 1.0, 1.3), (0.9, 0.97, 0.995))
    for pause_prob, pause_run, commit_run, commit_prob in grid:
        p = replace(params, pause_prob=pause_prob, pause_run_s=pause_run, commit_run_s=commit_run, commit_prob=commit_prob)
        m = run(p)
        stop = m["backchannel_stop_or_pause_rate"] or 0.0
        missed = m["missed_barge_in_rate"] or 0.0
        lat = (m["barge_in_latency_ms_p50"] or 3000) / 1000
        cost = stop + MISSED_WEIGHT * missed + 0.2 * lat
        if cost < best_a[0]:
            best_a = (cost, p)
    out = asdict(best_a[1])
    m = run(best_a[1])
    log.info("fitted decisions on %d dev cases: %s", len(prepared), out)
    log.info("dev: backchannels stopped/paused %s, missed barge-ins %s, stop p50 %s ms, premature %s, EOT p50 %s ms",
             m["backchannel_stop_or_pause_rate"], m["missed_barge_in_rate"], m["barge_in_latency_ms_p50"],
             m["eot_premature_rate"], m["eot_delay_ms_p50"])
    return out


__all__ = ["fit_decisions", "MAX_PREMATURE"]

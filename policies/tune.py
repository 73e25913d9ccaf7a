"""Fit the predictor's decision layer on the generated dev split (held-out voices).

Never on real recordings: those are the validation that says whether it worked.
``fit_decisions(weights, dev_wavs)`` runs the network once over every dev case, then

* **end of turn**: the model's and the text's evidence are added on the logit scale with
  a hazard that grows with the silence; the text's weight, the slope and the threshold are
  searched for the fastest p50 delay whose premature cut-offs stay at or under
  ``MAX_PREMATURE`` (a frame-level logistic fit was tried first: on generated voices it
  gave the text almost no weight and slower operating points);
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
from duplex.turn import PolicyInput, PolicyOutput
from policies.eval import runner_for, score_case, summarise
from policies.harness import load_case
from policies.predictor import DecisionParams, PredictorPolicy

log = logging.getLogger(__name__)

MAX_PREMATURE = 0.03
"""Premature cut-offs allowed on dev holds when choosing the end-of-turn operating point."""
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


def fit_decisions(weights: Path, dev_wavs: Sequence[Path], text_eou: bool = True,
                  audio_eou: bool = False) -> dict[str, float]:
    """The decision parameters for ``weights``, fitted on ``dev_wavs`` (see the module docstring)."""
    pol = PredictorPolicy(PredictorConfig(weights=str(weights)), params=DecisionParams(), text_eou=text_eou,
                          audio_eou=audio_eou)
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
    base = DecisionParams()

    def run(params: DecisionParams) -> dict:
        pol.params = params
        return summarise([score_case(case.events, runner.run(rep)) for case, runner, rep in prepared], np.zeros(0))

    # End of turn: evidence added on the logit scale (the model's, the text's), plus a
    # hazard that grows with the silence; the text weight, the slope and the threshold are
    # searched for the fastest p50 with premature cut-offs at most MAX_PREMATURE.
    best_e: tuple[float, DecisionParams] = (math.inf, base)
    for w_text, w_audio in itertools.product((0.0, 0.5, 1.0) if text_eou else (0.0,),
                                             (0.0, 0.5, 1.0, 2.0) if audio_eou else (0.0,)):
        for slope in (2.0, 4.0, 6.0, 8.0):
            for thr in np.arange(-2.0, 8.01, 1.0):
                p = replace(base, eot_bias=0.0, eot_w_model=1.0, eot_w_text=w_text, eot_w_cont=0.0,
                            eot_w_silence=slope, eot_threshold=float(thr), min_silence_s=0.1, eot_w_audio=w_audio)
                m = run(p)
                pm, me = m["eot_premature_rate"] or 0.0, m["eot_missed_rate"] or 0.0
                dl = (m["eot_delay_ms_p50"] or 5000) / 1000
                cost = dl + me if pm <= MAX_PREMATURE else 10 + 10 * pm + dl
                log.info("eot text %.1f audio %.1f slope %.1f thr %.1f: premature %.3f missed %.3f p50 %.3f",
                         w_text, w_audio, slope, thr, pm, me, dl)
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

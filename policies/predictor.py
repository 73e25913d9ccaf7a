"""The predictor policy: the duplex Transformer, run causally every 32 ms frame.

Each frame, :class:`policies.features.Featurizer` turns the engine's
:class:`duplex.turn.PolicyInput` into one feature vector and
:class:`policies.model.StreamingPredictor` (numpy, KV cache of the last ``window``
frames) gives both heads' probabilities. The decision rules on top are deliberately thin:

* agent speaking: BARGE_IN the first frame ``p(barge_in)`` reaches its threshold (once
  per user sound: it re-arms after 0.5 s of silence or 0.3 s of low probability); when the user's sound ends without
  a barge-in, BACKCHANNEL if ``p(backchannel)`` peaked above its threshold, else CONTINUE;
* user's floor (``user_turn_open``): END_OF_TURN once ``p(end_of_turn)`` has been at
  its threshold for two silent frames (after a tuned minimum silence) (or after ``max_silence_ms`` whatever the model says);
  BACKCHANNEL_OPPORTUNITY in a pause the model rates so (at most every
  ``agent_backchannel_min_gap_s``); HOLD otherwise.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from duplex.config import PredictorConfig
from duplex.errors import PolicyError
from duplex.events import Decision
from duplex.turn import PolicyInput, PolicyOutput
from policies.features import FEATURE_NAMES, Featurizer

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "predictor.pt"
DEFAULT_THRESHOLDS = {
    "barge_in": 0.5, "backchannel": 0.5, "end_of_turn": 0.5, "backchannel_opportunity": 0.6, "end_of_turn_min_silence_ms": 0,
}
REARM_SILENCE_S = 0.5
"""After a barge-in, the next one needs a new user sound after this much silence..."""
REARM_FRAMES = 10
"""...or the model's barge-in probability under half its threshold for this many frames
(with a loud echo the VAD never goes silent while the agent talks)."""
EOT_FRAMES = 2
"""Consecutive silent frames at or above the end-of-turn threshold before the turn ends."""
SOUND_END_S = 0.25
"""A user sound during agent speech is over after this much silence (then it is classified)."""
AGENT_PROBS = ("continue", "backchannel", "barge_in")
USER_PROBS = ("hold", "end_of_turn", "backchannel_opportunity")


def load_weights(path: str | Path = "") -> tuple[object, dict]:
    """Load ``predictor.pt`` and its ``predictor.json``; returns (StreamingPredictor, meta).

    Raises:
        PolicyError: the files are missing or do not match this code's features/model.
    """
    import torch

    from policies.model import ModelConfig, StreamingPredictor

    p = Path(path) if path else DEFAULT_WEIGHTS
    meta_path = p.with_suffix(".json")
    if not p.exists() or not meta_path.exists():
        raise PolicyError(f"predictor weights not found: {p} (train them with: python -m policies.train)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        state = torch.load(p, map_location="cpu", weights_only=True)
        cfg = ModelConfig(**meta["model"])
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise PolicyError(f"cannot load predictor weights {p}: {exc}") from exc
    if tuple(meta.get("features", ())) != FEATURE_NAMES:
        raise PolicyError(f"predictor weights {p} were trained on other features; retrain (python -m policies.train)")
    try:
        return StreamingPredictor(cfg, state), meta
    except KeyError as exc:
        raise PolicyError(f"predictor weights {p} lack tensor {exc}; retrain") from exc


class PredictorPolicy:
    """The trained duplex predictor behind the :class:`duplex.turn.TurnPolicy` protocol."""

    name = "predictor"

    def __init__(self, cfg: PredictorConfig | None = None) -> None:
        self.cfg = cfg or PredictorConfig()
        self.model, self.meta = load_weights(self.cfg.weights)
        tuned = {**DEFAULT_THRESHOLDS, **self.meta.get("thresholds", {})}
        c = self.cfg

        def pick(value: float, key: str) -> float:
            return float(value) if value > 0 else float(tuned[key])

        self.thr_barge = pick(c.barge_in_threshold, "barge_in")
        self.thr_bc = pick(c.backchannel_threshold, "backchannel")
        self.thr_eot = pick(c.end_of_turn_threshold, "end_of_turn")
        self.thr_bco = pick(c.backchannel_opportunity_threshold, "backchannel_opportunity")
        ms = c.end_of_turn_min_silence_ms
        self.eot_min_silence = (ms if ms >= 0 else float(tuned["end_of_turn_min_silence_ms"])) / 1000
        self.features = Featurizer()
        self.reset()

    def reset(self) -> None:
        self.model.reset()
        self.features.reset()
        self.reset_decisions()

    def step(self, x: PolicyInput) -> PolicyOutput:
        pa, pu = self.model.step(self.features(x))
        return self.decide(x, pa, pu)

    def reset_decisions(self) -> None:
        """Forget the decision state only (threshold search replays stored probabilities)."""
        self._latched = False
        self._low = 0
        self._sound = False
        self._bc_peak = 0.0
        self._last_bco = -1e9
        self._bco_pause = False
        self._eot_run = 0

    def decide(self, x: PolicyInput, pa: np.ndarray, pu: np.ndarray) -> PolicyOutput:
        """The decision rules on one frame's probabilities (agent head ``pa``, user head ``pu``)."""
        probs = {k: float(v) for k, v in zip(AGENT_PROBS, pa, strict=True)}
        probs.update({k: float(v) for k, v in zip(USER_PROBS, pu, strict=True)})
        decision: Decision | None = None
        if x.agent_speaking:
            decision = self._agent_turn(x, probs)
        else:
            self._latched = False
            self._sound = False
            self._bc_peak = 0.0
            if x.user_turn_open:
                decision = self._user_turn(x, probs)
        return PolicyOutput(decision, probs)

    def _agent_turn(self, x: PolicyInput, p: dict[str, float]) -> Decision | None:
        sounding = x.user_speaking or x.silence < SOUND_END_S
        if self._latched:
            self._low = self._low + 1 if p["barge_in"] < 0.5 * self.thr_barge else 0
            if (x.silence >= REARM_SILENCE_S and not x.user_speaking) or self._low >= REARM_FRAMES:
                self._latched = False
            return None
        if p["barge_in"] >= self.thr_barge:
            self._latched = True
            self._low = 0
            self._sound = False
            self._bc_peak = 0.0
            return Decision.BARGE_IN
        if x.user_speaking:
            self._sound = True
        if self._sound:
            self._bc_peak = max(self._bc_peak, p["backchannel"])
            if not sounding:
                self._sound = False
                peak, self._bc_peak = self._bc_peak, 0.0
                return Decision.BACKCHANNEL if peak >= self.thr_bc else Decision.CONTINUE
        return None

    def _user_turn(self, x: PolicyInput, p: dict[str, float]) -> Decision:
        if x.silence <= 0.0:
            self._bco_pause = False
            self._eot_run = 0
            return Decision.HOLD
        ready = p["end_of_turn"] >= self.thr_eot and x.silence >= self.eot_min_silence
        self._eot_run = self._eot_run + 1 if ready else 0
        if x.silence * 1000 >= self.cfg.max_silence_ms or self._eot_run >= EOT_FRAMES:
            self._eot_run = 0
            return Decision.END_OF_TURN
        if (
            self.cfg.agent_backchannels
            and not self._bco_pause
            and p["backchannel_opportunity"] >= self.thr_bco
            and x.t - self._last_bco >= self.cfg.agent_backchannel_min_gap_s
        ):
            self._bco_pause = True
            self._last_bco = x.t
            return Decision.BACKCHANNEL_OPPORTUNITY
        return Decision.HOLD


__all__ = ["PredictorPolicy", "load_weights"]

"""Turn-taking policies: the duplex predictor (a small causal Transformer) and a rule baseline.

``make_policy(config)`` builds the configured one; policies see only
:class:`duplex.turn.PolicyInput` and return :class:`duplex.turn.PolicyOutput`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from duplex.config import PolicyConfig
    from duplex.turn import TurnPolicy


def make_policy(cfg: PolicyConfig) -> TurnPolicy:
    """Build the policy named in ``cfg.name``."""
    from duplex.errors import PolicyError

    if cfg.name == "rules":
        from policies.rules import RulePolicy

        return RulePolicy(cfg.rules)
    if cfg.name == "predictor":
        try:
            from policies.predictor import PredictorPolicy
        except ImportError as exc:
            raise PolicyError(f"the predictor policy is not available: {exc}") from exc
        return PredictorPolicy(cfg.predictor)
    if cfg.name == "smart-turn":
        from policies.smart_turn import SmartTurnPolicy

        return SmartTurnPolicy(cfg.rules)
    raise PolicyError(f"unknown policy {cfg.name!r} (known: predictor, rules, smart-turn)")

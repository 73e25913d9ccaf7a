"""Turn-taking policies: the duplex predictor (a small causal Transformer) and two baselines.

The one registry of policy names: :data:`BUILDERS` maps each name to the function that
builds it from a :class:`duplex.config.PolicyConfig`, and :data:`POLICY_NAMES` lists them
for the CLI's choices, the evaluation, the TUI's switch key and the config check
(``PolicyConfig.name``'s ``Literal``, which ``tests/test_cli.py`` holds equal to this).

``make_policy(config)`` builds the configured one; policies see only
:class:`duplex.turn.PolicyInput` and return :class:`duplex.turn.PolicyOutput`. The engine
never imports this package: the command layer hands ``make_policy`` to
:func:`duplex.stages.factory.load_models`, and the engine builds policies through it.
"""

from __future__ import annotations

from collections.abc import Callable

from duplex.config import PolicyConfig
from duplex.errors import PolicyError
from duplex.turn import TurnPolicy
from policies.predictor import PredictorPolicy
from policies.rules import RulePolicy
from policies.smart_turn import SmartTurnPolicy

PolicyBuilder = Callable[[PolicyConfig], TurnPolicy]

BUILDERS: dict[str, PolicyBuilder] = {
    # Each builder loads its own weights (torch / ONNX) when called, not at import.
    "predictor": lambda cfg: PredictorPolicy(cfg.predictor),
    "rules": lambda cfg: RulePolicy(cfg.rules),
    "smart-turn": lambda cfg: SmartTurnPolicy(cfg.rules),
}
POLICY_NAMES: tuple[str, ...] = tuple(BUILDERS)
"""Every policy name, the shipped default first."""


def make_policy(cfg: PolicyConfig) -> TurnPolicy:
    """Build the policy named in ``cfg.name``.

    Raises:
        PolicyError: the name is unknown, or the policy's model cannot be loaded.
    """
    builder = BUILDERS.get(cfg.name)
    if builder is None:
        raise PolicyError(f"unknown policy {cfg.name!r} (known: {', '.join(POLICY_NAMES)})")
    return builder(cfg)


def make_named_policy(name: str) -> TurnPolicy:
    """Build a policy by name with its default configuration."""
    return make_policy(PolicyConfig(name=name))  # type: ignore[arg-type]


__all__ = ["BUILDERS", "POLICY_NAMES", "PolicyBuilder", "make_named_policy", "make_policy"]

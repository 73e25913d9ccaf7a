"""pytest support for duplex scenarios: fixtures and a ``scenario`` marker.

Enable it in a ``conftest.py``::

    pytest_plugins = ["duplex.session.pytest_plugin"]

then::

    @pytest.mark.scenario("scenarios/bargein_wait_stop.toml")   # relative to the test file
    def test_agent_stops(scenario_result):
        assert_scenario(scenario_result)

    def test_inline(run_scenario):
        result = run_scenario({
            "agent_says": "The train leaves at nine. It takes four hours.",
            "say": [{"text": "wait, stop", "after_agent_speech": 1.0, "expect": "stops", "stop_within_ms": 800}],
        })
        assert_scenario(result)

Models load once per test session (``duplex_models``, from ``duplex_config``: the default
profile); override either fixture to use your own. ``assert_scenario`` turns a scenario's
``[known_failure]`` for the policy in use into an ``xfail``.

Like the commands, this plugin is an entry point: it wires the whole stack, so it is the
one module under ``duplex/session`` that imports ``policies`` (for ``make_policy``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from duplex.session.scenario import Scenario, ScenarioResult, ScenarioRunner, load_scenario, parse_scenario
from duplex.stages.factory import load_models
from policies import make_policy


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "scenario(path, policy=None): run a duplex scenario file; the test receives `scenario_result`"
    )


@pytest.fixture(scope="session")
def duplex_config() -> Any:
    """The configuration scenarios run with (the default profile)."""
    from duplex.config import load_config

    return load_config()


@pytest.fixture(scope="session")
def duplex_models(duplex_config: Any) -> Any:
    """Models loaded once for every scenario of the test session."""
    return load_models(duplex_config, make_policy)


@pytest.fixture(scope="session")
def scenario_runner(duplex_config: Any, duplex_models: Any) -> ScenarioRunner:
    return ScenarioRunner(duplex_config, duplex_models)


@pytest.fixture
def run_scenario(scenario_runner: ScenarioRunner, request: pytest.FixtureRequest) -> Any:
    """``run_scenario(path_or_dict, policy=None) -> ScenarioResult``.

    A relative path is looked up beside the test file first, then in the working directory.
    """
    here = Path(str(request.path)).parent

    def run(scn: str | Path | dict[str, Any] | Scenario, policy: str | None = None) -> ScenarioResult:
        if isinstance(scn, dict):
            scenario = parse_scenario(scn, f"{request.node.name} (inline scenario)")
        elif isinstance(scn, Scenario):
            scenario = scn
        else:
            p = Path(scn)
            if not p.is_absolute() and (here / p).exists():
                p = here / p
            scenario = load_scenario(p)
        overrides = [{"policy": {"name": policy}}] if policy else []
        return scenario_runner.run(scenario, overrides)

    return run


@pytest.fixture
def scenario_result(request: pytest.FixtureRequest, run_scenario: Any) -> ScenarioResult:
    """The result of the scenario named by the test's ``@pytest.mark.scenario(path)``."""
    marker = request.node.get_closest_marker("scenario")
    if marker is None or not marker.args:
        raise pytest.UsageError(f"{request.node.nodeid}: scenario_result needs @pytest.mark.scenario(path)")
    return run_scenario(marker.args[0], policy=marker.kwargs.get("policy"))


def assert_scenario(result: ScenarioResult) -> None:
    """Fail the test with the scenario's explanation, or xfail a known failure."""
    if result.passed:
        return
    if result.known_failure:
        pytest.xfail(f"known failure with {result.policy}: {result.known_failure}")
    raise AssertionError("scenario failed:\n" + result.explain())

"""Pause / resume / commit as the outside sees them: the TUI's view and MQTT on a real broker.

The events come from real engine runs on the fake-stage harness (tests/harness.py).
"""

from __future__ import annotations

import dataclasses

import pytest
from mqtt_fixtures import Collector, kind, mosquitto, requires_mosquitto, unique_by_seq  # noqa: F401

from duplex.events import AgentState, Decision
from duplex.mqtt import MQTTBridge  # type: ignore[attr-defined]
from duplex.mqtt.payloads import validate
from harness import ScriptedPolicy, arun_timeline, make_config, run_timeline, says
from test_engine_timeline import ASK
from tui.view import SessionView, state_label

PAUSE, RESUME, BARGE_IN = Decision.PAUSE, Decision.RESUME, Decision.BARGE_IN
PREFIX = "test/kitchen"

# Under the first reply: a backchannel is paused then resumed; then the user barges in
# after a second pause.
SCRIPT = [ASK, says("mm hmm", 2.2, 2.5), says("wait stop what about mars", 3.0, 4.0)]
DECISIONS = {2.3: PAUSE, 2.9: RESUME, 3.1: PAUSE, 3.5: BARGE_IN}


def test_the_tui_shows_paused_resumed_and_committed():
    run = run_timeline(SCRIPT, policy=ScriptedPolicy(at=DECISIONS))
    view = SessionView()
    states = []
    for ev in run.events:
        view.apply(ev)
        states.append(view.state)
    assert AgentState.PAUSED in states and state_label(AgentState.PAUSED) == "PAUSED"
    notes = [(line.status, line.text) for line in view.transcript.lines.values() if line.key.startswith("p")]
    assert notes == [("resumed", "resumed after 608 ms"), ("committed", "committed: barge-in after 416 ms")]
    kinds = [line.kind for line in view.log]
    assert kinds.count("PAUSE") == 2 and kinds.count("resume") == 1
    assert any(line.kind == "BARGE-IN" and "after a pause" in line.text for line in view.log)
    # The pause notes do not steal the agent's line: the heard words stay on it.
    agent = view.transcript.lines["a1"]
    assert agent.status == "cut" and agent.text and agent.unheard


def test_pause_lines_render():
    pytest.importorskip("textual")
    from tui.widgets.conversation import render_line
    from tui.view import Line

    assert render_line(Line("p1", "agent", "paused", text="paused")).plain.strip() == "⏸ paused"
    assert "resumed after 608 ms" in render_line(Line("p1", "agent", "resumed", text="resumed after 608 ms")).plain


@pytest.mark.timeout(120)
@requires_mosquitto
async def test_mqtt_publishes_pause_resume_and_commit(mosquitto):  # noqa: F811
    cfg = dataclasses.replace(make_config(), mqtt=mosquitto.config())
    async with Collector(mosquitto.port, f"{PREFIX}/#") as col:
        async with MQTTBridge(cfg.mqtt, session_id="pause") as bridge:
            run = await arun_timeline(SCRIPT, cfg=cfg, policy=ScriptedPolicy(at=DECISIONS),
                                      on_engine=lambda e: e.bus.subscribe(bridge.on_event))
        await col.wait_for(lambda ms: any(m.payload == b"offline" for m in col.on(f"{PREFIX}/availability")))
    payloads = unique_by_seq(col.messages)
    for p in payloads:
        validate("payload", p)
    kinds = [kind(p) for p in payloads]
    seq = [k for k in kinds if k in ("agent_paused", "agent_resumed", "barge_in", "state:paused")]
    assert seq == ["agent_paused", "state:paused", "agent_resumed", "agent_paused", "state:paused", "barge_in"], kinds
    paused = [p for p in payloads if p["type"] == "agent_paused"]
    resumed = next(p for p in payloads if p["type"] == "agent_resumed")
    barge = next(p for p in payloads if p["type"] == "barge_in")
    assert resumed["paused_ms"] == 608 and resumed["timeout"] is False and resumed["turn"] == 1
    assert barge["was_paused"] is True and barge["turn"] == 1
    assert paused[0]["onset_t"] == pytest.approx(2.2, abs=0.04)
    assert run.stats.barge_ins == 1

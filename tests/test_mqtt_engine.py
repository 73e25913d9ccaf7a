"""A real engine session over MQTT: the packaged models, a scripted user, a real mosquitto,
wired the way ``duplex run`` wires it (``duplex.app.run_conversation`` with ``mqtt.enabled``)."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest
from mqtt_fixtures import Collector, kind, mosquitto, requires_mosquitto, unique_by_seq  # noqa: F401

from duplex.app import run_conversation
from duplex.events import Muted
from duplex.mqtt.payloads import validate
from duplex.simuser import SimulatedUser, UserVoice, parse_script

pytestmark = [pytest.mark.slow, requires_mosquitto, pytest.mark.timeout(300)]

PREFIX = "test/kitchen"


async def test_engine_session_publishes_valid_turn_events_and_obeys_mute(cfg, models, mosquitto):  # noqa: F811
    run_cfg = dataclasses.replace(cfg, mqtt=mosquitto.config())
    voice, utts = parse_script({"say": [{"text": "Hello. Can you tell me something about the moon?", "at": 0.3}]})
    user = SimulatedUser(utts, UserVoice(voice, models.tts))
    async with Collector(mosquitto.port, f"{PREFIX}/#") as col:

        async def mute_when_the_agent_answers() -> None:
            await col.wait_for(lambda ms: bool(col.on(f"{PREFIX}/event/agent_turn_started")), timeout=120)
            await col.publish(f"{PREFIX}/command", json.dumps({"command": "mute"}))

        muter = asyncio.create_task(mute_when_the_agent_answers())
        result = await run_conversation(run_cfg, models, user)
        await muter
        await col.wait_for(lambda ms: any(m.payload == b"offline" for m in col.on(f"{PREFIX}/availability")))

    assert [e.muted for e in result.events if isinstance(e, Muted)] == [True]  # the engine obeyed
    payloads = unique_by_seq(col.messages)
    for p in payloads:
        validate("payload", p)
    assert [p["seq"] for p in payloads] == list(range(1, len(payloads) + 1))
    kinds = [kind(p) for p in payloads]
    for expected in ("user_turn_started", "user_turn_ended", "end_of_turn", "agent_turn_started",
                     "latency", "agent_turn_ended", "state:muted", "session_ended"):
        assert expected in kinds, kinds
    assert kinds.index("user_turn_ended") < kinds.index("end_of_turn") < kinds.index("agent_turn_started")
    assert kinds[-1] == "session_ended"
    said = next(p for p in payloads if p["type"] == "user_turn_ended")["transcript"]
    assert "moon" in said or "tell me" in said, said
    assert all(p["session"] == "live" for p in payloads)

"""The MQTT bridge against real brokers: mosquitto (subprocess) and the embedded amqtt.

Each test starts its own broker on a free 127.0.0.1 port and stops it at the end.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from mqtt_fixtures import (
    CONVERSATION_TYPES,
    MOSQUITTO,
    Amqtt,
    Collector,
    Mosquitto,
    RecordingControl,
    TCPGate,
    _wait_port,
    broker_config,
    conversation,
    free_port,
    kind,
    requires_mosquitto,
    mosquitto,  # noqa: F401  (fixture)
    tls_files,  # noqa: F401  (fixture)
    unique_by_seq,
)

from duplex.bus import EventBus
from duplex.errors import MQTTError
from duplex.mqtt import MQTTBridge, tail
from duplex.mqtt.payloads import validate

N = len(CONVERSATION_TYPES)
PREFIX = "test/kitchen"
STATE, AVAIL, CMD = f"{PREFIX}/state", f"{PREFIX}/availability", f"{PREFIX}/command"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["mosquitto", "amqtt"])
async def broker(request, tmp_path):
    if request.param == "mosquitto":
        if MOSQUITTO is None:
            pytest.skip("mosquitto binary not found (apt-get install mosquitto); CI installs it")
        b = Mosquitto(tmp_path)
        b.start()
        try:
            yield b
        finally:
            b.stop()
    else:
        b = Amqtt()
        await b.start()
        try:
            yield b
        finally:
            await b.stop()


def n_unique(n: int):
    return lambda messages: len(unique_by_seq(messages)) >= n


def assert_valid(messages) -> None:
    """Every JSON message validates, sits on the topic its type names, and is ours."""
    for m in messages:
        if m.topic in (STATE,) or m.topic.startswith(f"{PREFIX}/event/"):
            data = m.json()
            validate("payload", data)
            expected = STATE if data["type"] == "state" else f"{PREFIX}/event/{data['type']}"
            assert m.topic == expected


def assert_complete_and_in_order(payloads, kinds=CONVERSATION_TYPES) -> None:
    assert [kind(p) for p in payloads] == kinds
    assert [p["seq"] for p in payloads] == list(range(1, len(kinds) + 1)), "gaps or reordering"


async def until(pred, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# --- a whole session ----------------------------------------------------------------------------


async def test_simulated_session_publishes_every_turn_event(broker):
    async with Collector(broker.port, f"{PREFIX}/#") as col:
        bus = EventBus()
        async with MQTTBridge(broker.config(), "session-1", RecordingControl(bus)) as bridge:
            assert bridge.stats.connected
            bus.subscribe(bridge.on_event)
            for ev in conversation():
                bus.publish(ev)
            await col.wait_for(n_unique(N))
            await until(lambda: bridge.stats.queued == 0)
            stats = bridge.stats
        await col.wait_for(lambda ms: ms[-1].topic == AVAIL and ms[-1].payload == b"offline")
    payloads = unique_by_seq(col.messages)
    assert_complete_and_in_order(payloads)
    assert_valid(col.messages)
    assert {p["session"] for p in payloads} == {"session-1"}
    assert [m.payload for m in col.on(AVAIL)] == [b"online", b"offline"]
    assert (stats.sent, stats.dropped, stats.queued, stats.reconnects) == (N, 0, 0, 0)


async def test_discovery_state_and_availability_are_retained(broker):
    bus = EventBus()
    async with MQTTBridge(broker.config(), "session-2") as bridge:
        bus.subscribe(bridge.on_event)
        for ev in conversation():
            bus.publish(ev)
        await until(lambda: bridge.stats.sent == N)
        # A consumer that arrives later (Home Assistant starting up) gets everything it needs.
        async with Collector(broker.port, "homeassistant/#", STATE, AVAIL) as late:
            await late.wait_for(lambda ms: len(ms) >= 9)
            await asyncio.sleep(0.1)
    assert all(m.retain for m in late.messages)
    configs = [m for m in late.messages if m.topic.startswith("homeassistant/")]
    assert len(configs) == len({m.topic for m in configs}) == 7
    for m in configs:
        _, component, node, object_id, _ = m.topic.split("/")
        validate("discovery", m.json(), ref=component)
        assert node == "kitchen"
    assert {m.json()["unique_id"] for m in configs} == {
        f"duplex_kitchen_{o}" for o in
        ("state", "last_user_utterance", "last_agent_utterance", "voice_to_voice_latency", "last_other_voice",
         "speaking", "mute")
    }
    (state,) = late.on(STATE)
    assert (state.json()["state"], state.json()["seq"]) == ("listening", N - 1)
    assert [m.payload for m in late.on(AVAIL)] == [b"online"]
    async with Collector(broker.port, AVAIL) as after:  # clean shutdown said "offline"
        await after.wait_for(lambda ms: len(after.on(AVAIL)) == 1)
        assert after.on(AVAIL)[0].payload == b"offline" and after.on(AVAIL)[0].retain


async def test_commands_reach_the_engine_and_bad_ones_come_back_as_errors(broker):
    bus = EventBus()
    control = RecordingControl(bus)
    # (Not subscribed to the command topic: amqtt would wrongly hand its retained message to
    # every client that connects while this subscription exists, the bridge twice.)
    async with Collector(broker.port, f"{PREFIX}/event/#", STATE) as col:
        # Left over from an earlier session: must not speak when the agent starts.
        await col.publish(CMD, "say stale words", retain=True)
        async with MQTTBridge(broker.config(), "session-3", control) as bridge:
            bus.subscribe(bridge.on_event)
            await col.wait_for(lambda ms: len(col.on(f"{PREFIX}/event/error")) == 1)
            await col.publish(CMD, json.dumps({"command": "mute"}))
            await col.wait_for(lambda ms: any(m.topic == STATE and m.json()["muted"] for m in ms))
            assert control.calls == [("set_muted", True)]
            await col.publish(CMD, 'say "dinner is ready"')
            await col.publish(CMD, "dance")
            await col.publish(CMD, "unmute")
            await col.publish(CMD, "end")
            await until(lambda: bridge.stats.commands == 6)
            await col.wait_for(lambda ms: len(col.on(f"{PREFIX}/event/error")) == 2)
            await col.wait_for(lambda ms: len(col.on(STATE)) == 3)
            stats = bridge.stats
    assert control.calls == [
        ("set_muted", True), ("say", "dinner is ready"), ("set_muted", False), ("end", "ended by MQTT command"),
    ]
    errors = [m.json() for m in col.on(f"{PREFIX}/event/error")]
    assert [e["source"] for e in errors] == ["command", "command"]
    assert "retained commands are ignored" in errors[0]["message"]
    assert "unknown command 'dance'" in errors[1]["message"] and errors[1]["command"] == "dance"
    assert (stats.commands, stats.rejected) == (6, 2)
    states = [m.json() for m in col.on(STATE)]
    assert [(s["state"], s["muted"]) for s in states] == [("listening", False), ("muted", True), ("listening", False)]
    assert_valid(col.messages)


async def test_commands_without_an_engine_are_rejected(broker):
    async with Collector(broker.port, f"{PREFIX}/event/#") as col:
        async with MQTTBridge(broker.config(), "session-4", control=None):
            await col.publish(CMD, "mute")
            await col.wait_for(lambda ms: len(ms) == 1)
    assert "takes no commands" in col.messages[0].json()["message"]


# --- delivery when the broker goes away -----------------------------------------------------------


@requires_mosquitto
async def test_mosquitto_restart_mid_session_loses_nothing(tmp_path):
    broker = Mosquitto(tmp_path, persistence=True)
    broker.start()
    try:
        events = conversation()
        first, middle, last = events[:14], events[14:26], events[26:]
        bus = EventBus()
        # A persistent session, as a consumer that must not miss events would use.
        async with Collector(broker.port, f"{PREFIX}/#", persistent=True) as col:
            async with MQTTBridge(broker.config(), "session-5") as bridge:
                bus.subscribe(bridge.on_event)
                for ev in first:
                    bus.publish(ev)
                await col.wait_for(n_unique(3))
                broker.stop()  # SIGTERM while the rest of `first` is still going out
                for ev in middle:  # the conversation goes on with the broker down
                    bus.publish(ev)
                await until(lambda: not bridge.stats.connected)
                assert bridge.stats.queued > 0
                broker.start()
                for ev in last:
                    bus.publish(ev)
                await col.wait_for(n_unique(N), timeout=20)
                await until(lambda: bridge.stats.queued == 0)
                stats = bridge.stats
    finally:
        broker.stop()
    payloads = unique_by_seq(col.messages)
    assert_complete_and_in_order(payloads)
    assert_valid(col.messages)
    assert stats.reconnects >= 1 and stats.dropped == 0 and stats.sent == N


async def test_amqtt_restart_mid_session_loses_nothing():
    amqtt = Amqtt()
    await amqtt.start()
    try:
        async with TCPGate(amqtt.port) as gate:
            events = conversation()
            first, middle, last = events[:14], events[14:26], events[26:]
            bus = EventBus()
            async with Collector(amqtt.port, f"{PREFIX}/#") as col:
                async with MQTTBridge(amqtt.config(port=gate.port), "session-6") as bridge:
                    bus.subscribe(bridge.on_event)
                    for ev in first:
                        bus.publish(ev)
                    await until(lambda: bridge.stats.queued == 0)
                    sent_before = bridge.stats.sent
                    await col.wait_for(n_unique(sent_before))
                    # amqtt keeps no sessions across a restart, so the test's subscriber must be
                    # back before the bridge is: the gate holds the bridge off until then.
                    await gate.close()
                    await amqtt.stop()
                    for ev in middle:
                        bus.publish(ev)
                    await until(lambda: not bridge.stats.connected)
                    await amqtt.start()
                    await asyncio.wait_for(col.subscribed.wait(), 10)
                    await gate.open()
                    for ev in last:
                        bus.publish(ev)
                    await col.wait_for(n_unique(N), timeout=20)
                    stats = bridge.stats
    finally:
        await amqtt.stop()
    assert_complete_and_in_order(unique_by_seq(col.messages))
    assert_valid(col.messages)
    assert stats.reconnects == 1 and stats.dropped == 0


@requires_mosquitto
async def test_broker_unreachable_at_start_then_everything_arrives(mosquitto):
    async with TCPGate(mosquitto.port) as gate, Collector(mosquitto.port, f"{PREFIX}/#") as col:
        await gate.close()
        bus = EventBus()
        async with MQTTBridge(mosquitto.config(port=gate.port), "session-7") as bridge:
            stats = bridge.stats  # startup did not fail: the agent runs, events queue
            assert not stats.connected and "connection refused" in (stats.last_error or "")
            bus.subscribe(bridge.on_event)
            for ev in conversation():
                bus.publish(ev)
            assert bridge.stats.queued == N
            await gate.open()
            await col.wait_for(n_unique(N))
    assert_complete_and_in_order(unique_by_seq(col.messages))


@requires_mosquitto
async def test_full_outbox_drops_oldest_and_reports_it(mosquitto):
    async with TCPGate(mosquitto.port) as gate, Collector(mosquitto.port, f"{PREFIX}/#") as col:
        await gate.close()
        bus = EventBus()
        async with MQTTBridge(mosquitto.config(port=gate.port, outbox_size=5), "session-8") as bridge:
            bus.subscribe(bridge.on_event)
            for ev in conversation():
                bus.publish(ev)
            assert (bridge.stats.queued, bridge.stats.dropped) == (5, N - 5)
            await gate.open()
            await col.wait_for(n_unique(6))
    payloads = unique_by_seq(col.messages)
    assert_complete_and_in_order(payloads, ["outbox_dropped"] + CONVERSATION_TYPES[-5:])
    assert payloads[0]["count"] == N - 5
    assert_valid(col.messages)


@requires_mosquitto
async def test_last_will_marks_device_offline_when_the_connection_dies(mosquitto):
    async with TCPGate(mosquitto.port) as gate, Collector(mosquitto.port, AVAIL) as col:
        async with MQTTBridge(mosquitto.config(port=gate.port, keepalive_s=5), "session-9") as bridge:
            await col.wait_for(lambda ms: [m.payload for m in ms] == [b"online"])
            await gate.close()
            gate.cut()  # no DISCONNECT packet: the broker publishes the Will
            await col.wait_for(lambda ms: [m.payload for m in ms] == [b"online", b"offline"])
            await gate.open()
            await col.wait_for(lambda ms: [m.payload for m in ms] == [b"online", b"offline", b"online"])
            assert bridge.stats.reconnects == 1


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts open files in /proc/self/fd")
async def test_a_broker_that_never_answers_costs_no_file_descriptors():
    import socket

    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(64)  # TCP handshakes complete, CONNACK never comes
        cfg = broker_config(hole.getsockname()[1], connect_timeout_s=0.2, reconnect_max_s=0.05)
        before = len(os.listdir("/proc/self/fd"))
        async with MQTTBridge(cfg, "session-15") as bridge:  # startup goes on: events queue
            assert not bridge.stats.connected
            await asyncio.sleep(1.5)  # several more attempts
            assert "no answer from MQTT broker" in (bridge.stats.last_error or "")
            during = len(os.listdir("/proc/self/fd"))
    assert during - before <= 2, f"{during - before} descriptors leaked over the retries"


# --- TLS and passwords -----------------------------------------------------------------------------


@requires_mosquitto
async def test_tls_with_ca_client_certificate_and_password(tmp_path, tls_files, monkeypatch, caplog):
    broker = Mosquitto(tmp_path, tls=tls_files, users={"duplex": "correct horse"}, require_certificate=True)
    broker.start()
    try:
        tls = dict(tls=True, ca_file=str(tls_files.ca), cert_file=str(tls_files.client_cert),
                   key_file=str(tls_files.client_key), username="duplex")
        ctx = ssl.create_default_context(cafile=str(tls_files.ca))
        ctx.load_cert_chain(str(tls_files.client_cert), str(tls_files.client_key))
        pw_file = tmp_path / "mqtt-password"
        pw_file.write_text("correct horse\n")
        async with Collector(broker.port, f"{PREFIX}/#", tls=ctx, username="duplex", password="correct horse") as col:
            bus = EventBus()
            async with MQTTBridge(broker.config(password_file=str(pw_file), **tls), "session-10") as bridge:
                bus.subscribe(bridge.on_event)
                for ev in conversation():
                    bus.publish(ev)
                await col.wait_for(n_unique(N))
        assert_complete_and_in_order(unique_by_seq(col.messages))

        caplog.set_level(logging.DEBUG)
        monkeypatch.setenv("DUPLEX_TEST_MQTT_PW", "Tr0ub4dor&3")
        for protocol in ("3.1.1", "5"):
            cfg = broker.config(password_env="DUPLEX_TEST_MQTT_PW", protocol=protocol, **tls)
            with pytest.raises(MQTTError) as err:
                async with MQTTBridge(cfg, "session-11"):
                    pass
            assert "rejected the username or password of user 'duplex'" in str(err.value)
            assert "$DUPLEX_TEST_MQTT_PW" in str(err.value)
        assert "Tr0ub4dor" not in caplog.text and "correct horse" not in caplog.text

        untrusted = broker.config(password_file=str(pw_file), **{**tls, "ca_file": str(tls_files.other_ca)})
        with pytest.raises(MQTTError, match=r"TLS: cannot verify MQTT broker .*\(check mqtt.ca_file"):
            async with MQTTBridge(untrusted, "session-12"):
                pass
    finally:
        broker.stop()


# --- tail and the embedded broker's CLI ---------------------------------------------------------------


async def test_tail_prints_events_as_they_arrive():
    amqtt = Amqtt()
    await amqtt.start()
    try:
        cfg = amqtt.config()
        out = io.StringIO()
        ready = asyncio.Event()
        tailer = asyncio.create_task(tail(cfg, out, count=N + 1, ready=ready.set))
        await asyncio.wait_for(ready.wait(), 10)
        bus = EventBus()
        async with MQTTBridge(cfg, "session-13") as bridge:
            bus.subscribe(bridge.on_event)
            for ev in conversation():
                bus.publish(ev)
            assert await asyncio.wait_for(tailer, 10) == N + 1
        lines = out.getvalue().splitlines()
        assert lines[0] == f"{AVAIL} online"
        assert [line.split()[2] for line in lines[1:]] == [f"#{i}" for i in range(1, N + 1)]
        barge = next(line for line in lines if " barge_in " in line)
        assert 'reaction_ms=420' in barge and 'transcript="wait stop"' in barge
        raw = io.StringIO()
        await asyncio.wait_for(tail(cfg, raw, raw=True, count=2), 10)  # retained: availability, state
        retained = sorted((json.loads(line) for line in raw.getvalue().splitlines()), key=lambda d: d["topic"])
        assert [d["topic"] for d in retained] == [AVAIL, STATE] and all(d["retain"] for d in retained)
        assert retained[1]["payload"]["state"] == "listening"
    finally:
        await amqtt.stop()


async def test_tail_reports_an_unreachable_broker_clearly():
    with pytest.raises(MQTTError, match="cannot reach MQTT broker 127.0.0.1:.*connection refused"):
        await tail(broker_config(free_port()), io.StringIO(), count=1)


async def test_duplex_broker_command_serves_a_bridge_and_refuses_a_taken_port(tmp_path):
    port = free_port()
    cmd = [sys.executable, "-m", "duplex.cli", "broker", "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    # SIGINT back to its default in the child: a shell that runs the suite in the background
    # starts it ignored, and the broker would then not stop on the Ctrl-C sent below.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert await asyncio.to_thread(_wait_port, port, 20), "duplex broker did not start"
        async with Collector(port, f"{PREFIX}/#") as col:
            bus = EventBus()
            # protocol "5" is the default; the embedded broker speaks 3.1.1 and the bridge adapts.
            cfg = broker_config(port, protocol="5", connect_timeout_s=1.0)
            async with MQTTBridge(cfg, "session-14") as bridge:
                bus.subscribe(bridge.on_event)
                for ev in conversation():
                    bus.publish(ev)
                await col.wait_for(n_unique(N))
        assert_complete_and_in_order(unique_by_seq(col.messages))
        second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=30)
        assert second.returncode == 2 and "cannot start the embedded broker" in second.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert f"mqtt://127.0.0.1:{port}" in out

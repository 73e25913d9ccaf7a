"""MQTT pieces that need no broker: event mapping, schemas, commands, outbox, config, discovery."""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import datetime, timezone

import pytest
from mqtt_fixtures import CONVERSATION_TYPES, conversation, kind

from duplex.config import ConfigError, MQTTConfig, load_config, parse_override
from duplex.errors import MQTTError
from duplex.events import (
    AgentState,
    AudioPlayed,
    ASRPartial,
    Levels,
    LLMToken,
    Muted,
    PolicyFrame,
    StageError,
    StateChanged,
    TurnLatency,
    UserSpeechEnded,
    UserSpeechStarted,
    ASRFinal,
)
from duplex.mqtt.connection import Secret, read_password
from duplex.mqtt.discovery import discovery_configs
from duplex.mqtt.outbox import Outbox
from duplex.mqtt.payloads import (
    EVENT_TYPES,
    Command,
    CommandError,
    CommandName,
    EventMapper,
    OutMessage,
    parse_command,
    validate,
)
from duplex.mqtt.topics import Topics

TOPICS = Topics("duplex", "kitchen")
WALL = lambda: datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)  # noqa: E731


def mapped(events, mapper=None):
    mapper = mapper or EventMapper(TOPICS, WALL)
    out = [m for m in map(mapper.map, events) if m is not None]
    return [m.envelope("s-1", "kitchen", i + 1) for i, m in enumerate(out)], out


# --- mapping -------------------------------------------------------------------------------------


def test_conversation_maps_to_every_turn_event_in_order():
    payloads, msgs = mapped(conversation())
    assert [kind(p) for p in payloads] == CONVERSATION_TYPES
    for p, m in zip(payloads, msgs):
        validate("payload", p)
        expected_topic = TOPICS.state if p["type"] == "state" else TOPICS.event(p["type"])
        assert m.topic == expected_topic
        assert m.retain == (p["type"] == "state")
        assert p["ts"] == "2025-01-02T03:04:05.678Z"
    turn_events = {p["type"] for p in payloads} - {"state"}
    assert turn_events == {
        "user_turn_started", "user_turn_ended", "end_of_turn", "agent_turn_started",
        "agent_turn_ended", "barge_in", "backchannel", "latency",
    }


def test_fields_carry_what_consumers_need():
    payloads, _ = mapped(conversation())
    by_type = {}
    for p in payloads:
        by_type.setdefault(p["type"], []).append(p)
    first_user = by_type["user_turn_ended"][0]
    assert first_user["transcript"] == "what's the weather like"
    assert first_user["speech_ms"] == 1200 and first_user["asr_ms"] == 41
    barge = by_type["barge_in"][0]
    assert barge["reaction_ms"] == 420 and barge["turn"] == 2 and barge["onset_t"] == pytest.approx(9.4)
    interrupted = by_type["agent_turn_ended"][1]
    assert interrupted["interrupted"] is True and interrupted["heard"] == "Tomorrow in Paris"
    assert interrupted["generated"].startswith("Tomorrow in Paris expect")
    assert by_type["backchannel"][0]["who"] == "user"
    lat = by_type["latency"][0]
    assert lat["voice_to_voice_ms"] == 1010 and lat["llm_first_token_ms"] == 150
    assert by_type["user_turn_started"][1]["overlap"] is True


def test_high_rate_data_events_are_not_published():
    m = EventMapper(TOPICS, WALL)
    for ev in (Levels(0.1), PolicyFrame(0.1), AudioPlayed(0.1), LLMToken(0.1, text="x"), ASRPartial(0.1, text="a")):
        assert m.map(ev) is None


def test_user_speech_ended_alone_publishes_nothing_but_sets_duration():
    m = EventMapper(TOPICS, WALL)
    assert m.map(UserSpeechEnded(1.0, duration=0.8)) is None
    msg = m.map(ASRFinal(1.0, text="hi", utterance=1))
    assert msg.body["speech_ms"] == 800
    m.map(UserSpeechStarted(2.0))
    assert m.map(ASRFinal(3.0, text="no offset seen")).body["speech_ms"] is None


def test_state_folds_muted_and_is_sent_only_on_change():
    m = EventMapper(TOPICS, WALL)
    states = [m.map(ev) for ev in (
        StateChanged(0, state=AgentState.SPEAKING),
        StateChanged(0.1, state=AgentState.SPEAKING),
        Muted(0.2, muted=True),
        StateChanged(0.3, state=AgentState.LISTENING),  # underlying state changes while muted
        Muted(0.4, muted=True),
        Muted(0.5, muted=False),
        StateChanged(0.6, state=AgentState.MUTED),
    )]
    bodies = [None if s is None else dict(s.body) for s in states]
    assert bodies == [
        {"state": "speaking", "muted": False},
        None,
        {"state": "muted", "muted": True},
        None,
        None,
        {"state": "listening", "muted": False},
        {"state": "muted", "muted": True},
    ]


def test_stage_error_and_latency_nulls():
    m = EventMapper(TOPICS, WALL)
    err = m.map(StageError(1.0, stage="tts", message="voice not found"))
    assert (err.type, err.body["source"], err.body["stage"]) == ("error", "stage", "tts")
    lat = m.map(TurnLatency(2.0, turn=3, end_of_turn=0.5, asr_final=0.02))
    assert lat.body["voice_to_voice_ms"] is None
    for msg in (err, lat):
        validate("payload", msg.envelope("s", "kitchen", 1))


@pytest.mark.parametrize(
    "change",
    [
        lambda p: p.pop("seq"),
        lambda p: p.update(seq=0),
        lambda p: p.update(schema=2),
        lambda p: p.update(type="dance"),
        lambda p: p.update(extra=1),
        lambda p: p.update(ts="yesterday"),
        lambda p: p.update(reaction_ms="fast"),
        lambda p: p.pop("transcript"),
        lambda p: p.update(device="kitchen/2"),
    ],
    ids=["no-seq", "seq-0", "schema-2", "unknown-type", "extra-field", "bad-ts", "ms-string",
         "missing-field", "bad-device"],
)
def test_schema_rejects_malformed_payloads(change):
    payloads, _ = mapped(conversation())
    barge = next(p for p in payloads if p["type"] == "barge_in")
    validate("payload", barge)
    bad = dict(barge)
    change(bad)
    with pytest.raises(ValueError):
        validate("payload", bad)


def test_every_event_type_has_a_schema_definition():
    schema = json.loads(json.dumps(__import__("duplex.mqtt.payloads", fromlist=["x"]).load_schema("payload")))
    assert set(schema["properties"]["type"]["enum"]) == set(EVENT_TYPES) | {"state"}
    assert set(EVENT_TYPES) | {"state"} <= set(schema["$defs"])


# --- commands ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload, expected",
    [
        (b"mute", Command(CommandName.MUTE)),
        (b"  UNMUTE \n", Command(CommandName.UNMUTE)),
        (b"end", Command(CommandName.END)),
        (b"end bedtime", Command(CommandName.END, reason="bedtime")),
        (b'say "dinner is ready"', Command(CommandName.SAY, text="dinner is ready")),
        (b"say hello there", Command(CommandName.SAY, text="hello there")),
        (b'{"command": "mute"}', Command(CommandName.MUTE)),
        (b'{"command": "say", "text": "h\xc3\xa9llo"}', Command(CommandName.SAY, text="héllo")),
        (b'{"command": "end", "reason": "done"}', Command(CommandName.END, reason="done")),
    ],
)
def test_commands_accepted(payload, expected):
    assert parse_command(payload) == expected


@pytest.mark.parametrize(
    "payload, why",
    [
        (b"dance", "unknown command 'dance'"),
        (b"", "empty command"),
        (b"say", "say needs a non-empty text"),
        (b"say   ", "say needs a non-empty text"),
        (b"mute now", "mute takes no argument"),
        (b"\xff\xfe", "not UTF-8"),
        (b"{not json", "not valid JSON"),
        (b'{"command": "dance"}', "'dance' is not one of"),
        (b'{"command": "say"}', "'text' is a required property"),
        (b'{"command": "say", "text": "   "}', "does not match"),
        (b'{"command": "mute", "text": "x"}', "should not be valid"),
        (b'{"command": "mute", "volume": 3}', "Additional properties"),
        (b'["mute"]', "must be an object"),
        (b"say " + b"x" * 5000, "limit is 4096"),
        (('{"command": "say", "text": "' + "y" * 1001 + '"}').encode(), "is too long"),
    ],
)
def test_commands_rejected_with_a_reason(payload, why):
    with pytest.raises(CommandError) as err:
        parse_command(payload)
    assert why in str(err.value)


def test_command_value_object_validates_itself():
    with pytest.raises(CommandError):
        Command(CommandName.SAY)
    with pytest.raises(CommandError):
        Command(CommandName.MUTE, reason="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        Command(CommandName.MUTE).text = "x"  # type: ignore[misc]


# --- outbox ------------------------------------------------------------------------------------------


def msg(i: int, type_: str = "backchannel") -> OutMessage:
    return OutMessage(f"t/{type_}", type_, {"i": i}, float(i), datetime(2025, 1, 1, 0, 0, i, tzinfo=timezone.utc))


def drain(box: Outbox) -> list[OutMessage]:
    out = []
    while (m := box.head()) is not None:
        box.ack(m)
        out.append(m)
    return out


def test_outbox_keeps_order_and_drops_oldest_counting(caplog):
    box = Outbox(3)
    with caplog.at_level(logging.WARNING, logger="duplex.mqtt.outbox"):
        for i in range(1, 8):
            box.put(msg(i))
    assert box.dropped == 4 and len(box) == 3
    assert [m.body["i"] for m in drain(box)] == [5, 6, 7]
    report = box.take_drop_report()
    assert (report.count, report.first_ts, report.last_ts) == (4, msg(1).ts, msg(4).ts)
    assert box.take_drop_report() is None
    assert sum("outbox full" in r.message for r in caplog.records) == 1  # once per episode


def test_outbox_never_drops_the_head_in_flight_or_the_newest_state():
    box = Outbox(3)
    box.put(msg(1))
    head = box.head()  # being sent
    box.put(msg(2, "state"))
    box.put(msg(3))
    box.put(msg(4))  # full: 1 is in flight, 2 is the newest state -> 3 goes
    box.put(msg(5, "state"))  # now 2 is an old state: it may go
    assert head is not None and box.dropped == 2
    assert [m.body["i"] for m in drain(box)] == [1, 4, 5]


def test_outbox_full_of_protected_messages_drops_the_newcomer():
    box = Outbox(1)
    box.put(msg(1, "state"))
    box.put(msg(2))
    assert box.dropped == 1 and [m.body["i"] for m in drain(box)] == [1]


# --- config, credentials, discovery ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"port": 0}, "mqtt.port"),
        ({"device_id": "kitchen/1"}, "mqtt.device_id"),
        ({"device_id": ""}, "mqtt.device_id"),
        ({"prefix": "home/#"}, "mqtt.prefix"),
        ({"prefix": "/home"}, "mqtt.prefix"),
        ({"discovery_prefix": ""}, "mqtt.discovery_prefix"),
        ({"password_env": "X"}, "mqtt.username"),
        ({"username": "u", "password_env": "X", "password_file": "f"}, "mqtt.password_env"),
        ({"ca_file": "ca.pem"}, "mqtt.ca_file"),
        ({"tls": True, "key_file": "k.pem"}, "mqtt.key_file"),
        ({"outbox_size": 0}, "mqtt.outbox_size"),
        ({"reconnect_min_s": 5.0, "reconnect_max_s": 1.0}, "mqtt.reconnect_min_s"),
    ],
)
def test_config_rejects_bad_values_naming_the_key(changes, key):
    with pytest.raises(ConfigError) as err:
        MQTTConfig(**changes)
    assert str(err.value).startswith(key)


def test_config_loads_from_overrides():
    cfg = load_config(None, [parse_override("mqtt.enabled=true"), parse_override("mqtt.device_id=den")]).mqtt
    assert cfg.enabled and cfg.device_id == "den"
    with pytest.raises(ConfigError, match="mqtt.device_id"):
        load_config(None, [parse_override("mqtt.device_id='a b'")])


def test_password_from_env_or_file_never_in_repr(tmp_path, monkeypatch):
    monkeypatch.setenv("DUPLEX_TEST_PW", "s3cret")
    pw = read_password(MQTTConfig(username="u", password_env="DUPLEX_TEST_PW"))
    assert pw == Secret("s3cret") and "s3cret" not in repr(pw)
    f = tmp_path / "pw"
    f.write_text("from-file\nignored\n")
    assert read_password(MQTTConfig(username="u", password_file=str(f))).value == "from-file"
    monkeypatch.delenv("DUPLEX_TEST_PW")
    with pytest.raises(MQTTError, match=r"\$DUPLEX_TEST_PW, which is not set"):
        read_password(MQTTConfig(username="u", password_env="DUPLEX_TEST_PW"))
    with pytest.raises(MQTTError, match="cannot read"):
        read_password(MQTTConfig(username="u", password_file=str(tmp_path / "missing")))
    assert read_password(MQTTConfig()) is None


def test_discovery_configs_are_well_formed_and_wired_to_our_topics():
    topics = Topics("duplex", "kitchen", "homeassistant")
    configs = discovery_configs(topics)
    assert len({c["unique_id"] for _, c in configs}) == len(configs) == 7
    components = {}
    for topic, cfg in configs:
        prefix, component, node, object_id, tail = topic.split("/")
        assert (prefix, node, tail) == ("homeassistant", "kitchen", "config")
        validate("discovery", cfg, ref=component)
        validate("discovery", cfg)
        components[object_id] = (component, cfg)
        assert cfg["availability_topic"] == topics.availability
        assert cfg["device"]["identifiers"] == ["duplex_kitchen"]
    assert components["state"][1]["state_topic"] == topics.state
    assert components["speaking"][0] == "binary_sensor"
    assert components["last_user_utterance"][1]["state_topic"] == topics.event("user_turn_ended")
    assert components["last_agent_utterance"][1]["state_topic"] == topics.event("agent_turn_ended")
    assert components["voice_to_voice_latency"][1]["unit_of_measurement"] == "ms"
    switch_kind, switch = components["mute"]
    assert switch_kind == "switch" and switch["command_topic"] == topics.command
    assert parse_command(switch["payload_on"].encode()) == Command(CommandName.MUTE)
    assert parse_command(switch["payload_off"].encode()) == Command(CommandName.UNMUTE)
    broken = dict(components["mute"][1])
    del broken["command_topic"]
    with pytest.raises(ValueError):
        validate("discovery", broken, ref="switch")

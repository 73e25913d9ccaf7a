"""Home Assistant MQTT discovery: the agent as a device with seven entities.

Configs go to ``<discovery_prefix>/<component>/<device>/<object_id>/config`` (retained),
and are sent again on every connection and whenever Home Assistant announces itself
on ``<discovery_prefix>/status`` (its birth message), so a broker without persistence
or a restarted Home Assistant still finds the device. ``schema/discovery.schema.json``
describes them.

The entities read the topics the bridge publishes anyway: the state sensor, the
"speaking" binary sensor and the mute switch's state read the retained state topic;
the utterance, latency and other-voice sensors read event topics (the last one: whom the
speaker gate last refused the turn to, ``agent`` or ``other_speaker``, the similarities as
attributes: a home display can show "someone else is talking"). The mute switch sends
the JSON commands ``{"command": "mute"}`` / ``{"command": "unmute"}`` to the command topic.
"""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any

from duplex.mqtt.topics import Topics

ONLINE = "online"
OFFLINE = "offline"

# Home Assistant keeps at most 255 characters of state; longer text would be refused.
_TRUNC = "[:255]"


def _version() -> str:
    try:
        return metadata.version("duplex")
    except metadata.PackageNotFoundError:
        return "dev"


def discovery_configs(topics: Topics) -> list[tuple[str, dict[str, Any]]]:
    """``(topic, config)`` for each entity of the device, in a stable order."""
    dev = topics.device
    version = _version()
    common = {
        "availability_topic": topics.availability,
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "qos": 1,
        "device": {
            "identifiers": [f"duplex_{dev}"],
            "name": f"Duplex {dev}",
            "manufacturer": "duplex",
            "model": "Full-duplex voice agent",
            "sw_version": version,
        },
        "origin": {"name": "duplex", "sw_version": version},
    }

    def entity(component: str, object_id: str, name: str, **cfg: Any) -> tuple[str, dict[str, Any]]:
        config = {"name": name, "unique_id": f"duplex_{dev}_{object_id}", **cfg, **common}
        return topics.discovery(component, object_id), config

    user_topic = topics.event("user_turn_ended")
    agent_topic = topics.event("agent_turn_ended")
    other_topic = topics.event("other_speaker")
    return [
        entity(
            "sensor", "state", "State",
            state_topic=topics.state,
            value_template="{{ value_json.state }}",
            device_class="enum",
            options=["listening", "thinking", "speaking", "overlap", "paused", "muted"],
            icon="mdi:account-voice",
        ),
        entity(
            "sensor", "last_user_utterance", "Last user utterance",
            state_topic=user_topic,
            value_template="{{ value_json.transcript" + _TRUNC + " }}",
            json_attributes_topic=user_topic,
            icon="mdi:account-voice",
        ),
        entity(
            "sensor", "last_agent_utterance", "Last agent utterance",
            state_topic=agent_topic,
            value_template="{{ value_json.heard" + _TRUNC + " }}",
            json_attributes_topic=agent_topic,
            icon="mdi:robot-outline",
        ),
        entity(
            "sensor", "voice_to_voice_latency", "Voice-to-voice latency",
            state_topic=topics.event("latency"),
            # '' leaves the last value in place when a turn had no reply (null latency).
            value_template=(
                "{{ value_json.voice_to_voice_ms if value_json.voice_to_voice_ms is not none else '' }}"
            ),
            device_class="duration",
            unit_of_measurement="ms",
            state_class="measurement",
            icon="mdi:timer-outline",
        ),
        entity(
            "sensor", "last_other_voice", "Last other voice",
            state_topic=other_topic,
            value_template="{{ value_json.label }}",
            json_attributes_topic=other_topic,
            icon="mdi:account-multiple",
        ),
        entity(
            "binary_sensor", "speaking", "Speaking",
            state_topic=topics.state,
            value_template="{{ 'ON' if value_json.state == 'speaking' else 'OFF' }}",
            payload_on="ON",
            payload_off="OFF",
            icon="mdi:account-voice",
        ),
        entity(
            "switch", "mute", "Mute",
            command_topic=topics.command,
            state_topic=topics.state,
            value_template="{{ 'ON' if value_json.muted else 'OFF' }}",
            payload_on=json.dumps({"command": "mute"}),
            payload_off=json.dumps({"command": "unmute"}),
            state_on="ON",
            state_off="OFF",
            optimistic=False,
            retain=False,
            icon="mdi:microphone-off",
        ),
    ]

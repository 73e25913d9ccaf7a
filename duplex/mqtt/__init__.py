"""Turn events over MQTT: the bridge, the embedded broker and ``tail``. See docs/mqtt.md."""

from duplex.mqtt.bridge import BridgeStats, MQTTBridge
from duplex.mqtt.broker import EmbeddedBroker, run_broker
from duplex.mqtt.connection import MQTTConnectionError
from duplex.mqtt.payloads import SCHEMA_VERSION, Command, CommandError, parse_command
from duplex.mqtt.tail import tail
from duplex.mqtt.topics import Topics

__all__ = [
    "SCHEMA_VERSION",
    "BridgeStats",
    "Command",
    "CommandError",
    "EmbeddedBroker",
    "MQTTBridge",
    "MQTTConnectionError",
    "Topics",
    "parse_command",
    "run_broker",
    "tail",
]

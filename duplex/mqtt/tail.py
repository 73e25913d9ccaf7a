"""``duplex mqtt tail``: print a device's messages as they arrive.

One line per message::

    12:00:01.234Z kitchen #24 state overlap
    12:00:01.236Z kitchen #25 barge_in turn=2 reaction_ms=420 onset_t=9.4 transcript="wait stop"

or, with ``raw``, one JSON object per line (``{"topic", "retain", "payload"}``) for scripts.
QoS 1 duplicates (a ``seq`` already seen in that session) are skipped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable
from typing import Any, TextIO

import aiomqtt

from duplex.config import MQTTConfig
from duplex.mqtt.bridge import Backoff
from duplex.mqtt.connection import Connector, MQTTConnectionError

log = logging.getLogger(__name__)

_ENVELOPE = ("schema", "type", "session", "device", "seq", "ts", "t")


async def tail(
    cfg: MQTTConfig,
    out: TextIO,
    *,
    device: str | None = None,
    raw: bool = False,
    count: int | None = None,
    ready: Callable[[], None] | None = None,
) -> int:
    """Print the messages of ``device`` (default ``cfg.device_id``; ``+`` for all) to ``out``.

    Runs until cancelled, or until ``count`` messages were printed; returns how many were.
    Raises :class:`~duplex.errors.MQTTError` if the first connection fails; later
    disconnections are retried with backoff.
    """
    conn = Connector(cfg, client_id=f"duplex-tail-{secrets.token_hex(3)}")
    topic_filter = f"{cfg.prefix}/{device or cfg.device_id}/#"
    backoff = Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s)
    last_seq: dict[str, int] = {}
    printed = 0
    connected_once = False
    while True:
        attempt_connected = False
        try:
            async with conn.connect() as client:
                attempt_connected = True
                await client.subscribe(topic_filter, qos=1)
                if not connected_once and ready is not None:
                    ready()
                connected_once = True
                backoff.reset()
                async for message in client.messages:
                    line = _format(message, raw, last_seq)
                    if line is None:
                        continue
                    out.write(line + "\n")
                    out.flush()
                    printed += 1
                    if count is not None and printed >= count:
                        return printed
        except (aiomqtt.MqttError, OSError) as exc:
            err: MQTTConnectionError = conn.explain(exc, connecting=not attempt_connected)
            if not attempt_connected and conn.fall_back(err):
                continue
            if not connected_once:
                raise err from None
            log.warning("%s; reconnecting", err)
        await asyncio.sleep(backoff.next())


def _format(message: aiomqtt.Message, raw: bool, last_seq: dict[str, int]) -> str | None:
    topic = message.topic.value
    payload = message.payload if isinstance(message.payload, (bytes, bytearray)) else str(message.payload).encode()
    try:
        data: Any = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        data = payload.decode("utf-8", "replace")
    if isinstance(data, dict) and isinstance(data.get("seq"), int) and isinstance(data.get("session"), str):
        if data["seq"] <= last_seq.get(data["session"], 0):
            return None  # a QoS 1 duplicate
        last_seq[data["session"]] = data["seq"]
    if raw:
        return json.dumps({"topic": topic, "retain": message.retain, "payload": data}, ensure_ascii=False)
    if not isinstance(data, dict) or "type" not in data:
        return f"{topic} {data}"
    ts = str(data.get("ts", ""))
    when = ts.partition("T")[2] or ts
    if data["type"] == "state":
        fields = str(data.get("state", "?"))
    else:
        fields = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in data.items() if k not in _ENVELOPE)
    retained = " (retained)" if message.retain else ""
    return f"{when} {data.get('device', '?')} #{data.get('seq', '?')} {data['type']}{retained} {fields}".rstrip()

"""The MQTT bridge: turn events out, commands in, and the audio loop never waits.

::

    async with MQTTBridge(cfg.mqtt, session_id, control=engine) as bridge:
        bus.subscribe(bridge.on_event)
        ...

:meth:`MQTTBridge.on_event` is a synchronous bus subscriber: it maps the event and puts
the message in the bounded :class:`~duplex.mqtt.outbox.Outbox` — no I/O, no awaiting.
While the bridge is open, one background task connects (with backoff), announces the
device (availability, Home Assistant discovery), then sends the outbox in order with
QoS 1, one message at a time: a message leaves the outbox only when the broker has
acknowledged it, so a broker restart loses nothing and order is kept; after a reconnect
the unacknowledged head is sent again with the same ``seq``. Commands arriving on the
command topic are validated and passed to the :class:`~duplex.bus.EngineControl`;
rejected ones come back as ``error`` events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass
from typing import Any

import aiomqtt

from duplex.bus import EngineControl
from duplex.clock import Clock
from duplex.config import MQTTConfig
from duplex.errors import MQTTError
from duplex.events import Event
from duplex.mqtt.connection import Connector, MQTTConnectionError
from duplex.mqtt.discovery import OFFLINE, ONLINE, discovery_configs
from duplex.mqtt.outbox import DROP_REPORT, Outbox
from duplex.mqtt.payloads import (
    STATE,
    CommandError,
    CommandName,
    EventMapper,
    OutMessage,
    WallClock,
    parse_command,
    utc_now,
)
from duplex.mqtt.topics import Topics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BridgeStats:
    """A snapshot of what the bridge has done (for the UI and the session log)."""

    sent: int
    """Messages the broker acknowledged (events and state; not discovery or availability)."""
    dropped: int
    """Messages dropped because the outbox was full."""
    queued: int
    """Messages waiting in the outbox."""
    reconnects: int
    """Connections made after the first one."""
    connected: bool
    commands: int = 0
    rejected: int = 0
    """Commands rejected (invalid, retained, or failed)."""
    last_error: str | None = None


class Backoff:
    """Doubling delays from ``lo`` to ``hi``, each shortened by up to a quarter at random
    (so a fleet of agents does not reconnect in lockstep after a broker restart)."""

    def __init__(self, lo: float, hi: float, rng: random.Random | None = None) -> None:
        self.lo, self.hi = lo, hi
        self._rng = rng or random.Random()
        self._n = 0

    def reset(self) -> None:
        self._n = 0

    def next(self) -> float:
        d = min(self.hi, self.lo * 2 ** min(self._n, 30))
        self._n += 1
        return d * self._rng.uniform(0.75, 1.0)


class MQTTBridge:
    """Publishes a session's turn events over MQTT and passes commands to the engine.

    Args:
        cfg: the ``[mqtt]`` section (validated).
        session_id: goes into every payload; consumers key ``seq`` by it.
        control: what commands act on; ``None`` rejects every command with an error event.
        clock: the session clock, for the ``t`` of messages the bridge makes itself
            (command errors); without one they take the time of the latest event.
        wall: the wall clock for ``ts`` (tests inject a fixed one).

    Raises (from ``__aenter__``):
        MQTTError: the password or TLS files cannot be read, or the first connection was
            refused for a reason retrying cannot fix (credentials, certificate). An
            unreachable broker is not an error: events are queued and the bridge keeps trying.
    """

    def __init__(
        self,
        cfg: MQTTConfig,
        session_id: str,
        control: EngineControl | None = None,
        *,
        clock: Clock | None = None,
        wall: WallClock = utc_now,
    ) -> None:
        if not session_id or len(session_id) > 128:
            raise MQTTError(f"session id must be 1-128 characters, got {session_id!r}")
        self.cfg = cfg
        self.session_id = session_id
        self.topics = Topics.from_config(cfg)
        self._control = control
        self._clock = clock
        self._mapper = EventMapper(self.topics, wall)
        self._outbox = Outbox(cfg.outbox_size)
        self._connector: Connector | None = None
        self._task: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None
        self._closing = asyncio.Event()
        self._seq = 0
        self._sending: tuple[OutMessage, bytes] | None = None
        self._last_state: bytes | None = None
        self._rediscover = False
        self._connected = False
        self._sent = 0
        self._reconnects = 0
        self._commands = 0
        self._rejected = 0
        self._last_error: str | None = None
        self._outage_logged = False

    # --- the synchronous side: called on the engine's loop, must not block ------------------

    def on_event(self, ev: Event) -> None:
        """Bus subscriber: map ``ev`` and queue it. O(1), no I/O; call it on the loop's thread."""
        msg = self._mapper.map(ev)
        if msg is not None:
            self._outbox.put(msg)

    @property
    def stats(self) -> BridgeStats:
        return BridgeStats(
            sent=self._sent,
            dropped=self._outbox.dropped,
            queued=len(self._outbox),
            reconnects=self._reconnects,
            connected=self._connected,
            commands=self._commands,
            rejected=self._rejected,
            last_error=self._last_error,
        )

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> MQTTBridge:
        self._connector = Connector(self.cfg)  # reads the password and TLS files: may raise
        # The state topic is retained: replace whatever a previous (maybe crashed) session left.
        self._outbox.put(self._mapper.state_message(self._now()))
        self._first = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name="mqtt-bridge")
        try:
            await asyncio.wait_for(asyncio.shield(self._first), self.cfg.connect_timeout_s + 1.0)
        except TimeoutError:
            self._first.cancel()  # nobody waits any more: later failures are only logged
            log.warning("still connecting to %s; events are queued meanwhile", self._connector.where)
        except MQTTError:
            await self._stop_task()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Flush what is queued (up to ``close_timeout_s``), say ``offline``, disconnect."""
        if self._task is None:
            return
        self._closing.set()
        self._outbox.wake()
        if self._connected:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self.cfg.close_timeout_s)
            except TimeoutError:
                pass
            except MQTTError:
                pass  # logged by _run; stats hold it
        await self._stop_task()
        left = len(self._outbox)
        if left:
            log.warning("MQTT: %d message(s) not delivered at shutdown (broker unreachable)", left)

    async def _stop_task(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        if not task.done():
            task.cancel()
        results = await asyncio.gather(task, return_exceptions=True)
        if isinstance(results[0], Exception) and not isinstance(results[0], MQTTError):
            log.error("MQTT bridge task failed", exc_info=results[0])

    # --- the connection loop ----------------------------------------------------------------

    async def _run(self) -> None:
        assert self._connector is not None and self._first is not None
        conn = self._connector
        backoff = Backoff(self.cfg.reconnect_min_s, self.cfg.reconnect_max_s)
        ever_connected = False
        while not self._closing.is_set():
            attempt_connected = False
            try:
                will = aiomqtt.Will(self.topics.availability, OFFLINE, qos=1, retain=True)
                async with conn.connect(will=will) as client:
                    attempt_connected = self._connected = True
                    if ever_connected:
                        self._reconnects += 1
                        log.info("reconnected to %s; %d message(s) queued", conn.where, len(self._outbox))
                    else:
                        log.info("connected to %s as %s", conn.where, conn.client_id)
                    ever_connected = True
                    self._outage_logged = False
                    self._last_error = None
                    backoff.reset()
                    await self._serve(client, conn)
                    return  # only when closing and drained
            except (aiomqtt.MqttError, OSError) as exc:
                err = conn.explain(exc, connecting=not attempt_connected)
            except Exception as exc:  # a bug here must not end event delivery for the session
                log.exception("unexpected error in the MQTT bridge; reconnecting")
                err = MQTTConnectionError(f"unexpected error in the MQTT bridge: {exc!r}")
            finally:
                self._connected = False
            if not attempt_connected and conn.fall_back(err):
                continue
            self._report(err)
            if err.permanent and not self._first.done():
                self._first.set_exception(err)
                return
            if not self._first.done():
                self._first.set_result(None)
            try:
                await asyncio.wait_for(self._closing.wait(), backoff.next())
            except TimeoutError:
                pass

    def _report(self, err: MQTTConnectionError) -> None:
        # One warning per outage (and per new reason), not one per retry.
        msg = str(err)
        if err.permanent:
            log.error("%s", msg)
        elif not self._outage_logged or msg != self._last_error:
            log.warning("%s; events are queued until it is back", msg)
        else:
            log.debug("%s (retrying)", msg)
        self._outage_logged = True
        self._last_error = msg

    async def _serve(self, client: aiomqtt.Client, conn: Connector) -> None:
        """Send and receive until the connection drops (raises) or the bridge closes (returns)."""
        tasks = [
            asyncio.create_task(self._receive(client), name="mqtt-receive"),
            asyncio.create_task(self._send(client, conn), name="mqtt-send"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]

    async def _send(self, client: aiomqtt.Client, conn: Connector) -> None:
        props = conn.publish_properties()
        await client.publish(self.topics.availability, ONLINE, qos=1, retain=True)
        await client.subscribe(self.topics.command, qos=1)
        if self.cfg.discovery:
            await client.subscribe(self.topics.ha_status, qos=1)
            await self._publish_discovery(client)
        head_is_state = self._sending is not None and self._sending[0].type == STATE
        if self._last_state is not None and not self._outbox.has_state and not head_is_state:
            # A broker without persistence forgot the retained state: send the last one again
            # (same bytes, same seq: consumers see a duplicate they already know how to drop).
            await client.publish(self.topics.state, self._last_state, qos=1, retain=True, properties=props)
        if self._first is not None and not self._first.done():
            self._first.set_result(None)  # announced and listening for commands: __aenter__ may return
        while True:
            if self._rediscover:
                self._rediscover = False
                await self._publish_discovery(client)
            if self._sending is None:
                report = self._outbox.take_drop_report()
                if report is not None:
                    self._outbox.push_front(
                        self._mapper.event(
                            DROP_REPORT, self._now(), count=report.count,
                            first_ts=report.first_ts, last_ts=report.last_ts,
                        )
                    )
                msg = self._outbox.head()
                if msg is None:
                    if self._closing.is_set():
                        break
                    await self._outbox.wait()
                    continue
                self._seq += 1
                self._sending = (msg, msg.encode(self.session_id, self.topics.device, self._seq))
            msg, payload = self._sending
            await client.publish(msg.topic, payload, qos=1, retain=msg.retain, properties=props)
            self._outbox.ack(msg)
            self._sending = None
            self._sent += 1
            if msg.type == STATE:
                self._last_state = payload
        # Closing: a clean disconnect does not fire the Last Will, so say it ourselves.
        await client.publish(self.topics.availability, OFFLINE, qos=1, retain=True)

    async def _publish_discovery(self, client: aiomqtt.Client) -> None:
        for topic, config in discovery_configs(self.topics):
            await client.publish(topic, json.dumps(config, separators=(",", ":")), qos=1, retain=True)

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = message.topic.value
            if topic == self.topics.command:
                self._on_command(message)
            elif topic == self.topics.ha_status and _payload_bytes(message.payload) == b"online":
                self._rediscover = True  # Home Assistant (re)started: announce the device again
                self._outbox.wake()

    # --- commands ------------------------------------------------------------------------------

    def _on_command(self, message: aiomqtt.Message) -> None:
        self._commands += 1
        raw = _payload_bytes(message.payload)
        text = raw.decode("utf-8", "replace")
        if message.retain:
            # A retained "say" would speak at every start: only live commands count.
            self._reject("retained commands are ignored: publish commands without the retain flag", text)
            return
        try:
            cmd = parse_command(raw)
        except CommandError as exc:
            self._reject(str(exc), text)
            return
        if self._control is None:
            self._reject(f"{cmd.name.value}: this agent takes no commands (no engine attached)", text)
            return
        log.info("MQTT command: %s", cmd.name.value)
        try:
            match cmd.name:
                case CommandName.MUTE:
                    self._control.set_muted(True)
                case CommandName.UNMUTE:
                    self._control.set_muted(False)
                case CommandName.SAY:
                    self._control.say(cmd.text)
                case CommandName.END:
                    self._control.end(cmd.reason or "ended by MQTT command")
        except Exception as exc:  # the engine refused: tell the sender, keep the bridge up
            log.exception("MQTT command %s failed", cmd.name.value)
            self._reject(f"{cmd.name.value} failed: {exc}", text)

    def _reject(self, why: str, command: str) -> None:
        self._rejected += 1
        log.warning("MQTT command rejected: %s", why)
        self._outbox.put(self._mapper.error(self._now(), why, source="command", command=command))

    def _now(self) -> float:
        return self._clock.now() if self._clock is not None else self._mapper.last_t


def _payload_bytes(payload: Any) -> bytes:
    if isinstance(payload, (bytes, bytearray)):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()

"""``duplex broker``: an embedded MQTT broker (amqtt) for users who have none.

MQTT 3.1.1, anonymous, bound to 127.0.0.1 by default: fine for one machine, not for a
network (use mosquitto there; docs/mqtt.md shows how). The bridge's default MQTT 5
falls back to 3.1.1 by itself when it meets this broker.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable

from duplex.errors import MQTTError

log = logging.getLogger(__name__)


class EmbeddedBroker:
    """``async with EmbeddedBroker("127.0.0.1", 1883):`` runs amqtt on that address."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        if not 1 <= port <= 65535:
            raise MQTTError(f"broker port must be 1..65535, got {port}")
        self.host = host
        self.port = port
        self._broker: object | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def __aenter__(self) -> EmbeddedBroker:
        from amqtt.broker import Broker
        from amqtt.errors import BrokerError

        _check_free(self.host, self.port)
        if not _is_loopback(self.host):
            log.warning("the embedded broker on %s accepts anyone (no password, no TLS)", self.host)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        broker = Broker(config)
        try:
            await broker.start()
        except BrokerError as exc:
            raise MQTTError(f"cannot start the embedded broker on {self.url}: {exc}") from exc
        self._broker = broker
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        broker, self._broker = self._broker, None
        if broker is None:
            return
        # amqtt's graceful shutdown stops each client's handler, and one waiting on its
        # peer (an unacknowledged QoS 1 message) could hold it forever: about one restart
        # in five in the restart test. Clients lose the connection either way, so drop
        # them first; then the shutdown has nothing to wait for.
        _drop_clients(broker)
        try:
            await asyncio.wait_for(broker.shutdown(), SHUTDOWN_TIMEOUT_S)  # type: ignore[attr-defined]
        except TimeoutError:
            log.warning("the embedded broker did not stop within %.0f s; closing its listeners", SHUTDOWN_TIMEOUT_S)
            for server in getattr(broker, "_servers", {}).values():
                instance = getattr(server, "instance", None)
                if instance is not None:
                    instance.close()


SHUTDOWN_TIMEOUT_S = 5.0


def _drop_clients(broker: object) -> None:
    """Abort every client connection of an amqtt broker (its internals, read defensively)."""
    for _session, handler in list(getattr(broker, "_sessions", {}).values()):
        stream = getattr(getattr(handler, "writer", None), "_writer", None)
        transport = getattr(stream, "transport", None)
        if transport is not None:
            transport.abort()


async def run_broker(
    host: str = "127.0.0.1", port: int = 1883, *, ready: Callable[[EmbeddedBroker], None] | None = None
) -> None:
    """Run the embedded broker until cancelled (Ctrl-C in the CLI)."""
    async with EmbeddedBroker(host, port) as broker:
        log.info("embedded MQTT broker listening on %s", broker.url)
        if ready is not None:
            ready(broker)
        await asyncio.Event().wait()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_free(host: str, port: int) -> None:
    """Fail with a clear message before amqtt logs a traceback for a taken port."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise MQTTError(f"cannot start the embedded broker: unknown host {host!r} ({exc.strerror})") from exc
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            raise MQTTError(
                f"cannot start the embedded broker on {host}:{port}: {exc.strerror} "
                "(another broker running? choose another --port)"
            ) from exc

"""Connecting to the broker: credentials, TLS, and foreign errors translated at the boundary.

Everything aiomqtt, paho and ssl can raise while connecting becomes a
:class:`MQTTConnectionError` whose message says what to fix, and whose ``permanent``
flag tells retrying (broker down, network) from giving up (wrong password, untrusted
certificate): retrying those would only hammer the broker with the same mistake.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import paho.mqtt.client as mqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from duplex.config import MQTTConfig
from duplex.errors import MQTTError

log = logging.getLogger(__name__)

# CONNACK codes: MQTT 3.1.1 return codes and their MQTT 5 reason codes (paho reports 5's).
_UNSUPPORTED_PROTOCOL = {1, 0x84}
_BAD_CLIENT_ID = {2, 0x85}
_BAD_CREDENTIALS = {4, 0x86}
_NOT_AUTHORISED = {5, 0x87}
_PERMANENT = _UNSUPPORTED_PROTOCOL | _BAD_CLIENT_ID | _BAD_CREDENTIALS | _NOT_AUTHORISED | {0x8A, 0x8C}


class _PahoLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """paho logs every dropped connection at ERROR; the bridge already reports those in one
    actionable line, so paho's own messages go to DEBUG (``duplex --debug`` shows them)."""

    def log(self, level: int, msg: object, *args: object, **kwargs: object) -> None:
        super().log(min(level, logging.DEBUG), msg, *args, **kwargs)  # type: ignore[arg-type]


_PAHO_LOG = _PahoLog(logging.getLogger("duplex.mqtt.paho"), {})


class MQTTConnectionError(MQTTError):
    """A connection attempt failed; ``permanent`` when retrying cannot help."""

    def __init__(
        self, message: str, *, permanent: bool = False, unsupported_protocol: bool = False, no_connack: bool = False
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.unsupported_protocol = unsupported_protocol
        self.no_connack = no_connack


@dataclass(frozen=True, slots=True)
class Secret:
    """A password that stays out of reprs, logs and tracebacks."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('***')"


def read_password(cfg: MQTTConfig) -> Secret | None:
    """The password from ``password_env`` or the first line of ``password_file``; ``None`` if neither."""
    if cfg.password_env:
        value = os.environ.get(cfg.password_env)
        if value is None:
            raise MQTTError(f"mqtt.password_env names ${cfg.password_env}, which is not set: export it")
        return Secret(value)
    if cfg.password_file:
        path = Path(cfg.password_file).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise MQTTError(f"mqtt.password_file: cannot read {path}: {exc.strerror}") from exc
        if not lines or not lines[0]:
            raise MQTTError(f"mqtt.password_file: {path} is empty; put the password on its first line")
        return Secret(lines[0])
    return None


def tls_context(cfg: MQTTConfig) -> ssl.SSLContext | None:
    """A verifying client context (CA from ``ca_file`` or the system store, optional client cert)."""
    if not cfg.tls:
        return None
    try:
        ctx = ssl.create_default_context(cafile=cfg.ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise MQTTError(f"mqtt.ca_file: cannot load CA certificates from {cfg.ca_file}: {exc}") from exc
    if cfg.cert_file:
        try:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise MQTTError(
                f"mqtt.cert_file/key_file: cannot load the client certificate {cfg.cert_file}: {exc}"
            ) from exc
    return ctx


class Connector:
    """Makes aiomqtt connections for one configuration and explains why one failed.

    With ``protocol = "5"`` and a broker that only speaks 3.1.1 (amqtt, which is what
    ``duplex broker`` runs), it switches to 3.1.1. Such a broker either answers
    "unsupported protocol version" or, confused by the MQTT 5 packet, does not answer
    at all: after a CONNACK timeout one 3.1.1 attempt follows at once, kept if it works.
    """

    def __init__(self, cfg: MQTTConfig, *, client_id: str = "") -> None:
        self.cfg = cfg
        self.password = read_password(cfg)
        self.tls = tls_context(cfg)
        self.client_id = client_id or cfg.client_id or f"duplex-{cfg.device_id}-{secrets.token_hex(3)}"
        self.protocol = aiomqtt.ProtocolVersion.V5 if cfg.protocol == "5" else aiomqtt.ProtocolVersion.V311
        self._trying_311 = False

    @property
    def where(self) -> str:
        return f"MQTT broker {self.cfg.host}:{self.cfg.port}"

    def client(self, *, will: aiomqtt.Will | None = None) -> aiomqtt.Client:
        """A fresh client (one per attempt: no paho state carried across connections)."""
        v5 = self.protocol is aiomqtt.ProtocolVersion.V5
        return aiomqtt.Client(
            self.cfg.host,
            self.cfg.port,
            username=self.cfg.username or None,
            password=self.password.value if self.password else None,
            identifier=self.client_id,
            protocol=self.protocol,
            will=will,
            # The outbox makes delivery reliable; a broker session would only replay stale commands.
            clean_session=None if v5 else True,
            clean_start=True if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,  # paho refuses it on 3.1.1
            keepalive=self.cfg.keepalive_s,
            timeout=self.cfg.connect_timeout_s,
            tls_context=self.tls,
            logger=_PAHO_LOG,  # type: ignore[arg-type]
        )

    @contextlib.asynccontextmanager
    async def connect(self, *, will: aiomqtt.Will | None = None) -> AsyncIterator[aiomqtt.Client]:
        """``async with connector.connect() as client:`` a connected client, closed on exit."""
        client = self.client(will=will)
        try:
            await client.__aenter__()
        except BaseException:
            # aiomqtt leaves the socket open when CONNACK never comes (or is negative): close
            # it, or every retry leaks a file descriptor. paho's _sock_close also unhooks the
            # socket from the event loop; there is no public way to do this on either side.
            with contextlib.suppress(Exception):
                client._client._sock_close()  # noqa: SLF001
            raise
        self._trying_311 = False  # whatever protocol worked, keep it
        try:
            yield client
        finally:
            await client.__aexit__(None, None, None)

    def publish_properties(self) -> Properties | None:
        if self.protocol is not aiomqtt.ProtocolVersion.V5:
            return None
        props = Properties(PacketTypes.PUBLISH)
        props.PayloadFormatIndicator = 1
        props.ContentType = "application/json"
        return props

    def fall_back(self, err: MQTTConnectionError) -> bool:
        """After a failed connection attempt: ``True`` if the next attempt should follow at once
        with MQTT 3.1.1 (see the class doc); a failed 3.1.1 try after a timeout goes back to 5."""
        v5 = self.protocol is aiomqtt.ProtocolVersion.V5
        if v5 and (err.unsupported_protocol or err.no_connack):
            log.info("%s: %s with MQTT 5; trying MQTT 3.1.1", self.where,
                     "unsupported" if err.unsupported_protocol else "no answer")
            self.protocol = aiomqtt.ProtocolVersion.V311
            self._trying_311 = err.no_connack
            return True
        if self._trying_311:
            self.protocol = aiomqtt.ProtocolVersion.V5
            self._trying_311 = False
        return False

    def explain(self, exc: BaseException, *, connecting: bool = True) -> MQTTConnectionError:
        """Translate a failure from aiomqtt/paho/ssl/socket into a one-line, actionable error.

        ``connecting``: it happened before the broker accepted us (else: a connection was lost).
        """
        cfg, where = self.cfg, self.where
        if isinstance(exc, MQTTConnectionError):
            return exc
        if not connecting:
            return MQTTConnectionError(f"lost the connection to {where}: {_root(exc)}")
        if isinstance(exc, MqttConnectError):
            code = getattr(exc.rc, "value", exc.rc)
            reason = str(exc.rc) if exc.rc is not None else "refused"
            user = f"user {cfg.username!r}" if cfg.username else "an anonymous client"
            source = (
                f"${cfg.password_env}" if cfg.password_env
                else cfg.password_file if cfg.password_file else "none configured"
            )
            if code in _BAD_CREDENTIALS or (code in _NOT_AUTHORISED and cfg.username):
                # mosquitto answers a wrong password with "not authorised" on MQTT 3.1.1.
                msg = (f"{where} rejected the username or password of {user} ({reason.lower()}): "
                       f"check mqtt.username and the password ({source})")
                if code in _NOT_AUTHORISED:
                    msg += ", then the broker's ACL"
            elif code in _NOT_AUTHORISED:
                msg = (f"{where} refused {user} (not authorised): set mqtt.username and a password "
                       "(mqtt.password_env or mqtt.password_file)")
            elif code in _UNSUPPORTED_PROTOCOL:
                msg = f"{where} does not support MQTT {cfg.protocol}: set mqtt.protocol = \"3.1.1\""
            elif code in _BAD_CLIENT_ID:
                msg = f"{where} rejected the client id {self.client_id!r}: set another mqtt.client_id"
            else:
                msg = f"{where} refused the connection: {reason}"
            return MQTTConnectionError(
                msg, permanent=code in _PERMANENT, unsupported_protocol=code in _UNSUPPORTED_PROTOCOL
            )
        cause = _root(exc)
        if isinstance(cause, ssl.SSLCertVerificationError):
            hint = "check mqtt.ca_file" + (" and that the broker's certificate names " + cfg.host)
            return MQTTConnectionError(
                f"TLS: cannot verify {where}: {cause.verify_message or cause.reason} ({hint})", permanent=True
            )
        if isinstance(cause, ssl.SSLError):
            return MQTTConnectionError(
                f"TLS handshake with {where} failed: {cause.reason or cause} "
                "(is that port a TLS listener, and does it want a client certificate?)"
            )
        if isinstance(cause, ConnectionRefusedError):
            return MQTTConnectionError(
                f"cannot reach {where}: connection refused "
                "(is the broker running? `duplex broker` starts one on 127.0.0.1)"
            )
        if isinstance(cause, socket.gaierror):
            return MQTTConnectionError(f"cannot resolve the MQTT host {cfg.host!r}: {cause.strerror}")
        if isinstance(cause, (TimeoutError, socket.timeout)) or "timed out" in str(exc):
            tls = "" if cfg.tls else "; if it is a TLS port, set mqtt.tls = true"
            return MQTTConnectionError(
                f"no answer from {where} within {cfg.connect_timeout_s:g}s{tls}", no_connack=True
            )
        if isinstance(cause, OSError):
            return MQTTConnectionError(f"cannot reach {where}: {cause.strerror or cause}")
        return MQTTConnectionError(f"{where}: {exc}")


def _root(exc: BaseException) -> BaseException:
    """The innermost exception (aiomqtt re-raises socket errors ``from None``; the context keeps them)."""
    seen = {id(exc)}
    while True:
        nxt = exc.__cause__ or exc.__context__
        if nxt is None or id(nxt) in seen:
            return exc
        seen.add(id(nxt))
        exc = nxt

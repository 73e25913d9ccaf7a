"""Real brokers for the MQTT tests: mosquitto (a subprocess) and amqtt (in-process).

Import the fixtures into a test module (``from mqtt_fixtures import *``). Every broker
listens on a free port of 127.0.0.1 and is stopped when its test ends. mosquitto tests
skip, saying why, only when the binary is absent (CI installs it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import getpass
import hashlib
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from duplex.bus import EventBus
from duplex.config import MQTTConfig
from duplex.events import (
    AgentState,
    AgentTurnEnded,
    AgentTurnStarted,
    ASRFinal,
    ASRPartial,
    Backchannel,
    BargeIn,
    EndOfTurn,
    Event,
    Levels,
    LLMToken,
    Muted,
    StateChanged,
    TurnLatency,
    UserSpeechEnded,
    UserSpeechStarted,
)
from duplex.mqtt.broker import EmbeddedBroker

MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None
)
requires_mosquitto = pytest.mark.skipif(
    MOSQUITTO is None, reason="mosquitto binary not found (apt-get install mosquitto); CI installs it"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.01)
    return False


def mosquitto_password_line(user: str, password: str) -> str:
    """A mosquitto password-file line (``$6$``: salted SHA-512), without mosquitto_passwd."""
    salt = secrets.token_bytes(12)
    digest = hashlib.sha512(password.encode() + salt).digest()
    return f"{user}:$6${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


# --- TLS material ------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    """A CA that signed nothing here: trusting it must fail verification."""


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_tls_files(d: Path) -> TLSFiles:
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other_ca"):
        _openssl(
            "req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2",
            "-subj", f"/CN=duplex test {ca}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-addext", "subjectKeyIdentifier=hash",
            cwd=d,
        )
    for name, cn, ext in (
        ("server", "127.0.0.1", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
        ("client", "duplex", "extendedKeyUsage=clientAuth\n"),
    ):
        (d / f"{name}.ext").write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n" + ext
        )
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d,
        )
    return TLSFiles(
        d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key", d / "other_ca.crt"
    )


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not found: cannot make a test CA")
    return make_tls_files(tmp_path_factory.mktemp("tls"))


# --- mosquitto --------------------------------------------------------------------------------


class Mosquitto:
    """mosquitto on 127.0.0.1:<free port>; ``restart()`` keeps the port and (by default) the
    persistence file, as a real broker restart does."""

    def __init__(
        self,
        workdir: Path,
        *,
        tls: TLSFiles | None = None,
        users: dict[str, str] | None = None,
        require_certificate: bool = False,
        persistence: bool = True,
    ) -> None:
        assert MOSQUITTO is not None
        self.dir = workdir
        self.port = free_port()
        self.tls = tls
        self.users = users
        self.proc: subprocess.Popen[bytes] | None = None
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'false' if users else 'true'}",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {workdir}/",
            f"log_dest file {workdir}/mosquitto.log",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "max_queued_messages 100000",
            f"user {getpass.getuser()}",
        ]
        if users:
            pw = workdir / "passwd"
            pw.write_text("".join(mosquitto_password_line(u, p) + "\n" for u, p in users.items()))
            pw.chmod(0o600)
            lines.append(f"password_file {pw}")
        if tls:
            lines += [f"cafile {tls.ca}", f"certfile {tls.server_cert}", f"keyfile {tls.server_key}"]
            lines.append(f"require_certificate {'true' if require_certificate else 'false'}")
        (workdir / "mosquitto.conf").write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.dir / "mosquitto.conf")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        if not _wait_port(self.port):
            self.stop()
            raise RuntimeError(f"mosquitto did not start on port {self.port}: {self.log()[-2000:]}")

    def stop(self) -> None:
        """SIGTERM: mosquitto writes its persistence file and exits (a clean broker stop)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        p = self.dir / "mosquitto.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def config(self, **changes: Any) -> MQTTConfig:
        return broker_config(**{"port": self.port, **changes})


def broker_config(port: int, **changes: Any) -> MQTTConfig:
    """A bridge config tuned for tests: quick reconnects and timeouts, a test-only prefix."""
    base: dict[str, Any] = dict(
        enabled=True, host="127.0.0.1", port=port, prefix="test", device_id="kitchen",
        reconnect_min_s=0.05, reconnect_max_s=0.3, connect_timeout_s=3.0, close_timeout_s=2.0,
    )
    return MQTTConfig(**{**base, **changes})


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto binary not found (apt-get install mosquitto); CI installs it")
    broker = Mosquitto(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


# --- amqtt ---------------------------------------------------------------------------------------


class Amqtt:
    """The embedded broker (amqtt, in this event loop) with stop/start on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self._broker: EmbeddedBroker | None = None

    async def start(self) -> None:
        self._broker = EmbeddedBroker("127.0.0.1", self.port)
        await self._broker.__aenter__()

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.__aexit__(None, None, None)

    def config(self, **changes: Any) -> MQTTConfig:
        # amqtt speaks 3.1.1 only; docs/mqtt.md says to set that for `duplex broker`.
        return broker_config(**{"port": self.port, "protocol": "3.1.1", **changes})


@pytest.fixture
async def amqtt_broker() -> AsyncIterator[Amqtt]:
    broker = Amqtt()
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


class TCPGate:
    """A TCP relay in front of a broker, standing in for the network between bridge and broker.

    ``await close()`` stops listening (new connections are refused, as by a broker that is
    down), ``await open()`` listens again on the same port, ``cut()`` drops the connections
    it carries without a goodbye (a crash or a pulled cable: the broker fires the Last Will).
    Tests use it to decide when a reconnecting bridge gets through.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> TCPGate:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
        self.cut()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def open(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()

    def cut(self) -> None:
        for w in list(self._writers):
            transport = w.transport
            with contextlib.suppress(Exception):
                transport.abort()  # type: ignore[attr-defined]
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            try:
                up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream)
            except OSError:
                return
            self._writers |= {writer, up_w}
            try:
                await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))
            finally:
                up_w.close()
                self._writers -= {writer, up_w}
        finally:
            writer.close()
            self._tasks.discard(task)


async def _pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
    with contextlib.suppress(OSError):
        w.close()


# --- a subscriber that records what arrives -----------------------------------------------------


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float = field(default_factory=time.perf_counter)

    def json(self) -> Any:
        return json.loads(self.payload)


class Collector:
    """An MQTT client that subscribes to ``filters`` and records every message; it reconnects
    (and, with ``persistent``, keeps a broker session so nothing is missed while away)."""

    def __init__(
        self,
        port: int,
        *filters: str,
        persistent: bool = False,
        tls: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.port = port
        self.filters = filters
        self.persistent = persistent
        self.tls = tls
        self.auth = {"username": username, "password": password}
        self.client_id = f"collector-{secrets.token_hex(4)}"
        self.messages: list[Received] = []
        self.subscribed = asyncio.Event()
        self._changed = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.subscribed.wait(), 5)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", self.port, identifier=self.client_id, clean_session=not self.persistent,
                    tls_context=self.tls, timeout=3, **self.auth,
                ) as client:
                    self._client = client
                    for f in self.filters:
                        await client.subscribe(f, qos=1)
                    self.subscribed.set()
                    async for m in client.messages:
                        payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                        self.messages.append(Received(m.topic.value, payload, m.retain))
                        self._changed.set()
            except aiomqtt.MqttError:
                self.subscribed.clear()
                self._client = None
                await asyncio.sleep(0.02)

    async def publish(self, topic: str, payload: str | bytes, *, retain: bool = False) -> None:
        assert self._client is not None, "collector is not connected"
        await self._client.publish(topic, payload, qos=1, retain=retain)

    async def wait_for(self, pred: Callable[[list[Received]], bool], timeout: float = 10.0) -> list[Received]:
        """Wait until ``pred(messages)`` holds; fail with what did arrive if it does not."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not pred(self.messages):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                summary = [(m.topic, m.payload[:80]) for m in self.messages[-20:]]
                raise AssertionError(f"timed out; last of {len(self.messages)} messages: {summary}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return self.messages

    def on(self, topic_prefix: str) -> list[Received]:
        return [m for m in self.messages if m.topic.startswith(topic_prefix)]


def unique_by_seq(messages: list[Received]) -> list[dict[str, Any]]:
    """JSON payloads in arrival order with QoS 1 duplicates (a seq seen before) removed,
    asserting that a duplicate is byte-for-byte the message it repeats."""
    seen: dict[int, bytes] = {}
    out = []
    for m in messages:
        if not m.payload.startswith(b"{"):
            continue
        data = m.json()
        if "seq" not in data:
            continue
        if data["seq"] in seen:
            assert seen[data["seq"]] == m.payload, f"seq {data['seq']} reused for a different message"
            continue
        seen[data["seq"]] = m.payload
        out.append(data)
    return out


# --- a conversation and an engine stand-in ------------------------------------------------------


class RecordingControl:
    """An :class:`~duplex.bus.EngineControl` that records calls and, like the engine, announces
    the result on the bus (mute → ``Muted`` + ``StateChanged``)."""

    def __init__(self, bus: EventBus, now: Callable[[], float] = lambda: 0.0) -> None:
        self.bus = bus
        self.now = now
        self.calls: list[tuple[str, Any]] = []
        self.changed = asyncio.Event()

    def set_muted(self, muted: bool) -> None:
        self.calls.append(("set_muted", muted))
        self.bus.publish(Muted(self.now(), muted=muted))
        self.changed.set()

    def say(self, text: str) -> None:
        self.calls.append(("say", text))
        self.changed.set()

    def end(self, reason: str = "ended by command") -> None:
        self.calls.append(("end", reason))
        self.changed.set()

    def set_policy(self, name: str) -> None:
        self.calls.append(("set_policy", name))
        self.changed.set()


def conversation(t0: float = 0.0) -> list[Event]:
    """A whole conversation as the engine reports it: a question and answer, a second
    question whose answer the user interrupts (barge-in), a user backchannel, latencies,
    and the high-rate data events the bridge must ignore."""
    L, T, S, O = AgentState.LISTENING, AgentState.THINKING, AgentState.SPEAKING, AgentState.OVERLAP
    e: list[Event] = [
        StateChanged(t0 + 0.0, state=L),
        Levels(t0 + 0.02, mic_db=-50.0, out_db=-90.0, vad=0.1),
        UserSpeechStarted(t0 + 0.50, agent_speaking=False),
        ASRPartial(t0 + 0.70, text="what's the", utterance=1),
        UserSpeechEnded(t0 + 1.70, duration=1.2),
        ASRFinal(t0 + 1.70, text="what's the weather like", utterance=1, compute=0.041),
        EndOfTurn(t0 + 2.30, turn=1, delay=0.6, text="what's the weather like"),
        StateChanged(t0 + 2.30, state=T),
        AgentTurnStarted(t0 + 2.30, turn=1, prompt="what's the weather like"),
        LLMToken(t0 + 2.45, turn=1, text="Sunny"),
        StateChanged(t0 + 2.71, state=S),
        TurnLatency(t0 + 2.71, turn=1, end_of_turn=0.6, asr_final=0.041, llm_first_token=0.15,
                    tts_first_audio=0.12, voice_to_voice=1.01),
        UserSpeechStarted(t0 + 3.40, agent_speaking=True),
        StateChanged(t0 + 3.40, state=O),
        UserSpeechEnded(t0 + 3.80, duration=0.4),
        ASRFinal(t0 + 3.80, text="mm-hmm", utterance=2, compute=0.012),
        Backchannel(t0 + 3.80, who="user", text="mm-hmm", onset=t0 + 3.40),
        StateChanged(t0 + 3.80, state=S),
        AgentTurnEnded(t0 + 5.00, turn=1, interrupted=False, generated="Sunny and warm all day.",
                       heard="Sunny and warm all day."),
        StateChanged(t0 + 5.00, state=L),
        UserSpeechStarted(t0 + 6.00, agent_speaking=False),
        UserSpeechEnded(t0 + 7.50, duration=1.5),
        ASRFinal(t0 + 7.50, text="and tomorrow in Paris", utterance=3, compute=0.05),
        EndOfTurn(t0 + 8.00, turn=2, delay=0.5, text="and tomorrow in Paris"),
        StateChanged(t0 + 8.00, state=T),
        AgentTurnStarted(t0 + 8.00, turn=2, prompt="and tomorrow in Paris"),
        StateChanged(t0 + 8.90, state=S),
        TurnLatency(t0 + 8.90, turn=2, end_of_turn=0.5, asr_final=0.05, llm_first_token=0.2,
                    tts_first_audio=0.13, voice_to_voice=1.4),
        UserSpeechStarted(t0 + 9.40, agent_speaking=True),
        StateChanged(t0 + 9.40, state=O),
        BargeIn(t0 + 9.82, turn=2, onset=t0 + 9.40, reaction=0.42, text="wait stop"),
        AgentTurnEnded(t0 + 9.90, turn=2, interrupted=True,
                       generated="Tomorrow in Paris expect light rain in the morning.",
                       heard="Tomorrow in Paris"),
        StateChanged(t0 + 9.90, state=L),
        UserSpeechEnded(t0 + 10.40, duration=1.0),
        ASRFinal(t0 + 10.40, text="wait stop", utterance=4, compute=0.03),
    ]
    return e


# The messages `conversation()` must produce, in order (after the bridge's initial state).
CONVERSATION_TYPES = [
    "state:listening",
    "user_turn_started", "user_turn_ended", "end_of_turn",
    "state:thinking", "agent_turn_started", "state:speaking", "latency",
    "user_turn_started", "state:overlap", "user_turn_ended", "backchannel", "state:speaking",
    "agent_turn_ended", "state:listening",
    "user_turn_started", "user_turn_ended", "end_of_turn",
    "state:thinking", "agent_turn_started", "state:speaking", "latency",
    "user_turn_started", "state:overlap", "barge_in", "agent_turn_ended", "state:listening",
    "user_turn_ended",
]


def kind(payload: dict[str, Any]) -> str:
    return f"state:{payload['state']}" if payload["type"] == "state" else payload["type"]

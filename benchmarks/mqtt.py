"""MQTT benchmark: publish-to-receive latency, and the audio loop with the broker up or away.

    .venv/bin/python benchmarks/mqtt.py [--events 400] [--seconds 4] [--rounds 3]

1. Latency: the bridge publishes ``--events`` turn events (one every 10 ms) through a broker
   on 127.0.0.1 (mosquitto if installed, and the embedded amqtt as ``duplex broker`` runs it,
   both as separate processes) to a subscriber in this process; latency runs from
   ``bridge.on_event()`` to the subscriber's receipt.
2. Audio loop: a stand-in for the engine's loop ticks every frame (32 ms), does a little
   work per frame and publishes turn events through a real EventBus (one per frame, plus a
   burst of ten every second: far above a real conversation's rate). Tick lateness and the
   cost of each ``bus.publish`` are measured without MQTT, with the broker up, refusing
   connections, black-holed (accepts TCP, never answers), and stopped mid-run and restarted;
   the scenarios run in interleaved rounds so background load falls on all of them alike.

Prints a table and writes ``benchmarks/results/mqtt.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402

from duplex.audio import FRAME_MS, FRAME_SAMPLES  # noqa: E402
from duplex.bus import EventBus  # noqa: E402
from duplex.config import MQTTConfig  # noqa: E402
from duplex.events import AgentState, Backchannel, StateChanged  # noqa: E402
from duplex.mqtt import MQTTBridge  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "mqtt.json"
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
FRAME_S = FRAME_MS / 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"no broker on port {port}")


class Broker:
    """A broker in its own process: ``mosquitto`` or ``amqtt`` (``duplex broker``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.kind == "mosquitto":
            conf = self.dir / "mosquitto.conf"
            conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\nlog_dest none\n"
                            f"user {os.environ.get('USER') or 'root'}\n")
            cmd = [str(MOSQUITTO), "-c", str(conf)]
        else:
            cmd = [sys.executable, "-m", "duplex.cli", "broker", "--port", str(self.port)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def cfg(self) -> MQTTConfig:
        return config(self.port, protocol="3.1.1" if self.kind == "amqtt" else "5")


@contextmanager
def running(kind: str) -> Iterator[Broker]:
    b = Broker(kind)
    b.start()
    try:
        yield b
    finally:
        b.stop()
        shutil.rmtree(b.dir, ignore_errors=True)


def config(port: int, **changes: Any) -> MQTTConfig:
    return replace(MQTTConfig(enabled=True, port=port, prefix="bench", device_id="bench"), **changes)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


# --- 1. publish-to-receive latency -----------------------------------------------------------------


async def latency(broker: Broker, n: int) -> dict[str, float]:
    sent: dict[int, float] = {}
    got: dict[int, float] = {}
    done = asyncio.Event()

    async def subscribe(ready: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", broker.port) as c:
            await c.subscribe("bench/bench/event/backchannel", qos=1)
            ready.set()
            async for m in c.messages:
                now = time.perf_counter()
                i = int(json.loads(m.payload)["text"])  # type: ignore[arg-type]
                got.setdefault(i, now)
                if len(got) == n:
                    done.set()

    ready = asyncio.Event()
    sub = asyncio.create_task(subscribe(ready))
    await ready.wait()
    async with MQTTBridge(broker.cfg(), "bench") as bridge:
        for i in range(n):
            sent[i] = time.perf_counter()
            bridge.on_event(Backchannel(i * 0.01, who="agent", text=str(i)))
            await asyncio.sleep(0.01)
        await asyncio.wait_for(done.wait(), 30)
    sub.cancel()
    await asyncio.gather(sub, return_exceptions=True)
    lat = [(got[i] - sent[i]) * 1000 for i in range(n)]
    return {"n": n, "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "p99_ms": pct(lat, 99), "max_ms": max(lat)}


# --- 2. the audio loop -----------------------------------------------------------------------------------


async def audio_loop(seconds: float, bus: EventBus, on_tick: Any = None) -> dict[str, list[float]]:
    """Tick every frame like the engine; returns each tick's lateness (ms) and each publish's cost (µs)."""
    rng = np.random.default_rng(0)
    frame = rng.standard_normal(FRAME_SAMPLES).astype(np.float32)
    late: list[float] = []
    publish_us: list[float] = []
    ticks = int(seconds / FRAME_S)
    loop = asyncio.get_running_loop()
    start = loop.time()
    states = [AgentState.LISTENING, AgentState.SPEAKING]
    for k in range(ticks):
        due = start + k * FRAME_S
        await asyncio.sleep(max(0.0, due - loop.time()))
        late.append((loop.time() - due) * 1000)
        float(np.sqrt(np.mean(frame * frame)))  # a token of per-frame work
        t = k * FRAME_S
        burst = 10 if k % int(1 / FRAME_S) == 0 else 1
        for j in range(burst):
            ev = StateChanged(t, state=states[(k + j) % 2]) if j % 2 else Backchannel(t, who="user", text="mm-hmm")
            t0 = time.perf_counter()
            bus.publish(ev)
            publish_us.append((time.perf_counter() - t0) * 1e6)
        if on_tick is not None:
            on_tick(k, ticks)
    return {"late_ms": late, "publish_us": publish_us}


def summarise(raw: dict[str, list[float]]) -> dict[str, float]:
    late, pub = raw["late_ms"], raw["publish_us"]
    return {
        "ticks": len(late),
        "late_p50_ms": pct(late, 50), "late_p99_ms": pct(late, 99), "late_max_ms": max(late),
        "publish_p50_us": pct(pub, 50), "publish_p99_us": pct(pub, 99), "publish_max_us": max(pub),
        "events": len(pub),
    }


async def scenario(name: str, seconds: float) -> dict[str, Any]:
    bus = EventBus()
    if name == "no MQTT":
        return await audio_loop(seconds, bus)
    blackhole: socket.socket | None = None
    broker: Broker | None = None
    on_tick = None
    pending: list[asyncio.Future[None]] = []
    if name == "broker up":
        broker = Broker("mosquitto" if MOSQUITTO else "amqtt")
        broker.start()
        cfg = broker.cfg()
    elif name == "connection refused":
        cfg = config(free_port())
    elif name == "black-holed":
        blackhole = socket.socket()
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(64)  # completes TCP handshakes, never reads: CONNACK never comes
        cfg = config(blackhole.getsockname()[1])
    elif name == "restarted mid-run":
        broker = Broker("mosquitto" if MOSQUITTO else "amqtt")
        broker.start()
        cfg = broker.cfg()

        def on_tick(k: int, ticks: int) -> None:  # stop at 1/3, start again at 2/3
            # In a thread: Popen/wait would block this loop, and that is not MQTT's doing.
            if k == ticks // 3:
                pending.append(asyncio.get_running_loop().run_in_executor(None, broker.stop))
            elif k == 2 * ticks // 3:
                pending.append(asyncio.get_running_loop().run_in_executor(None, broker.start))
    else:
        raise ValueError(name)
    try:
        async with MQTTBridge(cfg, "bench") as bridge:
            bus.subscribe(bridge.on_event)
            result: dict[str, Any] = dict(await audio_loop(seconds, bus, on_tick))
            await asyncio.gather(*pending)
            if name in ("broker up", "restarted mid-run"):
                deadline = time.monotonic() + 15
                while bridge.stats.queued and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
            result["bridge"] = asdict(bridge.stats)
    finally:
        if broker is not None:
            broker.stop()
        if blackhole is not None:
            blackhole.close()
    return result


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("aiomqtt", "paho-mqtt", "amqtt"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "absent"
    if MOSQUITTO:
        r = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True)
        out["mosquitto"] = (r.stdout or r.stderr).splitlines()[0].removeprefix("mosquitto version ")
    return out


SCENARIOS = ("no MQTT", "broker up", "connection refused", "black-holed", "restarted mid-run")


async def main_async(events: int, seconds: float, rounds: int) -> dict[str, Any]:
    results: dict[str, Any] = {
        "meta": {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs ({platform.platform()})",
            "command": "python benchmarks/mqtt.py " + " ".join(sys.argv[1:]),
            "load_average_before": os.getloadavg(),
            **versions(),
        },
        "latency": {},
        "audio_loop": {},
    }
    for kind in (["mosquitto"] if MOSQUITTO else []) + ["amqtt"]:
        with running(kind) as broker:
            results["latency"][kind] = await latency(broker, events)
    # Rounds interleave the scenarios, so a burst of load from elsewhere on the machine
    # falls on all of them alike rather than on whichever happened to run then.
    raw: dict[str, dict[str, list[float]]] = {}
    bridges: dict[str, list[dict[str, Any]]] = {}
    for _ in range(rounds):
        for name in SCENARIOS:
            r = await scenario(name, seconds)
            acc = raw.setdefault(name, {"late_ms": [], "publish_us": []})
            acc["late_ms"] += r["late_ms"]
            acc["publish_us"] += r["publish_us"]
            if "bridge" in r:
                bridges.setdefault(name, []).append(r["bridge"])
    for name in SCENARIOS:
        results["audio_loop"][name] = summarise(raw[name])
        if name in bridges:
            results["audio_loop"][name]["bridge_per_round"] = bridges[name]
    results["meta"]["load_average_after"] = os.getloadavg()
    return results


def print_table(r: dict[str, Any]) -> None:
    m = r["meta"]
    print(f"# MQTT benchmark — {m['date']} — {m['machine']}")
    print(f"# python {m['python']}, aiomqtt {m['aiomqtt']}, paho-mqtt {m['paho-mqtt']}, amqtt {m['amqtt']}"
          + (f", mosquitto {m['mosquitto']}" if "mosquitto" in m else ""))
    print()
    print("publish-to-receive latency (on_event -> subscriber, QoS 1, 127.0.0.1)")
    print(f"{'broker':<12}{'n':>6}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for kind, x in r["latency"].items():
        print(f"{kind:<12}{x['n']:>6}{x['p50_ms']:>10.2f}{x['p95_ms']:>10.2f}{x['p99_ms']:>10.2f}{x['max_ms']:>10.2f}")
    print()
    print(f"audio loop ({FRAME_MS} ms ticks): lateness of each tick, cost of each bus.publish "
          f"(load average {m['load_average_before'][0]:.1f} before, {m['load_average_after'][0]:.1f} after)")
    print(f"{'scenario':<20}{'ticks':>6}{'late p50':>10}{'late p99':>10}{'late max':>10}"
          f"{'pub p50':>9}{'pub p99':>9}{'pub max':>9}  bridge")
    print(f"{'':<20}{'':>6}{'ms':>10}{'ms':>10}{'ms':>10}{'µs':>9}{'µs':>9}{'µs':>9}")
    for name, x in r["audio_loop"].items():
        rounds = x.get("bridge_per_round", [])
        bridge = (
            f"sent {sum(b['sent'] for b in rounds)}, queued at end {sum(b['queued'] for b in rounds)}, "
            f"dropped {sum(b['dropped'] for b in rounds)}, reconnects {sum(b['reconnects'] for b in rounds)}"
            if rounds else "-"
        )
        print(f"{name:<20}{x['ticks']:>6}{x['late_p50_ms']:>10.2f}{x['late_p99_ms']:>10.2f}{x['late_max_ms']:>10.2f}"
              f"{x['publish_p50_us']:>9.1f}{x['publish_p99_us']:>9.1f}{x['publish_max_us']:>9.1f}  {bridge}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=400, help="events per broker for the latency run")
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each audio-loop scenario run")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the scenarios")
    args = ap.parse_args()
    results = asyncio.run(main_async(args.events, args.seconds, args.rounds))
    print_table(results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

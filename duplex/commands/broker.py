"""``duplex broker``: an embedded MQTT broker (amqtt) on 127.0.0.1, until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio

from duplex.mqtt.broker import EmbeddedBroker, run_broker



def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=1883, help="port to listen on (default 1883)")


def run(args: argparse.Namespace) -> int:
    def ready(b: EmbeddedBroker) -> None:
        print(f"duplex broker: MQTT 3.1.1 on {b.url} (amqtt, anonymous). Ctrl-C stops it.", flush=True)

    try:
        asyncio.run(run_broker(args.host, args.port, ready=ready))
    except KeyboardInterrupt:
        return 0
    return 0

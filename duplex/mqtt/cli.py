"""Command-line entry points: ``duplex broker`` and ``duplex mqtt tail``.

``duplex/cli.py`` adds the arguments with :func:`add_broker_arguments` /
:func:`add_tail_arguments` and calls :func:`broker_main` / :func:`tail_main` with the
parsed namespace (missing attributes take their defaults, so a bare
``argparse.Namespace()`` works too). ``python -m duplex.mqtt`` runs them standalone.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from typing import Any

from duplex.config import load_config, parse_override
from duplex.errors import DuplexError
from duplex.mqtt.broker import EmbeddedBroker, run_broker
from duplex.mqtt.tail import tail


def add_broker_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=1883, help="port to listen on (default 1883)")


def add_tail_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", default=None, help="config profile (name in configs/ or a .toml path)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--host", help="broker host (default: mqtt.host)")
    p.add_argument("--port", type=int, help="broker port (default: mqtt.port)")
    p.add_argument("--prefix", help="topic prefix (default: mqtt.prefix)")
    p.add_argument("--device", help="device id (default: mqtt.device_id; '+' for every device)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--count", type=int, help="exit after this many messages")


def broker_main(args: argparse.Namespace | None = None, **kwargs: Any) -> int:
    """Run the embedded broker until Ctrl-C; 0 on a clean stop, 2 on an error."""
    opts = _opts(args, kwargs)
    host, port = opts.get("host") or "127.0.0.1", opts.get("port") or 1883

    def ready(b: EmbeddedBroker) -> None:
        print(f"duplex broker: MQTT 3.1.1 on {b.url} (amqtt, anonymous). Ctrl-C stops it.", flush=True)

    try:
        asyncio.run(run_broker(host, port, ready=ready))
    except KeyboardInterrupt:
        return 0
    except DuplexError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def tail_main(args: argparse.Namespace | None = None, **kwargs: Any) -> int:
    """Print a device's MQTT messages until Ctrl-C (or ``--count``); 2 on an error."""
    opts = _opts(args, kwargs)
    try:
        cfg = load_config(opts.get("config"), [parse_override(s) for s in opts.get("set") or []]).mqtt
        changes = {k: opts[k] for k in ("host", "port", "prefix") if opts.get(k) is not None}
        if changes:
            cfg = dataclasses.replace(cfg, **changes)
        asyncio.run(
            tail(cfg, sys.stdout, device=opts.get("device"), raw=bool(opts.get("json")), count=opts.get("count"))
        )
    except KeyboardInterrupt:
        return 0
    except DuplexError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _opts(args: argparse.Namespace | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    return {**(vars(args) if args is not None else {}), **kwargs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m duplex.mqtt", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_broker_arguments(sub.add_parser("broker", help="run an embedded MQTT broker"))
    add_tail_arguments(sub.add_parser("tail", help="print a device's turn events"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return broker_main(args) if args.command == "broker" else tail_main(args)

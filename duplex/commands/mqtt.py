"""``duplex mqtt tail``: print a device's MQTT messages as they arrive."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys

from duplex.commands.common import Parser, add_config_arguments, load_cfg
from duplex.errors import ConfigError
from duplex.mqtt.tail import tail



def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="mqtt_command", metavar="COMMAND", parser_class=Parser)
    t = sub.add_parser("tail", help="print a device's events as they arrive", description=__doc__.strip())
    add_config_arguments(t, engine=False)
    t.add_argument("--host", help="broker host (default: mqtt.host)")
    t.add_argument("--port", type=int, help="broker port (default: mqtt.port)")
    t.add_argument("--prefix", help="topic prefix (default: mqtt.prefix)")
    t.add_argument("--device", help="device id (default: mqtt.device_id; '+' for every device)")
    t.add_argument("--json", action="store_true", help="one JSON object per line")
    t.add_argument("--count", type=int, help="exit after this many messages")
    t.set_defaults(func=run_tail)


def run(args: argparse.Namespace) -> int:
    raise ConfigError("give an mqtt command: duplex mqtt tail")


def run_tail(args: argparse.Namespace) -> int:
    """Print a device's MQTT messages until Ctrl-C (or ``--count``)."""
    cfg = load_cfg(args).mqtt
    changes = {k: getattr(args, k) for k in ("host", "port", "prefix") if getattr(args, k) is not None}
    if changes:
        cfg = dataclasses.replace(cfg, **changes)
    try:
        asyncio.run(tail(cfg, sys.stdout, device=args.device, raw=bool(args.json), count=args.count))
    except KeyboardInterrupt:
        return 0
    return 0

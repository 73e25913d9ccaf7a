"""The ``duplex`` command line. Every error a user can cause prints one line and exits 2."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from duplex.errors import ConfigError, DuplexError

EXIT_USAGE = 2
ROOT = Path(__file__).resolve().parent.parent
DEMO_SCRIPT = ROOT / "examples" / "demo.toml"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="profile name in configs/ or a TOML path (default: configs/default.toml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set llm.temperature=0.5 (repeatable)")
    p.add_argument("--policy", choices=["predictor", "rules", "smart-turn"], help="turn-taking policy")
    p.add_argument("--llm-url", help="OpenAI-compatible endpoint (sets llm.backend=openai, llm.url)")


def load_cfg(args: argparse.Namespace) -> Any:
    from duplex.config import load_config, parse_override

    overrides = [parse_override(s) for s in getattr(args, "set", [])]
    if getattr(args, "policy", None):
        overrides.append({"policy": {"name": args.policy}})
    if getattr(args, "llm_url", None):
        overrides.append({"llm": {"backend": "openai", "url": args.llm_url}})
    if getattr(args, "no_record", False):
        overrides.append({"recording": {"enabled": False}})
    return load_config(getattr(args, "config", None), overrides)


def _session_dir(args: argparse.Namespace, cfg: Any, label: str) -> Path | None:
    from duplex.app import new_session_dir

    if getattr(args, "out", None):
        return Path(args.out)
    if not cfg.recording.enabled:
        return None
    return new_session_dir(cfg.recording.dir, label)


def cmd_run(args: argparse.Namespace) -> int:
    from duplex.app import ConsolePrinter, make_source, run_conversation
    from duplex.audio.sink import WavSink
    from duplex.engine import load_models

    cfg = load_cfg(args)
    if not args.input and not args.simulate:
        raise ConfigError("give --input USER.wav or --simulate SCRIPT.toml")
    if args.input:
        make_source(args.input, None, None, False)  # fail fast on a bad file, before loading models
    if args.simulate:
        from duplex.simuser import load_script

        load_script(args.simulate)
    out = _session_dir(args, cfg, "run")
    print(f"duplex: loading models ({cfg.asr.backend}, {cfg.llm.backend}, {cfg.tts.backend}, policy {cfg.policy.name})...",
          file=sys.stderr)
    models = load_models(cfg)
    source = make_source(args.input, args.simulate, models, args.realtime)
    printer = [] if args.quiet else [ConsolePrinter()]
    # With a session, the recorder writes agent.wav into it; --agent-wav is for --no-record.
    sink = WavSink(args.agent_wav) if out is None and args.agent_wav else None
    result = asyncio.run(run_conversation(cfg, models, source, session_dir=out, subscribers=printer, sink=sink))
    _print_summary(result)
    if out is not None:
        print(f"session recorded in {out}/ (mic.wav, agent.wav, events.jsonl, session.json)")
    return 0


def _print_summary(result: Any) -> None:
    from duplex.app import format_latency

    st = result.stats
    print(f"\n{st.turns} agent turns, {st.barge_ins} barge-ins, {st.backchannels} user backchannels, "
          f"{st.agent_backchannels} agent backchannels")
    for lat in st.latencies:
        print(f"  turn {lat.turn}: {format_latency(lat)}")


def cmd_demo(args: argparse.Namespace) -> int:
    args.input = None
    args.simulate = str(DEMO_SCRIPT)
    args.realtime = False
    args.quiet = False
    args.agent_wav = None
    return cmd_run(args)


def cmd_bench(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(ROOT))
    from benchmarks.latency import main as bench_main

    return int(bench_main(args.rest))


def _lazy(module: str, func: str, what: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        import importlib

        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                raise DuplexError(f"'{what}' is not available in this build ({module} missing)") from exc
            raise
        return int(getattr(mod, func)(args))

    return run


def _passthrough(module: str, what: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        import importlib

        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            raise DuplexError(f"'{what}' is not available in this build ({module} missing)") from exc
        return int(mod.main(args.rest))

    return run


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="duplex", description="A full-duplex voice agent for the terminal.")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    r = sub.add_parser("run", help="hold a conversation headless from a WAV or a scripted user")
    r.add_argument("--input", "-i", help="the user's audio (any WAV/FLAC; resampled to 16 kHz mono)")
    r.add_argument("--simulate", "-s", help="a simulated-user script (TOML)")
    r.add_argument("--out", "-o", help="session directory to write (default: sessions/<time>-run)")
    r.add_argument("--no-record", action="store_true", help="do not record a session")
    r.add_argument("--agent-wav", help="with --no-record: write what was played here")
    r.add_argument("--realtime", action="store_true", help="pace the input on the wall clock (live timing)")
    r.add_argument("--quiet", "-q", action="store_true", help="no transcript on stdout")
    _config_args(r)
    r.set_defaults(func=cmd_run)

    d = sub.add_parser("demo", help="the packaged demo: a scripted user talks to the agent, with a barge-in")
    d.add_argument("--out", "-o", help="session directory (default: sessions/<time>-run)")
    d.add_argument("--no-record", action="store_true")
    _config_args(d)
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("talk", help="the terminal UI on the microphone (or --simulate/--input without hardware)")
    t.add_argument("--simulate", "-s", help="a simulated-user script instead of the microphone")
    t.add_argument("--input", "-i", help="a WAV instead of the microphone (paced in real time)")
    t.add_argument("--out", "-o", help="session directory")
    t.add_argument("--no-record", action="store_true")
    _config_args(t)
    t.set_defaults(func=_lazy("tui.cli", "talk_main", "talk"))

    rp = sub.add_parser("replay", help="replay a recorded session through the pipeline (deterministic)")
    rp.add_argument("session", help="a session directory")
    rp.add_argument("--realtime", action="store_true", help="pace on the wall clock")
    rp.add_argument("--compare", action="store_true", help="exit 1 if decisions differ from the recording")
    rp.add_argument("--json", help="write the interruption report here")
    rp.add_argument("--out", "-o", help="record the replay as a new session here")
    rp.add_argument("--tui", action="store_true", help="watch the replay in the terminal UI")
    _config_args(rp)
    rp.set_defaults(func=_lazy("duplex.session.cli", "replay_main", "replay"))

    ts = sub.add_parser("test-scenarios", help="run scripted-user scenarios and check their expectations")
    ts.add_argument("dir", help="a directory of scenario files (or one file)")
    ts.add_argument("--json", help="write results here")
    ts.add_argument("--keep", help="record each scenario's session under this directory")
    ts.add_argument("--only", "-k", action="append", metavar="TEXT",
                    help="run only scenarios whose name contains TEXT (repeatable)")
    _config_args(ts)
    ts.set_defaults(func=_lazy("duplex.session.cli", "scenarios_main", "test-scenarios"))

    ex = sub.add_parser("export-case", help="a session as a stereo WAV + TSV evaluation case")
    ex.add_argument("session")
    ex.add_argument("out", help="output path prefix (writes OUT.wav and OUT.tsv)")
    ex.set_defaults(func=_lazy("duplex.session.cli", "export_main", "export-case"))

    for name, module, what in (
        ("bench", "benchmarks.latency", "the latency benchmark (benchmarks/latency.py)"),
        ("eval-policy", "policies.eval", "evaluate turn policies on stereo WAV + TSV cases"),
        ("train-policy", "policies.train", "train the duplex predictor"),
    ):
        b = sub.add_parser(name, help=what, add_help=False)
        b.add_argument("rest", nargs=argparse.REMAINDER)
        b.set_defaults(func=cmd_bench if name == "bench" else _passthrough(module, name))

    m = sub.add_parser("models", help="list each configured stage, whether its weights are present, and where from")
    _config_args(m)
    m.set_defaults(func=_lazy("duplex.models", "cli_main", "models"))

    br = sub.add_parser("broker", help="start an embedded MQTT broker (amqtt) on 127.0.0.1")
    br.add_argument("--host", default="127.0.0.1")
    br.add_argument("--port", type=int, default=1883)
    br.set_defaults(func=_lazy("duplex.mqtt.cli", "broker_main", "broker"))

    mq = sub.add_parser("mqtt", help="MQTT tools")
    mqs = mq.add_subparsers(dest="mqtt_command", metavar="COMMAND", parser_class=_Parser)
    tail = mqs.add_parser("tail", help="print a device's events as they arrive")
    from duplex.mqtt.cli import add_tail_arguments

    add_tail_arguments(tail)
    tail.set_defaults(func=_lazy("duplex.mqtt.cli", "tail_main", "mqtt tail"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE if args.command is None and argv else 0
    try:
        return int(args.func(args))
    except DuplexError as exc:
        if args.debug:
            raise
        print(f"duplex: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("duplex: interrupted", file=sys.stderr)
        return 130


def json_dump(obj: Any, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=2, sort_keys=True, default=str), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())

"""The ``duplex`` command line: the only code that parses arguments, prints and exits.

One module per subcommand, listed with its one-line help in :data:`COMMANDS`; each has a
docstring (its ``--help`` description), ``add_arguments(parser)`` and ``run(args) -> int``
(the exit status). Everything below this layer raises
:class:`duplex.errors.DuplexError`; :func:`main` prints it as one line on stderr and
exits 2 (``--debug`` shows the traceback instead).

SIGINT and SIGTERM do the same thing and exit :data:`EXIT_INTERRUPTED` (130): during a
conversation both end it cleanly on the event loop (:class:`duplex.app.SignalStop`) and
the session is closed; anywhere else (loading models, a replay) SIGTERM raises
``KeyboardInterrupt`` as Ctrl-C does, and the command says ``duplex: interrupted``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType

from duplex.commands.parser import EXIT_INTERRUPTED, EXIT_USAGE, Parser
from duplex.errors import DuplexError


@dataclass(frozen=True, slots=True)
class CommandInfo:
    """A subcommand: its module under ``duplex.commands`` and its one-line help."""

    module: str
    help: str

    def load(self) -> ModuleType:
        return importlib.import_module(f"duplex.commands.{self.module}")


COMMANDS: dict[str, CommandInfo] = {
    # Modules load only for the command being run (pip's command table does the same):
    # `duplex --help` should not import Textual, scipy or torch.
    "run": CommandInfo("run", "hold a conversation headless from a WAV or a scripted user"),
    "demo": CommandInfo("demo", "the packaged demo: a scripted user talks to the agent, with a barge-in"),
    "talk": CommandInfo("talk", "the terminal UI on the microphone (or --simulate/--input without hardware)"),
    "replay": CommandInfo("replay", "replay a recorded session through the pipeline (deterministic)"),
    "test-scenarios": CommandInfo("scenarios", "run scripted-user scenarios and check their expectations"),
    "export-case": CommandInfo("export_case", "a session as a stereo WAV + TSV evaluation case"),
    "bench": CommandInfo("bench", "the latency benchmark: voice-to-voice and barge-in stop time per policy"),
    "eval-policy": CommandInfo("eval_policy", "evaluate turn policies on stereo WAV + TSV cases"),
    "train-policy": CommandInfo("train_policy", "train the duplex predictor"),
    "models": CommandInfo("models", "list each configured stage, whether its weights are present, and where from"),
    "broker": CommandInfo("broker", "start an embedded MQTT broker (amqtt) on 127.0.0.1"),
    "mqtt": CommandInfo("mqtt", "MQTT tools: tail"),
    "enroll": CommandInfo("enroll", "enrol a voice (WAV or microphone) so that only that user can barge in; "
                                    "--list, --remove NAME"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``duplex`` parser. With ``command``, only that subcommand's module is loaded
    and given its arguments; the others are listed by name and help."""
    p = Parser(prog="duplex", description="A full-duplex voice agent for the terminal.")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, info in COMMANDS.items():
        if command is not None and command != name:
            sub.add_parser(name, help=info.help)
            continue
        mod = info.load()
        sp = sub.add_parser(name, help=info.help, description=(mod.__doc__ or info.help).strip(),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.set_defaults(func=mod.run)
        mod.add_arguments(sp)
    return p


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_sigint() -> Iterator[None]:
    """For the duration of a command, SIGTERM raises ``KeyboardInterrupt`` like SIGINT
    (a conversation replaces both with clean stops on its event loop meanwhile)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def guarded(func: Callable[[argparse.Namespace], int], args: argparse.Namespace, debug: bool = False) -> int:
    """Run one command: a :class:`DuplexError` becomes one line on stderr and exit 2;
    SIGINT or SIGTERM outside a conversation ``duplex: interrupted`` and exit 130."""
    try:
        with sigterm_as_sigint():
            return int(func(args))
    except DuplexError as exc:
        if debug:
            raise
        print(f"duplex: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("duplex: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), "")
    parser = build_parser(command)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE if args.command is None and argv else 0
    return guarded(func, args, args.debug)

"""What every command shares: the parser class, config flags, loading, output helpers.

Only the command layer prints and exits. Below it everything raises
:class:`duplex.errors.DuplexError`; :func:`duplex.commands.main` prints that as one line
on stderr and exits :data:`EXIT_USAGE`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from duplex.app import new_session_dir
from duplex.commands.parser import (
    EXIT_DIFFERENT,
    EXIT_INCOMPLETE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Parser,
)
from duplex.config import Config, load_config, parse_override
from duplex.errors import DuplexError, SessionError
from duplex.session.store import SESSION_FILES, prepare_session_dir
from duplex.stages.factory import Models, load_models
from policies import POLICY_NAMES, make_policy

__all__ = ["EXIT_DIFFERENT", "EXIT_INCOMPLETE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "Parser",
           "add_config_arguments", "add_session_arguments", "load_all_models", "load_cfg", "model_loads", "note",
           "overrides", "session_dir", "session_failure", "write_json"]


def add_config_arguments(p: argparse.ArgumentParser, *, engine: bool = True) -> None:
    """``--config`` and ``--set`` (every command with a profile); ``--policy`` and
    ``--llm-url`` too where a conversation runs (``engine``)."""
    p.add_argument("--config", "-c", help="profile name in configs/ or a TOML path (default: configs/default.toml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set llm.temperature=0.5 (repeatable)")
    if engine:
        p.add_argument("--policy", choices=POLICY_NAMES, help="turn-taking policy")
        p.add_argument("--llm-url", help="OpenAI-compatible endpoint (sets llm.backend=openai, llm.url)")


def overrides(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The config overrides the flags ask for, in the order they apply."""
    out = [parse_override(s) for s in getattr(args, "set", None) or []]
    if getattr(args, "policy", None):
        out.append({"policy": {"name": args.policy}})
    if getattr(args, "llm_url", None):
        out.append({"llm": {"backend": "openai", "url": args.llm_url}})
    if getattr(args, "no_record", False):
        out.append({"recording": {"enabled": False}})
    return out


def load_cfg(args: argparse.Namespace) -> Config:
    """The profile ``--config`` names (or the default) with every override applied."""
    return load_config(getattr(args, "config", None), overrides(args))


def add_session_arguments(p: argparse.ArgumentParser, default: str) -> None:
    """``--out``, ``--force`` and ``--no-record``: where a conversation is recorded."""
    p.add_argument("--out", "-o", help=f"session directory to write (default: {default})")
    p.add_argument("--force", action="store_true",
                   help="with --out: record over a session already in that directory (its files are replaced)")
    p.add_argument("--no-record", action="store_true", help="do not record a session")


_loads = [0]


def model_loads() -> int:
    """How many times this process started loading models through the commands (tests
    use it to check that bad input was refused before any model loaded)."""
    return _loads[0]


def load_all_models(cfg: Config, models: Models | None = None) -> Models:
    """Load the configured stages (announced on stderr: it takes seconds), unless a
    caller (a test) already has them."""
    if models is not None:
        return models
    _loads[0] += 1
    print(f"duplex: loading models ({cfg.asr.backend}, {cfg.llm.backend}, {cfg.tts.backend}, "
          f"policy {cfg.policy.name})...", file=sys.stderr)
    return load_models(cfg, make_policy)


@contextlib.contextmanager
def session_dir(args: argparse.Namespace, cfg: Config, label: str, *, fresh: bool = True) -> Iterator[Path | None]:
    """The directory to record into: ``--out``, or (``fresh``) a new timestamped one
    under ``recording.dir``, or None (``--no-record``).

    Checked and created on entry, before any model loads: a file, a directory that
    already holds a session (unless ``--force``) or a place that cannot be written is a
    :class:`SessionError` (one line, exit 2). A directory created here that is still
    empty when the command is done (it failed or was interrupted before recording) is
    removed again.
    """
    out = getattr(args, "out", None)
    if out:
        path = Path(out)
    elif fresh and cfg.recording.enabled:
        path = new_session_dir(cfg.recording.dir, label)
    else:
        yield None
        return
    force = bool(getattr(args, "force", False))
    if path.is_dir() and not force:
        held = [n for n in SESSION_FILES if (path / n).exists()]
        if held:
            raise SessionError(f"{path} already holds a session ({', '.join(held)}): choose another --out, "
                               "delete it, or pass --force to record over it")
    created = not path.exists()
    prepare_session_dir(path, overwrite=force)
    try:
        yield path
    finally:
        if created:
            with contextlib.suppress(OSError):  # not empty: something was recorded
                path.rmdir()


def session_failure(path: Path) -> str | None:
    """Why the session recorded in ``path`` is incomplete (``session.json`` says
    ``complete: false``), or None when it closed whole."""
    try:
        meta = json.loads((path / "session.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"session.json unreadable ({exc})"
    if not isinstance(meta, dict):
        return "session.json is not a JSON object"
    if meta.get("complete") is True:
        return None
    return str(meta.get("failed") or "the recording did not close")


def note(msg: str) -> None:
    print(f"duplex: note: {msg}", file=sys.stderr)


def write_json(obj: Any, path: str | Path) -> None:
    """Write ``obj`` as indented JSON, creating the directory."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str), encoding="utf-8")
    except OSError as exc:
        raise DuplexError(f"cannot write {p}: {exc.strerror or exc}") from exc

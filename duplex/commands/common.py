"""What every command shares: the parser class, config flags, loading, output helpers.

Only the command layer prints and exits. Below it everything raises
:class:`duplex.errors.DuplexError`; :func:`duplex.commands.main` prints that as one line
on stderr and exits :data:`EXIT_USAGE`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from duplex.app import new_session_dir
from duplex.commands.parser import EXIT_DIFFERENT, EXIT_OK, EXIT_USAGE, Parser
from duplex.config import Config, load_config, parse_override
from duplex.errors import DuplexError
from duplex.stages.factory import Models, load_models
from policies import POLICY_NAMES, make_policy

__all__ = ["EXIT_DIFFERENT", "EXIT_OK", "EXIT_USAGE", "Parser", "add_config_arguments", "load_all_models",
           "load_cfg", "note", "overrides", "session_dir", "write_json"]


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


def load_all_models(cfg: Config, models: Models | None = None) -> Models:
    """Load the configured stages (announced on stderr: it takes seconds), unless a
    caller (a test) already has them."""
    if models is not None:
        return models
    print(f"duplex: loading models ({cfg.asr.backend}, {cfg.llm.backend}, {cfg.tts.backend}, "
          f"policy {cfg.policy.name})...", file=sys.stderr)
    return load_models(cfg, make_policy)


def session_dir(args: argparse.Namespace, cfg: Config, label: str) -> Path | None:
    """``--out``, or a fresh timestamped directory under ``recording.dir``, or None."""
    if getattr(args, "out", None):
        return Path(args.out)
    if not cfg.recording.enabled:
        return None
    return new_session_dir(cfg.recording.dir, label)


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

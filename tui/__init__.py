"""The duplex terminal UI (Textual): ``duplex talk``, and ``duplex replay --tui``.

:class:`~tui.app.DuplexApp` shows a :class:`~tui.session.Session` — a live
conversation (:class:`~tui.session.LiveSession`) or a prepared event stream
(:class:`~tui.session.EventFeed`). :func:`tui.cli.run_tui` is the entry point for other
commands (``duplex talk`` lives in :mod:`duplex.commands.talk`).
"""

from __future__ import annotations

__all__ = ["DuplexApp", "EventFeed", "LiveSession", "SessionInfo", "run_tui"]


def __getattr__(name: str) -> object:
    # Lazy: ``duplex talk`` imports Textual only once the arguments are checked.
    if name == "DuplexApp":
        from tui.app import DuplexApp

        return DuplexApp
    if name in ("EventFeed", "LiveSession", "SessionInfo"):
        import tui.session as s

        return getattr(s, name)
    if name == "run_tui":
        from tui.cli import run_tui

        return run_tui
    raise AttributeError(name)

"""The event log: decisions, state changes and errors, filterable by substring."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Input, RichLog

from tui.view import MAX_LOG, LogLine

SEVERITY_STYLES = {"info": "", "decision": "bold", "warning": "yellow", "error": "bold red"}


def render_log_line(line: LogLine) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(f"{line.t:8.2f}  ", "dim")
    t.append(f"{line.kind:<15} ", SEVERITY_STYLES[line.severity] or "cyan")
    t.append(line.text, SEVERITY_STYLES[line.severity])
    return t


class EventLog(Vertical):
    """A scrollable log. Type in the filter box (``/`` focuses it) to keep only the lines
    containing that text (case-insensitive), e.g. ``barge``, ``error``, ``turn 2``."""

    DEFAULT_CSS = """
    EventLog { border: round $primary-darken-1; height: 12; }
    EventLog > Input { height: 1; border: none; padding: 0 1; background: $boost; }
    EventLog > Input:focus { border: none; background: $primary 20%; }
    EventLog > RichLog { height: 1fr; background: $surface; padding: 0 1; scrollbar-size-vertical: 1; }
    """

    @dataclass
    class FilterChanged(Message):
        """The log now shows ``shown`` of ``total`` lines matching ``filter``."""

        filter: str
        shown: int
        total: int

    filter: reactive[str] = reactive("")

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.border_title = "Events"
        self.input = Input(placeholder="/ filter: barge, error, backchannel, turn 2 …")
        self.log_view = RichLog(max_lines=MAX_LOG, wrap=False, markup=False, auto_scroll=True)
        self.lines: deque[LogLine] = deque(maxlen=MAX_LOG)
        self.shown: list[LogLine] = []
        """The lines the log currently shows (tests read it)."""

    def compose(self) -> ComposeResult:
        yield self.input
        yield self.log_view

    def matches(self, line: LogLine) -> bool:
        return not self.filter or self.filter.lower() in line.plain.lower()

    def append(self, lines: Iterable[LogLine]) -> None:
        for line in lines:
            self.lines.append(line)
            if self.matches(line):
                self.shown.append(line)
                self.log_view.write(render_log_line(line))
        if len(self.shown) > MAX_LOG:
            del self.shown[: len(self.shown) - MAX_LOG]

    def clear(self) -> None:
        self.lines.clear()
        self.shown = []
        self.log_view.clear()

    def watch_filter(self, value: str) -> None:
        self.log_view.clear()
        self.shown = [line for line in self.lines if self.matches(line)]
        for line in self.shown:
            self.log_view.write(render_log_line(line))
        self.border_title = f"Events — filter {value!r}: {len(self.shown)}/{len(self.lines)}" if value else "Events"
        self.post_message(self.FilterChanged(value, len(self.shown), len(self.lines)))

    @on(Input.Changed)
    def _filter_typed(self, event: Input.Changed) -> None:
        event.stop()
        self.filter = event.value.strip()

"""The conversation pane: one line per user utterance and per agent turn."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import HorizontalGroup, VerticalScroll
from textual.message import Message
from textual.widgets import Static

from tui.view import PAUSE_STATUSES, Line

USER = "bold #5fafff"
AGENT = "bold #d787ff"
MARK = "dim italic"
UNHEARD = "strike dim"
CURSOR = "▌"
LABEL_W = 6


def _with_marks(words: list[str], line: Line, word_style: str) -> Text:
    """The words with the inline backchannel marks slotted in at their word positions
    (one span per run of words, not per word: agent lines get long)."""
    out = Text()
    prev = 0
    for m in sorted(line.marks, key=lambda m: m.at):
        at = min(m.at, len(words))
        if at > prev:
            out.append((" " if out else "") + " ".join(words[prev:at]), word_style)
        out.append((" ‹" if out else "‹") + f"{'you' if m.who == 'user' else 'agent'}: {m.text}›", MARK)
        prev = at
    if prev < len(words):
        out.append((" " if out else "") + " ".join(words[prev:]), word_style)
    return out


def render_line(line: Line) -> Text:
    """How one transcript line looks (also what the tests read): a ``LABEL_W`` speaker
    column, then the words."""
    t = Text()
    if line.who == "agent" and line.status in PAUSE_STATUSES:
        icon = {"paused": "⏸", "resumed": "▶", "committed": "⏹"}[line.status]
        t.append(f"{icon:>{LABEL_W - 1}} ", MARK)
        t.append(line.text, "bold yellow" if line.status == "paused" else ("red" if line.status == "committed" else MARK))
        return t
    if line.who == "agent" and line.status == "backchannel":
        t.append(f"{'↳':>{LABEL_W - 1}} ", MARK)
        t.append("agent: ", MARK)
        t.append(line.text, MARK)
        return t
    if line.who == "user":
        t.append("you   ", USER if line.status != "ignored" else "dim")
        live = line.status in ("live", "overlap")
        style = "dim" if line.status == "ignored" else ("italic" if live else "")
        t.append_text(_with_marks(line.text.split(), line, style))
        if live:
            t.append(CURSOR, "dim")
        if line.status == "overlap":
            t.append("  (over the agent)", "dim")
        elif line.status == "barge_in":
            t.append("  ⚡ barge-in", "bold red")
        elif line.status == "ignored":
            t.append("  (ignored)", "dim")
        elif line.status == "backchannel":
            t.stylize(MARK)
        return t
    t.append("agent ", AGENT)
    if line.status == "thinking" and not line.text:
        t.append("thinking…", "dim italic")
        return t
    t.append_text(_with_marks(line.text.split(), line, ""))
    if line.status == "live":
        t.append(CURSOR, "dim")
    if line.unheard:
        t.append(" " if line.text else "")
        t.append(line.unheard, UNHEARD)
    if line.status == "cut":
        t.append("  ✂", "red")
    return t


class TurnLine(HorizontalGroup):
    """One transcript line: the speaker in a fixed column, the words wrapping beside it.

    Redrawn only when its :class:`~tui.view.Line` changed; ``text`` is what it shows.
    """

    DEFAULT_CSS = f"""
    TurnLine {{ height: auto; }}
    TurnLine.-agent {{ margin: 0 0 1 0; }}
    TurnLine > .label {{ width: {LABEL_W}; height: auto; }}
    TurnLine > .body {{ width: 1fr; height: auto; }}
    """

    def __init__(self, line: Line) -> None:
        super().__init__(classes=f"-{line.who}")
        self.key = line.key
        self.version = -1
        self.text = Text()
        self._label = ""
        self.label = Static(classes="label")
        self.body = Static(classes="body")
        self.show(line)

    def compose(self) -> ComposeResult:
        yield self.label
        yield self.body

    def show(self, line: Line) -> bool:
        if line.version == self.version:
            return False
        self.version = line.version
        self.text = render_line(line)
        label, body = self.text[:LABEL_W], self.text[LABEL_W:]
        if label.plain != self._label:
            self._label = label.plain
            self.label.update(label)
        b = self.body
        width = b.content_size.width
        if not b.is_mounted or not width:
            b.update(body)
            return True
        # A growing line mostly keeps its height: lay the screen out again only when the
        # wrapped height changes (a layout per frame was the UI's main cost).
        b.update(body, layout=False)
        if b.get_content_height(b.content_size, b.content_size, width) != b.content_size.height:
            b.refresh(layout=True)
        return True


class ConversationPane(VerticalScroll):
    """The transcript. :meth:`sync` takes a batch of changed lines (one update per line per frame)."""

    DEFAULT_CSS = """
    ConversationPane { border: round $primary-darken-1; padding: 0 1; }
    """

    @dataclass
    class LineShown(Message):
        """A line was (re)drawn: ``text`` is its plain text, ``final`` whether it is settled."""

        key: str
        who: str
        status: str
        text: str
        heard: str
        unheard: str
        final: bool

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.border_title = "Conversation"
        self._lines: dict[str, TurnLine] = {}

    def sync(self, changed: Iterable[Line], removed: Iterable[str]) -> None:
        follow = self.is_vertical_scroll_end or self.max_scroll_y == 0
        for key in removed:
            w = self._lines.pop(key, None)
            if w is not None:
                w.remove()
        new: list[TurnLine] = []
        for line in changed:
            w = self._lines.get(line.key)
            if w is None:
                w = self._lines[line.key] = TurnLine(line)
                new.append(w)
            elif not w.show(line):
                continue
            self.post_message(self.LineShown(line.key, line.who, line.status, w.text.plain, line.text,
                                             line.unheard, line.final))
        if new:
            self.mount_all(new)
        if follow:
            self.scroll_end(animate=False)

    def line(self, key: str) -> TurnLine | None:
        return self._lines.get(key)

    @property
    def lines(self) -> list[TurnLine]:
        return list(self._lines.values())

"""Timing: the per-turn latency breakdown, barge-in reaction, running p50/p95, a v2v chart."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from tui.charts import bars
from tui.view import TIMING_COLUMNS, TimingBook

HEADERS = {"end_of_turn": "EoT", "asr_final": "ASR", "llm_first_token": "LLM 1st", "tts_first_audio": "TTS 1st",
           "voice_to_voice": "V2V", "reaction": "barge"}


def ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f}"


class TimingPane(Vertical):
    """A table in milliseconds: one row per turn (``barge`` is the barge-in reaction time
    when the user cut that turn), then p50 and p95 over the session; below, voice-to-voice
    per turn as bars."""

    DEFAULT_CSS = """
    TimingPane { border: round $primary-darken-1; padding: 0 1; }
    TimingPane > DataTable { height: auto; max-height: 12; background: $surface; }
    TimingPane > Static { height: auto; }
    """

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.border_title = "Timing (ms)"
        self.table: DataTable[str] = DataTable(cursor_type="none", zebra_stripes=True, show_cursor=False)
        self.chart = Static()
        self.rows: list[tuple[str, ...]] = []
        """The rows last shown, as strings (tests read them)."""

    def compose(self) -> ComposeResult:
        yield self.table
        yield self.chart

    def on_mount(self) -> None:
        self.table.add_column(Text("turn", justify="right"), width=4)
        for c in TIMING_COLUMNS:
            self.table.add_column(Text(HEADERS[c], justify="right"), width=max(5, len(HEADERS[c])))
        self.chart.update(Text("voice-to-voice per turn: no turns yet", "dim"))

    def sync(self, book: TimingBook) -> None:
        rows: list[tuple[str, ...]] = []
        for turn in sorted(book.turns):
            r = book.turns[turn]
            rows.append((str(turn), *(ms(getattr(r, c)) for c in TIMING_COLUMNS)))
        if rows:
            for q in (50, 95):
                rows.append((f"p{q}", *(ms(book.stat(c, q)) for c in TIMING_COLUMNS)))
        self.rows = rows
        self.table.clear()
        for row in rows:
            style = "bold" if row[0].startswith("p") else ""
            self.table.add_row(*(Text(c, style=style, justify="right") for c in row), key=row[0])
        v2v = book.column("voice_to_voice")
        if v2v:
            top = max(v2v)
            chart = bars(v2v, height=2, width=max(4, (self.content_size.width or 40) - 12), style="cyan")
            parts = chart.split("\n")
            t = Text(f"V2V per turn, max {top * 1000:.0f} ms\n", "dim")
            t.append(f"{'':12}")
            t.append_text(parts[0])
            t.append("\n")
            t.append(f"{'':12}")
            t.append_text(parts[-1])
            self.chart.update(t)
        else:
            self.chart.update(Text("voice-to-voice per turn: no turns yet", "dim"))

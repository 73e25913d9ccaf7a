"""Live signals: input and output level, VAD probability, the policy's class probabilities."""

from __future__ import annotations

from functools import lru_cache

from rich.segment import Segment
from rich.style import Style
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

from tui.charts import bucket_max, spark_rows
from tui.view import SIGNAL_WINDOW_S, Series, SessionView

LABEL_W = 15
HIDDEN_PROBS = ("continue", "hold")
"""Complements of the others (they sum to one per head): drawing them adds nothing."""
PROB_ORDER = ("barge_in", "backchannel", "end_of_turn", "backchannel_opportunity")


@lru_cache(maxsize=64)
def _style(name: str) -> Style:
    return Style.parse(name) if name else Style()


class SignalsPane(Widget):
    """Sparklines over the last :data:`~tui.view.SIGNAL_WINDOW_S` seconds of session time.

    Each row is two cells high (16 levels); a dashed line marks the decision threshold
    and columns at or above it turn red. Assign ``thresholds`` when the policy changes;
    call :meth:`sync` after a batch of events.

    Drawn with the line API (one :class:`~textual.strip.Strip` per row, built once per
    sync from runs of equal style): this pane redraws many times a second, and going
    through rich Text and Textual Content for ~1000 cells made it the UI's costliest part.
    """

    DEFAULT_CSS = """
    SignalsPane { border: round $primary-darken-1; height: auto; min-height: 8; padding: 0 1; }
    """

    thresholds: reactive[dict[str, float]] = reactive(dict, layout=True)
    vad_threshold: reactive[float] = reactive(0.5)

    def __init__(self, view: SessionView, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.view = view
        self.border_title = f"Signals (last {SIGNAL_WINDOW_S:.0f} s)"
        self.rows_drawn: list[str] = []
        """Names of the rows last drawn (tests read it)."""
        self._n_rows = 0
        self._strips: list[Strip] = []
        self._key: tuple[int, int] | None = None
        self._gen = 0

    def sync(self) -> None:
        """Redraw after a batch; re-lay out only when a probability row appeared."""
        self._gen += 1
        n = len(self._prob_names())
        self.refresh(layout=n != self._n_rows)
        self._n_rows = n

    def _prob_names(self) -> list[str]:
        names = [n for n in self.view.probs if n not in HIDDEN_PROBS]
        names += [n for n in self.thresholds if n not in names and n not in HIDDEN_PROBS]
        return sorted(names, key=lambda n: (PROB_ORDER.index(n) if n in PROB_ORDER else 99, n))

    def get_content_height(self, container: object, viewport: object, width: int) -> int:
        return 2 * (3 + len(self._prob_names()))

    def watch_thresholds(self) -> None:
        self._gen += 1

    def watch_vad_threshold(self) -> None:
        self._gen += 1

    def rows(self, width: int) -> list[list[tuple[str, str]]]:
        """Every text row as (characters, style) runs (tests read the plain text from it)."""
        v = self.view
        out: list[list[tuple[str, str]]] = []
        self.rows_drawn = []

        def row(name: str, unit: str, series: Series | None, lo: float, hi: float, threshold: float | None) -> None:
            cur = series.last if series is not None else None
            value = "  -" if cur is None else (f"{cur:5.0f}{unit}" if unit else f"{cur:5.2f}")
            cols = bucket_max(series.points if series else (), v.now, SIGNAL_WINDOW_S, max(4, width - LABEL_W))
            top, bottom = spark_rows(cols, lo=lo, hi=hi, height=2, threshold=threshold)
            thr = f"thr {threshold:.2f}" if threshold is not None else ""
            out.append([(f"{name[:LABEL_W - 1]:<{LABEL_W}}", "bold"), *top])
            out.append([(f"{value:<7}{thr:>7} "[:LABEL_W], "dim"), *bottom])
            self.rows_drawn.append(name)

        row("mic", " dB", v.signals["mic_db"], -80.0, 0.0, None)
        row("speaker", " dB", v.signals["out_db"], -80.0, 0.0, None)
        row("vad", "", v.signals["vad"], 0.0, 1.0, self.vad_threshold)
        for name in self._prob_names():
            row(name, "", v.probs.get(name), 0.0, 1.0, self.thresholds.get(name, 0.5))
        return out

    def render_line(self, y: int) -> Strip:
        width = self.content_size.width
        if self._key != (self._gen, width):
            base = self.rich_style
            self._strips = [
                Strip([Segment(chars, base + _style(style)) for chars, style in runs]).crop_extend(0, width, base)
                for runs in self.rows(width)
            ]
            self._key = (self._gen, width)
        if y < len(self._strips):
            return self._strips[y]
        return Strip.blank(width, self.rich_style)

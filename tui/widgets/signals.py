"""Live signals: input and output level, VAD probability, the policy's class probabilities."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from tui.charts import bucket_max, spark
from tui.view import SIGNAL_WINDOW_S, Series, SessionView

LABEL_W = 15
HIDDEN_PROBS = ("continue", "hold")
"""Complements of the others (they sum to one per head): drawing them adds nothing."""
PROB_ORDER = ("barge_in", "backchannel", "end_of_turn", "backchannel_opportunity")


class SignalsPane(Widget):
    """Sparklines over the last :data:`~tui.view.SIGNAL_WINDOW_S` seconds of session time.

    Each row is two cells high (16 levels); a dashed line marks the decision threshold
    and columns at or above it turn red. Assign ``thresholds`` when the policy changes;
    call :meth:`refresh` after a batch of events.
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

    def sync(self) -> None:
        """Redraw after a batch; re-lay out only when a probability row appeared."""
        n = len(self._prob_names())
        self.refresh(layout=n != self._n_rows)
        self._n_rows = n

    def _prob_names(self) -> list[str]:
        names = [n for n in self.view.probs if n not in HIDDEN_PROBS]
        names += [n for n in self.thresholds if n not in names and n not in HIDDEN_PROBS]
        return sorted(names, key=lambda n: (PROB_ORDER.index(n) if n in PROB_ORDER else 99, n))

    def get_content_height(self, container: object, viewport: object, width: int) -> int:
        return 2 * (3 + len(self._prob_names()))

    def _row(self, out: Text, name: str, unit: str, series: Series | None, lo: float, hi: float,
             threshold: float | None, width: int) -> None:
        cur = series.last if series is not None else None
        value = "  -" if cur is None else (f"{cur:5.0f}{unit}" if unit else f"{cur:5.2f}")
        chart_w = max(4, width - LABEL_W)
        cols = bucket_max(series.points if series else (), self.view.now, SIGNAL_WINDOW_S, chart_w)
        chart = spark(cols, lo=lo, hi=hi, height=2, threshold=threshold)
        parts = chart.split("\n")
        top, bottom = parts[0], (parts[1] if len(parts) > 1 else Text())
        thr = f"thr {threshold:.2f}" if threshold is not None else ""
        out.append(f"{name[:LABEL_W - 1]:<{LABEL_W}}", "bold")
        out.append_text(top)
        out.append("\n")
        out.append(f"{value:<7}{thr:>7} "[:LABEL_W], "dim")
        out.append_text(bottom)
        out.append("\n")
        self.rows_drawn.append(name)

    def render(self) -> Text:
        w = self.content_size.width or 60
        v = self.view
        out = Text(no_wrap=True, overflow="crop")
        self.rows_drawn = []
        self._row(out, "mic", " dB", v.signals["mic_db"], -80.0, 0.0, None, w)
        self._row(out, "speaker", " dB", v.signals["out_db"], -80.0, 0.0, None, w)
        self._row(out, "vad", "", v.signals["vad"], 0.0, 1.0, self.vad_threshold, w)
        for name in self._prob_names():
            self._row(out, name, "", v.probs.get(name), 0.0, 1.0, self.thresholds.get(name, 0.5), w)
        out.rstrip()
        return out

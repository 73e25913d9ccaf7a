"""Tiny terminal charts: sparklines with a threshold line, and per-turn bars.

Pure functions from numbers to :class:`rich.text.Text`, so they can be tested without
an app. A chart ``height`` rows tall has ``8 * height`` levels (the eighth blocks).
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

BLOCKS = " ▁▂▃▄▅▆▇█"
THRESHOLD_CHAR = "╌"


def bucket_max(points: Sequence[tuple[float, float]], end: float, seconds: float, width: int) -> list[float | None]:
    """``width`` columns over ``(end - seconds, end]``: each the max of its points, or None."""
    cols: list[float | None] = [None] * width
    if width <= 0:
        return cols
    start = end - seconds
    step = seconds / width
    for t, v in points:
        i = int((t - start) / step)
        if i == width:
            i -= 1  # t == end
        if 0 <= i < width:
            cur = cols[i]
            cols[i] = v if cur is None or v > cur else cur
    return cols


def _fill(v: float, lo: float, hi: float, height: int) -> float:
    return max(0.0, min(1.0, (v - lo) / (hi - lo))) * 8 * height


Runs = list[tuple[str, str]]
"""One chart row as (characters, style) runs: one span per run of a style, not per cell."""


def spark_rows(
    cols: Sequence[float | None],
    *,
    lo: float,
    hi: float,
    height: int = 2,
    threshold: float | None = None,
    style: str = "green",
    hot_style: str = "bold red",
    line_style: str = "yellow",
) -> list[Runs]:
    """A ``height``-row sparkline, top row first; columns at or above ``threshold`` use
    ``hot_style`` and the threshold is drawn as a dashed line through the empty cells of its row."""
    thr_row = -1
    if threshold is not None and hi > lo:
        level = _fill(threshold, lo, hi, height)
        thr_row = min(height - 1, int(level // 8))
    rows: list[Runs] = []
    for r in range(height - 1, -1, -1):
        runs: Runs = []
        run: list[str] = []
        run_style = ""
        for v in cols:
            if v is None or (n := int(round(min(8.0, max(0.0, _fill(v, lo, hi, height) - 8 * r))))) == 0:
                ch, st = (THRESHOLD_CHAR, line_style) if r == thr_row else (" ", "")
            else:
                ch, st = BLOCKS[n], (hot_style if threshold is not None and v >= threshold else style)
            if st != run_style and run:
                runs.append(("".join(run), run_style))
                run = []
            run.append(ch)
            run_style = st
        if run:
            runs.append(("".join(run), run_style))
        rows.append(runs)
    return rows


def spark(cols: Sequence[float | None], **kw: object) -> Text:
    """:func:`spark_rows` as one :class:`~rich.text.Text`, rows joined by newlines."""
    out = Text(no_wrap=True, overflow="crop")
    for i, runs in enumerate(spark_rows(cols, **kw)):  # type: ignore[arg-type]
        if i:
            out.append("\n")
        for chars, style in runs:
            out.append(chars, style)
    return out


def bars(values: Sequence[float], *, height: int = 3, width: int = 40, style: str = "cyan",
         top: float | None = None, bar_width: int = 2) -> Text:
    """A bar ``bar_width`` cells wide per value (as many of the latest as fit in ``width``,
    one blank between bars), scaled to ``top`` (default: the max)."""
    per = bar_width + 1
    vals = list(values)[-max(1, width // per):]
    hi = top if top is not None else (max(vals) if vals else 1.0)
    hi = hi if hi > 0 else 1.0
    cols: list[float | None] = []
    for v in vals:
        cols += [v] * bar_width + [None]
    return spark(cols[:-1], lo=0.0, hi=hi, height=height, style=style)

"""Chart geometry for the report, computed server-side: plain numbers and labels that the HTML
template draws as inline SVG (so Jinja's autoescape covers every label; no markup is built here)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..storage.reads import SnapshotRow

LABEL_WIDTH = 190.0
BAR_HEIGHT = 16.0
BAR_GAP = 6.0
VALUE_WIDTH = 60.0
MAX_LABEL = 32
#: Fill colours by segment class, written as SVG attributes (PDF renderers ignore CSS on SVG).
COLOURS = {
    "unapproved": "#c0392b",
    "approved": "#5b8c5a",
    "bar": "#2b4c7e",
    "level-critical": "#7b1e1e",
    "level-high": "#c0392b",
    "level-medium": "#e08e2b",
    "level-low": "#d9c34a",
    "level-none": "#9aa5b4",
}


@dataclass(frozen=True)
class Segment:
    x: float
    width: float
    css: str  # a key of COLOURS: "unapproved", "approved", "bar", "level-high"...
    value: int

    @property
    def colour(self) -> str:
        return COLOURS[self.css]


@dataclass(frozen=True)
class BarRow:
    label: str
    y: float
    segments: tuple[Segment, ...]
    total: int
    end: float  # where the bar ends (its total is written after it)


@dataclass(frozen=True)
class BarChart:
    """Horizontal bars, one row per label, each split into coloured segments."""

    title: str
    width: float
    height: float
    label_width: float
    rows: tuple[BarRow, ...]
    legend: tuple[tuple[str, str], ...]  # (css class, text)


@dataclass(frozen=True)
class Tick:
    at: float  # pixel position along its axis
    label: str


@dataclass(frozen=True)
class LineChart:
    """A daily series on a 0..100 scale."""

    title: str
    width: float
    height: float
    left: float
    top: float
    plot_width: float
    plot_height: float
    points: tuple[tuple[float, float], ...]
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]

    @property
    def polyline(self) -> str:
        return " ".join(f"{x:.1f},{y:.1f}" for x, y in self.points)


def bar_chart(
    title: str,
    rows: Sequence[tuple[str, Sequence[tuple[str, int]]]],
    legend: Sequence[tuple[str, str]] = (),
    width: float = 640.0,
) -> BarChart:
    """`rows`: (label, [(css class, value), ...]); bars scale to the largest row total."""
    longest = max((sum(v for _, v in parts) for _, parts in rows), default=0) or 1
    span = width - LABEL_WIDTH - VALUE_WIDTH
    out = []
    for i, (label, parts) in enumerate(rows):
        x, segments = LABEL_WIDTH, []
        for css, value in parts:
            w = span * value / longest
            if value > 0:
                segments.append(Segment(round(x, 1), round(max(w, 1.0), 1), css, value))
            x += w
        short = label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "…"
        out.append(
            BarRow(short, i * (BAR_HEIGHT + BAR_GAP), tuple(segments), sum(v for _, v in parts), round(x, 1))
        )
    height = max(len(out), 1) * (BAR_HEIGHT + BAR_GAP)
    return BarChart(title, width, height, LABEL_WIDTH, tuple(out), tuple(legend))


def trend_chart(
    title: str, rows: Sequence[SnapshotRow], width: float = 640.0, height: float = 200.0
) -> LineChart:
    """The fleet's daily score (0..100), oldest day left; one point per kept snapshot."""
    left, top, right, bottom = 40.0, 10.0, 10.0, 30.0
    pw, ph = width - left - right, height - top - bottom
    n = len(rows)
    step = pw / (n - 1) if n > 1 else 0.0
    points = tuple(
        (
            round(left + (i * step if n > 1 else pw / 2), 1),
            round(top + ph * (1 - min(r.score, 100.0) / 100.0), 1),
        )
        for i, r in enumerate(rows)
    )
    every = max(1, (n + 5) // 6)  # at most about six dates along the axis
    x_ticks = tuple(Tick(points[i][0], rows[i].day) for i in range(0, n, every))
    y_ticks = tuple(Tick(round(top + ph * (1 - v / 100.0), 1), str(v)) for v in (0, 25, 50, 75, 100))
    return LineChart(title, width, height, left, top, pw, ph, points, x_ticks, y_ticks)

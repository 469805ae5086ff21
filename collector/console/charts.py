"""Charts as inline SVG, drawn on the server: no script, no CDN. Labels are escaped; colours are
presentation attributes (allowed by the console's Content-Security-Policy, unlike style=)."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

LEVEL_COLOURS = {
    "critical": "#7f1d1d",
    "high": "#dc2626",
    "medium": "#f59e0b",
    "low": "#3b82f6",
    "none": "#9ca3af",
}
BAR = "#4f46e5"


def _num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.1f}"


def bars(
    items: Sequence[tuple[str, float]],
    *,
    colours: dict[str, str] | None = None,
    width: int = 420,
    title: str = "",
) -> Markup:
    """Horizontal bars, one per (label, value), longest value full width."""
    row, label_w = 22, 150
    height = max(1, len(items)) * row + 4
    top = max((v for _, v in items), default=0.0) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
    ]
    if title:
        parts.append(f"<title>{escape(title)}</title>")
    if not items:
        parts.append('<text x="4" y="16" fill="#6b7280" font-size="12">nothing yet</text>')
    for i, (label, value) in enumerate(items):
        y = i * row + 2
        w = int((width - label_w - 60) * value / top)
        colour = (colours or {}).get(label, BAR)
        short = label if len(label) <= 22 else label[:21] + "…"
        parts.append(
            f'<text x="0" y="{y + 15}" font-size="12" fill="#111827">{escape(short)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{max(w, 1)}" height="{row - 8}" fill="{colour}" rx="2">'
            f"<title>{escape(label)}: {escape(_num(value))}</title></rect>"
            f'<text x="{label_w + max(w, 1) + 6}" y="{y + 15}" font-size="12" fill="#374151">'
            f"{escape(_num(value))}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def line(points: Sequence[tuple[str, float]], *, width: int = 420, height: int = 140, top: float = 100.0,
         title: str = "") -> Markup:  # fmt: skip
    """A line over (label, value) points, oldest first, on a 0..`top` scale (risk is 0..100)."""
    pad_l, pad_b, pad_t = 30, 20, 8
    inner_w, inner_h = width - pad_l - 8, height - pad_b - pad_t
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
    ]
    if title:
        parts.append(f"<title>{escape(title)}</title>")
    for tick in (0, top / 2, top):
        y = pad_t + inner_h - inner_h * tick / top
        parts.append(
            f'<line x1="{pad_l}" y1="{y:.1f}" x2="{width - 8}" y2="{y:.1f}" stroke="#e5e7eb"/>'
            f'<text x="0" y="{y + 4:.1f}" font-size="10" fill="#6b7280">{_num(tick)}</text>'
        )
    if not points:
        parts.append(
            f'<text x="{pad_l + 6}" y="{pad_t + 20}" font-size="12" fill="#6b7280">no snapshots yet</text>'
        )
    step = inner_w / max(1, len(points) - 1)
    coords = [
        (
            pad_l + (i * step if len(points) > 1 else inner_w / 2),
            pad_t + inner_h - inner_h * min(v, top) / top,
        )
        for i, (_, v) in enumerate(points)
    ]
    if len(coords) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{BAR}" stroke-width="2"/>')
    for (x, y), (label, value) in zip(coords, points, strict=True):
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{BAR}"><title>{escape(label)}: '
            f"{escape(_num(value))}</title></circle>"
        )
    if points:
        parts.append(
            f'<text x="{pad_l}" y="{height - 4}" font-size="10" fill="#6b7280">{escape(points[0][0])}</text>'
            f'<text x="{width - 8}" y="{height - 4}" font-size="10" fill="#6b7280" text-anchor="end">'
            f"{escape(points[-1][0])}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))

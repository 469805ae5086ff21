"""The fleet compliance report: `build_report` computes it through the read side (collector.query),
`render` lays it out as HTML, PDF, CSV or JSON. Used by `umbra-collector report` and the console's
download button.

model (the typed report and build_report), controls (the control mapping, controls.toml), charts
(SVG geometry), html (Jinja2 template), pdf (WeasyPrint), tabular (CSV long format and JSON).
"""

from __future__ import annotations

from .controls import Clause, ControlItem, ControlsError, load_controls
from .model import Report, build_report

FORMATS = ("html", "pdf", "csv", "json")
MEDIA_TYPES = {
    "html": "text/html; charset=utf-8",
    "pdf": "application/pdf",
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
}


def render(report: Report, fmt: str) -> bytes:
    """The report as bytes in `fmt` (one of FORMATS); ValueError for any other."""
    if fmt == "html":
        from .html import to_html

        return to_html(report).encode("utf-8")
    if fmt == "pdf":
        # WeasyPrint (and its pango libraries) load only when a PDF is asked for.
        from .html import to_html
        from .pdf import html_to_pdf

        return html_to_pdf(to_html(report))
    if fmt == "csv":
        from .tabular import to_csv

        return to_csv(report)
    if fmt == "json":
        from .tabular import to_json

        return to_json(report)
    raise ValueError(f"unknown report format {fmt!r} (one of {', '.join(FORMATS)})")


__all__ = [
    "FORMATS",
    "MEDIA_TYPES",
    "Clause",
    "ControlItem",
    "ControlsError",
    "Report",
    "build_report",
    "load_controls",
    "render",
]

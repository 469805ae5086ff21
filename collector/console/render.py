"""Templates: one Jinja2 environment with autoescaping always on (every value a page shows is
escaped, whatever its origin), and the helpers the templates use."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader
from starlette.requests import Request
from starlette.responses import HTMLResponse

from ..query.times import iso_seconds
from ..reports import FORMATS
from .auth import Identity

TEMPLATES = Path(__file__).parent / "templates"


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} TB"


def human_count(n: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:,.0f}"


class Renderer:
    def __init__(self, nav: list[tuple[str, str, bool]]) -> None:
        self.env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True)
        self.env.filters["bytes"] = human_bytes
        self.env.filters["count"] = human_count
        self.env.filters["path"] = lambda s: quote(str(s), safe="")
        self.env.filters["iso"] = iso_seconds  # Unix seconds -> 2026-12-01T05:10:24Z, as the API writes
        self.env.globals["query"] = lambda args, **more: urlencode({**args, **more})
        self.env.globals["report_formats"] = FORMATS  # the header's "Download report" links
        self.nav = nav  # (path, label, admin only)

    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        who: Identity | None = getattr(request.state, "who", None)
        nav = [(p, label) for p, label, admin in self.nav if not admin or (who is not None and who.admin)]
        body = self.env.get_template(template).render(who=who, nav=nav, path=request.url.path, **context)
        return HTMLResponse(body, status_code=status)

"""The report as PDF: WeasyPrint lays out the same HTML (inline SVG charts included) for print."""

from __future__ import annotations

import weasyprint  # type: ignore[import-untyped]  # ships no type information


def html_to_pdf(html: str) -> bytes:
    # No base URL and a fetcher that refuses everything: the page is self-contained, and a name
    # from the fleet can never make the renderer read a file or reach the network.
    pdf: bytes = weasyprint.HTML(string=html, url_fetcher=_refuse).write_pdf()
    return pdf


def _refuse(url: str, *args: object, **kwargs: object) -> dict[str, object]:
    raise ValueError(f"the report loads no external resource ({url[:60]!r})")

"""A tiny plain-text table renderer for both CLIs: fits a terminal width, never wraps a row.

Cells come from agents, so control characters are replaced: a finding's summary must not be
able to move the operator's cursor or recolour the terminal.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

ELLIPSIS = "…"
GAP = "  "


@dataclass(frozen=True)
class Column:
    header: str
    align: Literal["left", "right"] = "left"
    max_width: int | None = None  # never wider than this
    flex: bool = False  # gives up width first when the table is too wide
    min_width: int = 3
    weight: float = 1.0  # among flexible columns, a heavier one keeps more of its width


def terminal_width(default: int = 100) -> int:
    """The terminal's width, or `default` when not a terminal (pipes, tests)."""
    return shutil.get_terminal_size((default, 24)).columns


def clean(text: object) -> str:
    """One printable line: control characters (newlines, escapes) become spaces or '?'."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else (" " if c in "\t\r\n" else "?") for c in s)


def truncate(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    return text[: width - 1] + ELLIPSIS


def _fit(widths: list[int], columns: Sequence[Column], limit: int) -> list[int]:
    """Shrink columns until the row fits `limit`: flexible ones first, the widest per weight first."""
    total = sum(widths) + len(GAP) * (len(widths) - 1)
    for flexible_only in (True, False):
        while total > limit:
            candidates = [
                i
                for i, c in enumerate(columns)
                if (c.flex or not flexible_only) and widths[i] > max(c.min_width, 1)
            ]
            if not candidates:
                break
            widest = max(candidates, key=lambda i: widths[i] / columns[i].weight)
            widths[widest] -= 1
            total -= 1
    return widths


def render_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[object]],
    width: int | None = None,
    *,
    wide: bool = False,
) -> str:
    """Rows of cells under a header line, fitted into `width` (default: the terminal); `wide`
    shows every cell whole, however wide the table gets (`--wide`)."""
    limit = width if width is not None else terminal_width()
    cells = [[clean(c) for c in row] for row in rows]
    widths = []
    for i, col in enumerate(columns):
        natural = max([len(col.header), *(len(r[i]) for r in cells)])
        widths.append(min(natural, col.max_width) if col.max_width and not wide else natural)
    if not wide:
        widths = _fit(widths, columns, limit)

    def line(values: Sequence[str]) -> str:
        parts = []
        for value, col, w in zip(values, columns, widths, strict=True):
            v = truncate(value, w)
            parts.append(v.rjust(w) if col.align == "right" else v.ljust(w))
        return GAP.join(parts).rstrip()

    return "\n".join([line([c.header for c in columns]), *(line(r) for r in cells)])

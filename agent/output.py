"""Findings to stdout: one JSON object a line, or a table for people."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from typing import TextIO

from umbra import codec
from umbra.v1 import finding_pb2 as fpb


def write_json_lines(findings: Iterable[fpb.Finding], out: TextIO) -> None:
    for finding in findings:
        out.write(json.dumps(codec.finding_to_dict(finding), sort_keys=False) + "\n")


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], width: int | None = None) -> str:
    """A plain-text table; the last column is truncated to fit the terminal."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    fixed = sum(widths[:-1]) + 2 * (len(widths) - 1)
    widths[-1] = max(len(headers[-1]), min(widths[-1], width - fixed))

    def line(cells: Sequence[str]) -> str:
        parts = [c if len(c) <= w else c[: max(w - 1, 0)] + "…" for c, w in zip(cells, widths, strict=True)]
        return "  ".join(p.ljust(w) for p, w in zip(parts, widths, strict=True)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def write_table(findings: Sequence[fpb.Finding], out: TextIO) -> None:
    if not findings:
        out.write("no findings\n")
        return
    rows = [
        [
            codec.kind_name(f.kind),
            codec.severity_name(f.severity),
            f"{f.confidence:.2f}",
            str(f.process.pid) if f.HasField("process") else "",
            str(f.count),
            ("approved " if f.policy.approved else "") + f.summary,
        ]
        for f in sorted(findings, key=lambda f: (-f.severity, f.kind, f.summary))
    ]
    out.write(render_table(["KIND", "SEVERITY", "CONF", "PID", "COUNT", "SUMMARY"], rows) + "\n")

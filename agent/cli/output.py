"""Findings to stdout: one JSON object a line, or a table for people."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TextIO

from umbra import codec
from umbra.table import Column, render_table
from umbra.v1 import finding_pb2 as fpb


def write_json_lines(findings: Iterable[fpb.Finding], out: TextIO) -> None:
    for finding in findings:
        out.write(json.dumps(codec.finding_to_dict(finding), sort_keys=False) + "\n")


def write_table(findings: Sequence[fpb.Finding], out: TextIO) -> None:
    if not findings:
        out.write("no findings\n")
        return
    columns = [
        Column("KIND", max_width=22),
        Column("SEVERITY"),
        Column("CONF", align="right"),
        Column("PID", align="right"),
        Column("COUNT", align="right"),
        Column("SUMMARY", flex=True, weight=3.0),
    ]
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
    out.write(render_table(columns, rows) + "\n")

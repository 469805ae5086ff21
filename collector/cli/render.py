"""Table and line rendering of the read views (JSON output needs none of it)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from umbra.table import Column, render_table


def age(when: str | float) -> str:
    """ "3s", "5m", "2h", "4d" ago; "never" for an empty time."""
    if isinstance(when, str):
        if not when:
            return "never"
        seconds = datetime.fromisoformat(when).timestamp()
    else:
        if when <= 0:
            return "never"
        seconds = when
    delta = max(0.0, time.time() - seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{int(delta // size)}{unit} ago"
    return f"{int(delta)}s ago"


def process_text(finding: dict[str, Any]) -> str:
    p = finding.get("process")
    if not p:
        return "-"
    return f"{p['pid']}/{p['name']}" if p.get("name") else str(p["pid"])


def risk_text(view: dict[str, Any]) -> str:
    risk = view["risk"]
    return f"{risk['score']:g} {risk['level']}"


# Every table names a host the same way: HOST is its name (its id when it has none); HOST ID is
# shown where ids are looked up (hosts, agent list) and, with --wide, everywhere.
HOST_COLUMNS = (
    Column("HOST", max_width=30, flex=True, min_width=8),
    Column("HOST ID", max_width=36, flex=True, min_width=8, weight=1.5),
    Column("OS", max_width=10),
    Column("AGENT", max_width=10),
    Column("SENSORS", align="right"),
    Column("CONTACT", align="right"),
    Column("SEQ", align="right"),
    Column("FINDINGS", align="right"),
    Column("RISK", max_width=14),
)
FLEET_HOST_COLUMNS = (
    Column("HOST", max_width=36, flex=True, min_width=8),
    Column("OS", max_width=10),
    Column("AGENT", max_width=10),
    Column("SENSORS", align="right"),
    Column("CONTACT", align="right"),
    Column("RISK", max_width=14),
    Column("FINDINGS", align="right"),
)
# Kind names are at most 20 characters and stay whole; the summary keeps most of what is left.
FINDING_COLUMNS = (
    Column("KIND", max_width=20),
    Column("SEVERITY", max_width=8),
    Column("HOST", max_width=36, flex=True, min_width=8),
    Column("SUMMARY", max_width=80, flex=True, min_width=12, weight=3.0),
    Column("PROCESS", max_width=24, flex=True, min_width=12),
    Column("COUNT", align="right"),
    Column("LAST SEEN", align="right"),
)


def sensors_text(view: dict[str, Any]) -> str:
    return f"{view['sensors_active']}/{len(view['sensors'])}"


#: What --wide adds to the findings table.
FINDING_WIDE_COLUMNS = (
    Column("HOST ID"),
    Column("USER"),
    Column("CONF", align="right"),
    Column("APPROVED"),
    Column("FIRST SEEN", align="right"),
    Column("ID"),
)


def findings_table(
    findings: Sequence[dict[str, Any]],
    width: int,
    host_names: dict[str, str] | None = None,
    wide: bool = False,
) -> str:
    """Findings as rows; HOST shows the host name where `host_names` knows it (ids are opaque)."""
    names = host_names or {}
    rows = [
        (
            f["kind"],
            f["severity"],
            names.get(f["host_id"]) or f["host_id"],
            f["summary"] or f["id"],
            process_text(f),
            f["count"],
            age(f["last_seen"]),
            *(
                (
                    f["host_id"],
                    f.get("user") or "-",
                    f"{f['confidence']:.2f}",
                    "yes" if (f.get("policy") or {}).get("approved") else "no",
                    age(f["first_seen"]),
                    f["id"],
                )
                if wide
                else ()
            ),
        )
        for f in findings
    ]
    columns = (*FINDING_COLUMNS, *FINDING_WIDE_COLUMNS) if wide else FINDING_COLUMNS
    return render_table(columns, rows, width, wide=wide)


def print_lines(items: Sequence[Any]) -> None:
    for item in items:
        print(json.dumps(item, separators=(",", ":")))


INVENTORY_COLUMNS = (
    Column("HOST", max_width=30, flex=True, min_width=8),
    Column("PATH", max_width=90, flex=True, min_width=16, weight=3.0),
    Column("FORMAT", max_width=12),
    Column("SIZE", align="right"),
    Column("PARAMS", align="right"),
    Column("SHA-256", max_width=12),
    Column("TAKEN", align="right"),
)

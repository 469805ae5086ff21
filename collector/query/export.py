"""Exports: findings streamed out of the store page by page as OCSF Detection Findings, JSON lines
or CSV. Memory stays flat however many findings there are: one page at a time.

OCSF: each finding is a Detection Finding (class_uid 2004, category_uid 2 "Findings", activity
1 "Create", so type_uid 200401) of OCSF 1.x. Times are milliseconds since the epoch, as OCSF's
timestamp type has them. What OCSF has no attribute for (the kind, the policy decision) goes in
`unmapped`, as the schema intends.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any, TextIO

from ..storage.base import Store
from ..storage.reads import FindingFilter

OCSF_VERSION = "1.5.0"
PRODUCT = {"name": "Umbra", "vendor_name": "Umbra", "version": "0.1.0"}
CLASS_UID, CATEGORY_UID, ACTIVITY_CREATE = 2004, 2, 1
#: Umbra severity -> OCSF severity_id and caption.
SEVERITY_IDS: dict[str, tuple[int, str]] = {
    "unspecified": (0, "Unknown"),
    "info": (1, "Informational"),
    "low": (2, "Low"),
    "medium": (3, "Medium"),
    "high": (4, "High"),
    "critical": (5, "Critical"),
}
CSV_COLUMNS = (
    "host_id", "id", "kind", "severity", "confidence", "approved", "rule", "user", "process", "pid",
    "summary", "first_seen", "last_seen", "count",
)  # fmt: skip
PAGE = 1000


def _ms(iso: str) -> int | None:
    if not iso:
        return None
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _confidence_id(confidence: float) -> int:
    return 3 if confidence >= 0.75 else 2 if confidence >= 0.4 else 1


def ocsf_event(f: dict[str, Any]) -> dict[str, Any]:
    """One finding dict (codec.finding_to_dict) as an OCSF Detection Finding event."""
    severity_id, severity = SEVERITY_IDS.get(f["severity"], (99, "Other"))
    first, last = _ms(f.get("first_seen", "")), _ms(f.get("last_seen", ""))
    title = f.get("summary") or f["kind"]
    event: dict[str, Any] = {
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "activity_id": ACTIVITY_CREATE,
        "activity_name": "Create",
        "type_uid": CLASS_UID * 100 + ACTIVITY_CREATE,
        "type_name": "Detection Finding: Create",
        "severity_id": severity_id,
        "severity": severity,
        "status_id": 1,
        "status": "New",
        "time": last or first or 0,
        "start_time": first,
        "end_time": last,
        "count": f.get("count", 1),
        "confidence_score": round(float(f.get("confidence", 0.0)) * 100),
        "confidence_id": _confidence_id(float(f.get("confidence", 0.0))),
        "message": title,
        "metadata": {"version": OCSF_VERSION, "product": PRODUCT, "uid": f"{f['host_id']}/{f['id']}"},
        "finding_info": {
            "uid": f"{f['host_id']}/{f['id']}",
            "title": title,
            "desc": title,
            "types": [f["kind"]],
            "first_seen_time": first,
            "last_seen_time": last,
            "analytic": {"uid": f["kind"], "name": f["kind"], "type_id": 1, "type": "Rule"},
        },
        "device": {"uid": f["host_id"], "type_id": 0, "type": "Unknown"},
        "evidences": [{"data": evidence} for evidence in f.get("evidence", [])],
        "unmapped": {"kind": f["kind"], "policy": f.get("policy", {})},
    }
    process = f.get("process")
    if process:
        event["process"] = {
            "pid": process.get("pid"),
            "name": process.get("name", ""),
            "cmd_line": " ".join(process.get("cmdline", [])),
            "file": {"path": process.get("exe", ""), "name": process.get("name", ""), "type_id": 1},
            "user": {"name": process.get("username", "")},
        }
        if process.get("ppid"):
            event["process"]["parent_process"] = {"pid": process["ppid"]}
    if f.get("user"):
        event["actor"] = {"user": {"name": f["user"]}}
    return event


def _csv_row(f: dict[str, Any]) -> list[Any]:
    p = f.get("process") or {}
    policy = f.get("policy") or {}
    return [
        f["host_id"], f["id"], f["kind"], f["severity"], f["confidence"], policy.get("approved", False),
        policy.get("rule", ""), f.get("user", ""), p.get("name", ""), p.get("pid", ""), f.get("summary", ""),
        f.get("first_seen", ""), f.get("last_seen", ""), f.get("count", 1),
    ]  # fmt: skip


def export(store: Store, fmt: str, out: TextIO, since: float | None = None) -> int:
    """Write every finding last seen from `since` on to `out` in `fmt` (ocsf, jsonl, csv); how many."""
    findings: Iterator[dict[str, Any]] = store.iter_findings(FindingFilter(since=since), PAGE)
    n = 0
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for f in findings:
            writer.writerow(_csv_row(f))
            n += 1
        return n
    if fmt not in ("ocsf", "jsonl"):
        raise ValueError(f"unknown export format {fmt!r}: ocsf, jsonl or csv")
    for f in findings:
        out.write(json.dumps(ocsf_event(f) if fmt == "ocsf" else f, separators=(",", ":")) + "\n")
        n += 1
    return n

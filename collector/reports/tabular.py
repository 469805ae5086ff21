"""The report as data: JSON (the whole typed tree) and CSV in a long format, one row per number:
section,item,metric,value. `show` writes each value the way the HTML shows it, so the three
formats carry the same numbers."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

from ..risk import HostRisk
from ..storage.reads import ActivityRow
from .model import KindTotal, Report

CSV_HEADER = ("section", "item", "metric", "value")
JSON_FORMAT = "umbra-report/1"

Row = tuple[str, str, str, str]


def show(value: object) -> str:
    """A value as every format prints it: scores to one decimal, counts whole, bools yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def to_json(report: Report) -> bytes:
    doc = {"format": JSON_FORMAT, **report.to_dict()}
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def to_csv(report: Report) -> bytes:
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(CSV_HEADER)
    out.writerows(long_rows(report))
    return buf.getvalue().encode("utf-8")


def long_rows(report: Report) -> Iterator[Row]:
    """Every number of the report as (section, item, metric, value)."""
    m = report.meta
    yield from _fields("meta", "report", {"generated_at": m.generated_at, "as_of": m.as_of, "since": m.since})
    c = report.coverage
    yield from _fields(
        "coverage",
        "fleet",
        {
            "hosts_known": c.hosts_known,
            "agents_enrolled": c.agents_enrolled,
            "agents_revoked": c.agents_revoked,
            "hosts_reporting": c.hosts_reporting,
            "hosts_silent": c.hosts_silent,
            "hosts_all_sensors_active": c.hosts_all_sensors_active,
        },
    )
    for s in c.sensors:
        yield from _fields(
            "sensors", s.sensor, {"active": s.active, "degraded": s.degraded, "inactive": s.inactive}
        )
    for v in report.vendors:
        yield from _fields(
            "vendors",
            f"{v.vendor} / {v.category}",
            {
                "services": v.services,
                "findings": v.findings,
                "approved": v.approved,
                "unapproved": v.unapproved,
                "bytes_out": v.bytes_out,
            },
        )
    for sv in report.services:
        yield from _fields(
            "services",
            sv.service,
            {
                "vendor": sv.vendor,
                "category": sv.category,
                "hosts": sv.hosts,
                "processes": sv.processes,
                "bytes_out": sv.bytes_out,
                "findings": sv.findings,
                "approved": sv.approved,
                "unapproved": sv.unapproved,
            },
        )
    for r in report.runtimes:
        yield from _fields(
            "runtimes",
            r.runtime,
            {
                "hosts": r.hosts,
                "exposed_hosts": r.exposed_hosts,
                "findings": r.findings,
                "unapproved": r.unapproved,
            },
        )
    yield from _activity("compute", report.compute, report.compute_totals)
    yield from _activity("aitools", report.aitools, report.aitools_totals)
    for tool in report.tools:
        yield from _fields(
            "tools", f"{tool.kind}:{tool.tool}", {"hosts": len(tool.hosts), "details": ";".join(tool.details)}
        )
    for mr in report.models:
        yield from _fields(
            "models",
            mr.sha256,
            {
                "format": mr.format,
                "architecture": mr.architecture,
                "parameters": mr.parameters,
                "size_bytes": mr.size_bytes,
                "hosts": mr.hosts,
                "unapproved_hosts": mr.unapproved_hosts,
                "copies": mr.copies,
            },
        )
    yield from _activity("transfers", report.transfers, report.transfer_totals)
    f = report.fleet
    yield from _fields(
        "risk",
        "fleet",
        {
            "hosts": f.hosts,
            "hosts_at_risk": f.hosts_at_risk,
            "mean_score": f.mean_score,
            "max_score": f.max_score,
            "level": f.level,
            "findings": f.findings,
            "unapproved": f.unapproved,
        },
    )
    for kind, n in sorted(f.findings_by_kind.items()):
        yield ("findings_by_kind", kind, "findings", show(n))
    for severity, n in sorted(f.findings_by_severity.items()):
        yield ("findings_by_severity", severity, "findings", show(n))
    for level, n in sorted(f.hosts_by_level.items()):
        yield ("hosts_by_level", level, "hosts", show(n))
    for t in report.trend:
        yield from _fields(
            "trend",
            t.day,
            {"score": t.score, "level": t.level, "findings": t.findings, "unapproved": t.unapproved},
        )
    yield from _risks("top_hosts", report.top_hosts)
    yield from _risks("top_users", report.top_users)
    for host_id, name in sorted(report.host_names.items()):  # CSV rows key hosts by id; here, their names
        yield ("hosts", host_id, "hostname", name)
    for item in report.controls:
        for clause in item.clauses:
            yield ("controls", item.section, clause.id, clause.framework)


def _fields(section: str, item: str, values: dict[str, object]) -> Iterator[Row]:
    for metric, value in values.items():
        yield (section, item, metric, show(value))


def _activity(section: str, rows: tuple[ActivityRow, ...], totals: tuple[KindTotal, ...]) -> Iterator[Row]:
    for t in totals:
        yield from _fields(
            f"{section}_totals",
            t.kind,
            {"hosts": t.hosts, "findings": t.findings, "unapproved": t.unapproved, "bytes": t.bytes},
        )
    for r in rows:
        yield from _fields(
            section,
            r.host_id,
            {
                f"{r.kind}.findings": r.findings,
                f"{r.kind}.unapproved": r.unapproved,
                f"{r.kind}.bytes": r.bytes,
            },
        )


def _risks(section: str, risks: tuple[HostRisk, ...]) -> Iterator[Row]:
    for r in risks:
        yield from _fields(
            section,
            r.host_id,
            {
                "score": r.score,
                "level": r.level,
                "findings": r.findings,
                "unapproved": r.unapproved,
                "reasons": "; ".join(r.reasons),
            },
        )

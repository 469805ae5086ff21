"""The fleet report as typed data, computed only through the read side (collector.query): every
number is an aggregate the database groups, so building a report costs the same at ten million
findings as at ten. Renderers (html, pdf, tabular) only lay this tree out."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from ..query import activity, snapshots
from ..query.activity import ToolRow
from ..query.hosts import host_label, host_names
from ..query.risk import as_of, risk_board
from ..query.times import iso_seconds
from ..risk import FleetRisk, HostRisk
from ..storage.base import Store
from ..storage.reads import ActivityRow, ModelRow, RuntimeRow, SnapshotRow
from .controls import ControlItem, load_controls

#: A host without contact for this long counts as silent in the report (the CLI's default).
SILENT_AFTER = 3 * 3600.0
TOP_HOSTS = 10
CENSUS_ROWS = 50
CENSUS_HOLDERS = 5
TREND_DAYS_MAX = 365


@dataclass(frozen=True)
class SensorCoverage:
    """One sensor across the hosts that reported it: how many run it in each state."""

    sensor: str
    active: int
    degraded: int
    inactive: int


@dataclass(frozen=True)
class Coverage:
    hosts_known: int  # hosts that said Hello
    agents_enrolled: int  # certificates issued and not revoked
    agents_revoked: int
    hosts_reporting: int
    hosts_silent: int
    hosts_all_sensors_active: int
    sensors: tuple[SensorCoverage, ...]


@dataclass(frozen=True)
class ServiceUse:
    """One AI service (host name) and its category; approved = findings - unapproved."""

    service: str
    vendor: str
    category: str
    hosts: int
    processes: int
    bytes_out: int
    findings: int
    approved: int
    unapproved: int


@dataclass(frozen=True)
class VendorUse:
    """The services of one vendor and category together (hosts are per service, not summed)."""

    vendor: str
    category: str
    services: int
    findings: int
    approved: int
    unapproved: int
    bytes_out: int


@dataclass(frozen=True)
class KindTotal:
    kind: str
    hosts: int
    findings: int
    unapproved: int
    bytes: int


@dataclass(frozen=True)
class ReportMeta:
    generated_at: str
    as_of: str  # the time risk ages against (see query.risk.as_of)
    since: str  # the window's start ("" for all time)
    since_seconds: float | None


@dataclass(frozen=True)
class Report:
    meta: ReportMeta
    coverage: Coverage
    services: tuple[ServiceUse, ...]
    vendors: tuple[VendorUse, ...]
    runtimes: tuple[RuntimeRow, ...]
    compute: tuple[ActivityRow, ...]
    compute_totals: tuple[KindTotal, ...]
    models: tuple[ModelRow, ...]
    transfers: tuple[ActivityRow, ...]
    transfer_totals: tuple[KindTotal, ...]
    fleet: FleetRisk
    trend: tuple[SnapshotRow, ...]
    top_hosts: tuple[HostRisk, ...]
    top_users: tuple[HostRisk, ...]
    controls: tuple[ControlItem, ...] = field(default=())
    host_names: dict[str, str] = field(default_factory=dict)  # host id -> name, for people to read
    aitools: tuple[ActivityRow, ...] = ()
    aitools_totals: tuple[KindTotal, ...] = ()
    tools: tuple[ToolRow, ...] = ()  # each AI tool and the hosts holding it (inventories, not the window)

    def host(self, host_id: str) -> str:
        """How the report names a host: its name, its id when it has none (query.hosts.host_label)."""
        return host_label(self.host_names, host_id)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_report(store: Store, since_seconds: float | None, now: float | None = None) -> Report:
    """The report of the last `since_seconds` (None: everything the store holds)."""
    now = time.time() if now is None else now
    since = now - since_seconds if since_seconds is not None else None
    board = risk_board(store, TOP_HOSTS, now, since)
    compute = activity.compute(store, since)
    transfers = activity.transfers(store, since)
    aitools = activity.aitools(store, since)
    services = _services(store, since)
    days = (
        min(TREND_DAYS_MAX, int(since_seconds // 86400) + 1) if since_seconds is not None else TREND_DAYS_MAX
    )
    return Report(
        meta=ReportMeta(
            iso_seconds(now), iso_seconds(as_of(store, now)), iso_seconds(since or 0), since_seconds
        ),
        coverage=_coverage(store, now),
        services=services,
        vendors=_vendors(services),
        runtimes=tuple(activity.runtimes(store, since)),
        compute=tuple(compute),
        compute_totals=_totals(compute),
        models=tuple(activity.census(store, CENSUS_ROWS, CENSUS_HOLDERS)),
        transfers=tuple(transfers),
        transfer_totals=_totals(transfers),
        fleet=board.fleet,
        trend=tuple(snapshots.trend(store, "fleet", "", days, now)),
        top_hosts=tuple(board.hosts),
        top_users=tuple(board.users),
        controls=load_controls(),
        host_names=host_names(store),
        aitools=tuple(aitools),
        aitools_totals=_totals(aitools),
        tools=tuple(activity.tools(store)),
    )


def _coverage(store: Store, now: float) -> Coverage:
    states = activity.host_states(store, SILENT_AFTER, now)
    agents = store.agents()
    hosts = store.hosts(with_counts=False)
    by_sensor: dict[str, Counter[str]] = {}
    for h in hosts:
        for s in h.sensors:
            by_sensor.setdefault(s.name, Counter())[s.state] += 1
    return Coverage(
        hosts_known=len(hosts),
        agents_enrolled=sum(1 for a in agents if not a.revoked),
        agents_revoked=sum(1 for a in agents if a.revoked),
        hosts_reporting=states["reporting"],
        hosts_silent=states["silent"],
        hosts_all_sensors_active=sum(1 for h in hosts if h.sensors and h.sensors_active == len(h.sensors)),
        sensors=tuple(
            SensorCoverage(name, c["active"], c["degraded"], c["inactive"])
            for name, c in sorted(by_sensor.items())
        ),
    )


def _services(store: Store, since: float | None) -> tuple[ServiceUse, ...]:
    rows = activity.services(store, since)
    category = activity.service_categories(store, [r.service for r in rows])
    return tuple(
        ServiceUse(
            r.service,
            r.vendor,
            category[r.service],
            r.hosts,
            r.processes,
            r.bytes_out,
            r.findings,
            r.findings - r.unapproved,
            r.unapproved,
        )
        for r in rows
    )


def _vendors(services: tuple[ServiceUse, ...]) -> tuple[VendorUse, ...]:
    groups: dict[tuple[str, str], list[ServiceUse]] = {}
    for s in services:
        groups.setdefault((s.vendor, s.category), []).append(s)
    out = [
        VendorUse(
            vendor,
            category,
            len(group),
            sum(s.findings for s in group),
            sum(s.approved for s in group),
            sum(s.unapproved for s in group),
            sum(s.bytes_out for s in group),
        )
        for (vendor, category), group in groups.items()
    ]
    return tuple(sorted(out, key=lambda v: (-v.unapproved, -v.findings, v.vendor, v.category)))


def _totals(rows: list[ActivityRow]) -> tuple[KindTotal, ...]:
    by_kind: dict[str, list[ActivityRow]] = {}
    for r in rows:
        by_kind.setdefault(r.kind, []).append(r)
    return tuple(
        KindTotal(
            kind,
            len({r.host_id for r in group}),
            sum(r.findings for r in group),
            sum(r.unapproved for r in group),
            sum(r.bytes for r in group),
        )
        for kind, group in sorted(by_kind.items())
    )

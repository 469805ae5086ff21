"""The host list and the fleet document: JSON-ready, shared by the HTTP API and the CLI so both say
the same thing."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from ..risk import HostRisk, fleet_summary, score_spec
from ..storage.base import HostRecord, Store
from ..storage.reads import TallyRow
from .hosts import resolve_host
from .risk import as_of
from .times import iso_seconds


def host_view(host: HostRecord, risk: HostRisk | None) -> dict[str, Any]:
    view = host.to_dict()
    for key in ("first_seen", "last_seen", "last_heartbeat", "silent_since"):
        view[key] = iso_seconds(view[key])
    view["sensors_active"] = host.sensors_active
    view["risk"] = (
        {
            "score": risk.score,
            "level": risk.level,
            "unapproved": risk.unapproved,
            "by_severity": risk.by_severity,
            "reasons": list(risk.reasons),
        }
        if risk is not None
        else {"score": 0.0, "level": "none", "unapproved": 0, "by_severity": {}, "reasons": []}
    )
    return view


def _hosts_and_tally(store: Store, now: float | None) -> tuple[list[HostRecord], list[TallyRow]]:
    """Every host with its finding counts, and the tally they come from: the findings are grouped
    once, by the database, for both the counts and the risk."""
    rows = store.tally("host", score_spec(as_of(store, now)))
    totals: dict[str, list[int]] = {}
    by_severity: dict[str, dict[str, int]] = {}
    for r in rows:
        t = totals.setdefault(r.key, [0, 0])
        t[0] += r.findings
        t[1] += 0 if r.approved else r.findings
        counts = by_severity.setdefault(r.key, {})
        counts[r.severity] = counts.get(r.severity, 0) + r.findings
    hosts = [
        replace(
            h,
            findings_total=totals.get(h.host_id, [0, 0])[0],
            findings_unapproved=totals.get(h.host_id, [0, 0])[1],
            findings_by_severity=by_severity.get(h.host_id, {}),
        )
        for h in store.hosts(with_counts=False)
    ]
    return hosts, rows


def hosts_view(store: Store, now: float | None = None) -> list[dict[str, Any]]:
    hosts, rows = _hosts_and_tally(store, now)
    _, per_host = fleet_summary([h.host_id for h in hosts], rows)
    return [host_view(h, per_host.get(h.host_id)) for h in hosts]


def fleet_view(store: Store, findings_limit: int | None = 100, now: float | None = None) -> dict[str, Any]:
    """The fleet document: summary risk, every host with its risk, the newest findings.

    Risk counts every finding (summed in the database); only the findings list is cut to
    `findings_limit`.
    """
    now = time.time() if now is None else now
    hosts, rows = _hosts_and_tally(store, now)
    summary, per_host = fleet_summary([h.host_id for h in hosts], rows)
    shown = store.findings(limit=findings_limit)
    return {
        "generated_at": iso_seconds(now),
        "fleet": summary.to_dict(),
        "hosts": [host_view(h, per_host.get(h.host_id)) for h in hosts],
        "findings": shown,
        "findings_shown": len(shown),
    }


def inventories_view(store: Store, host: str | None = None) -> list[dict[str, Any]]:
    """The newest inventory of every host (or of `host`: an id or a name): its model files and runtimes."""
    return [i.to_dict() for i in store.inventories(resolve_host(store, host) if host else None)]

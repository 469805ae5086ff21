"""JSON-ready views over the store, shared by the HTTP API and the CLI so both say the same thing."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from .risk import HostRisk, fleet_risk
from .storage.base import HostRecord, Store


def iso_seconds(when: float) -> str:
    """Unix seconds -> ISO 8601 UTC ("" for 0, i.e. never)."""
    if when <= 0:
        return ""
    return datetime.fromtimestamp(when, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


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
        }
        if risk is not None
        else {"score": 0.0, "level": "none", "unapproved": 0, "by_severity": {}}
    )
    return view


def hosts_view(store: Store) -> list[dict[str, Any]]:
    hosts = store.hosts()
    _, per_host = fleet_risk(hosts, store.risk_facts())
    return [host_view(h, per_host.get(h.host_id)) for h in hosts]


def fleet_view(store: Store, findings_limit: int | None = 100) -> dict[str, Any]:
    """The fleet document: summary risk, every host with its risk, the newest findings.

    Risk is computed over all findings; only the findings list is cut to `findings_limit`.
    """
    hosts = store.hosts()
    summary, per_host = fleet_risk(hosts, store.risk_facts())
    shown = store.findings(limit=findings_limit)
    return {
        "generated_at": iso_seconds(time.time()),
        "fleet": summary.to_dict(),
        "hosts": [host_view(h, per_host.get(h.host_id)) for h in hosts],
        "findings": shown,
        "findings_shown": len(shown),
    }

"""Daily risk snapshots: each host's, each user's and the fleet's score once a day, for trends.

The collector's monitor takes one when the day has none yet (`ensure_daily`); `umbra-collector
snapshot` takes one on demand (it replaces the day's rows, so taking one twice is harmless)."""

from __future__ import annotations

import time

from ..storage.base import Store
from ..storage.reads import SnapshotRow, SnapshotScope
from .hosts import resolve_host
from .risk import scored
from .times import utc_day


def take(store: Store, now: float | None = None) -> list[SnapshotRow]:
    """Score everything now and keep it as today's snapshot; returns the fleet row first."""
    now = time.time() if now is None else now
    day = utc_day(now)
    fleet, per_host, per_user = scored(store, now)
    rows = [SnapshotRow(day, "fleet", "", fleet.max_score, fleet.level, fleet.findings, fleet.unapproved)]
    for scope, risks in (("host", per_host), ("user", per_user)):
        rows += [
            SnapshotRow(day, scope, r.host_id, r.score, r.level, r.findings, r.unapproved)  # type: ignore[arg-type]
            for r in risks.values()
        ]
    store.record_risk_snapshot(rows)
    return rows


def ensure_daily(store: Store, now: float | None = None) -> bool:
    """Take today's snapshot unless one exists; True when one was taken."""
    now = time.time() if now is None else now
    if store.risk_snapshots("fleet", "", since_day=utc_day(now)):
        return False
    take(store, now)
    return True


def trend(
    store: Store, scope: SnapshotScope, key: str = "", days: int = 30, now: float | None = None
) -> list[SnapshotRow]:
    """The kept scores of one host, user or the fleet over the last `days` days, oldest first."""
    now = time.time() if now is None else now
    if scope == "host":
        key = resolve_host(store, key)
    return store.risk_snapshots(scope, key, since_day=utc_day(now - days * 86400.0))

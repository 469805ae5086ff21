"""Risk views: each host's, each user's and the fleet's score, level and reasons, summed in SQL."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from ..risk import FleetRisk, HostRisk, fleet_summary, fold, level_at_least, score_spec
from ..storage.base import Store


def as_of(store: Store, now: float | None = None) -> float:
    """The time findings age against: now, or the newest finding when that is older (a store
    restored from a backup, or a fleet that went quiet, is scored as of its last data, not decayed
    to nothing); a finding from an agent whose clock runs ahead never makes the rest look old."""
    now = time.time() if now is None else now
    newest = store.newest_finding()
    return min(now, newest) if newest > 0 else now


def host_risks(
    store: Store, now: float | None = None, since: float | None = None
) -> tuple[FleetRisk, dict[str, HostRisk]]:
    """The fleet summary and every known host's risk (hosts without findings score 0); with
    `since`, only findings last seen since then count (a report's window)."""
    hosts = [c.host_id for c in store.host_contacts()]
    return fleet_summary(hosts, store.tally("host", score_spec(as_of(store, now)), since))


def user_risks(store: Store, now: float | None = None, since: float | None = None) -> dict[str, HostRisk]:
    """Every user with findings and their risk (HostRisk.host_id is the user name)."""
    return fold(store.tally("user", score_spec(as_of(store, now)), since))


def refresh(store: Store, now: float | None = None) -> int:
    """Bring the store's kept summaries up to date as of `now` (the monitor does it every interval,
    so a view finds little left to recompute); returns how many hosts, users and hashes were redone."""
    return store.refresh_summaries(score_spec(as_of(store, now)))


def ranked(risks: dict[str, HostRisk], top: int) -> list[HostRisk]:
    """The `top` riskiest, highest score first (ties: more unapproved findings, then name)."""
    order = sorted(risks.values(), key=lambda r: (-r.score, -r.unapproved, r.host_id))
    return [r for r in order if r.score > 0][:top]


@dataclass(frozen=True)
class RiskBoard:
    """The fleet's risk and its riskiest hosts and users."""

    fleet: FleetRisk
    hosts: list[HostRisk]
    users: list[HostRisk]

    def to_dict(self) -> dict[str, Any]:
        return {
            "fleet": self.fleet.to_dict(),
            "hosts": [asdict(h) for h in self.hosts],
            "users": [{**asdict(u), "user": u.host_id} for u in self.users],
        }


def risk_board(
    store: Store, top: int = 10, now: float | None = None, since: float | None = None
) -> RiskBoard:
    now = time.time() if now is None else now
    fleet, per_host = host_risks(store, now, since)
    return RiskBoard(fleet, ranked(per_host, top), ranked(user_risks(store, now, since), top))


def at_risk(risk: HostRisk, floor: str) -> bool:
    return level_at_least(risk.level, floor)

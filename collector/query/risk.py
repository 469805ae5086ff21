"""Risk views: each host's, each user's and the fleet's score, level and reasons, summed in SQL."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from ..risk import FleetRisk, HostRisk, fleet_of, fleet_summary, fold, fold_scores, level_at_least, score_spec
from ..storage.base import Store
from ..storage.reads import GroupBy, ScoreSpec


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


#: The fleet summary, every host's and every user's risk.
Scored = tuple[FleetRisk, dict[str, HostRisk], dict[str, HostRisk]]


def scored(store: Store, now: float | None = None) -> Scored:
    """The fleet summary, and every host's and user's score, level and counts, without reasons:
    one row per host and user from the database (`Store.scores`), never their tally rows."""
    return _scored(store, score_spec(as_of(store, now)))


def _scored(store: Store, spec: ScoreSpec) -> Scored:
    hosts = fold_scores(store.scores("host", spec), (c.host_id for c in store.host_contacts()))
    return fleet_of(hosts, store.tally_totals(spec)), hosts, fold_scores(store.scores("user", spec))


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
    if since is not None:  # a report's window: no kept summaries for it, so the full tally
        fleet, per_host = host_risks(store, now, since)
        return RiskBoard(fleet, ranked(per_host, top), ranked(user_risks(store, now, since), top))
    # Every key's score ranks them; only the riskiest ones' tally rows are read for their reasons.
    spec = score_spec(as_of(store, now))
    fleet, hosts, users = _scored(store, spec)
    return RiskBoard(
        fleet, _detailed(store, "host", spec, hosts, top), _detailed(store, "user", spec, users, top)
    )


def _detailed(
    store: Store, by: GroupBy, spec: ScoreSpec, risks: dict[str, HostRisk], top: int
) -> list[HostRisk]:
    """The `top` riskiest of `risks` (see `ranked`) with their reasons and severities."""
    keys = [r.host_id for r in ranked(risks, top)]
    full = fold(store.tally_of(by, spec, keys), keys) if keys else {}
    return [full[k] for k in keys]


def at_risk(risk: HostRisk, floor: str) -> bool:
    return level_at_least(risk.level, floor)

"""Risk aggregation: a score per host and a summary of the fleet.

Pure functions over the store's plain data (finding dicts, HostRecords). The host score is a
capped sum over unapproved findings of severity weight x confidence, which is one
`SUM(...)`/`GROUP BY host_id` away from SQL when a large fleet needs it there.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from umbra import codec

from .storage.base import HostRecord

#: Points an unapproved finding adds at confidence 1. One critical finding alone makes a host
#: "high"; informational findings (approved services, health notes) never add risk.
SEVERITY_WEIGHTS: Mapping[str, float] = {
    "unspecified": 0.0,
    "info": 0.0,
    "low": 2.0,
    "medium": 5.0,
    "high": 15.0,
    "critical": 40.0,
}
MAX_SCORE = 100.0
#: (lowest score, level), highest first; a score of 0 is "none".
LEVELS: tuple[tuple[float, str], ...] = ((70.0, "critical"), (40.0, "high"), (15.0, "medium"), (0.0, "low"))
LEVEL_ORDER: tuple[str, ...] = ("none", "low", "medium", "high", "critical")
#: A host counts as "at risk" from this level up: a lone low finding is noise, not risk.
AT_RISK_LEVEL = "medium"


@dataclass(frozen=True)
class HostRisk:
    host_id: str
    score: float
    level: str
    unapproved: int  # unapproved findings that were scored
    by_severity: dict[str, int] = field(default_factory=dict)  # unapproved, by severity

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FleetRisk:
    hosts: int
    hosts_at_risk: int
    mean_score: float
    max_score: float
    level: str  # the level of the riskiest host
    findings: int
    unapproved: int
    findings_by_kind: dict[str, int] = field(default_factory=dict)
    findings_by_severity: dict[str, int] = field(default_factory=dict)
    hosts_by_level: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def finding_points(finding: Mapping[str, Any]) -> float:
    """What one finding dict adds to its host's score: 0 when approved."""
    if finding.get("policy", {}).get("approved", False):
        return 0.0
    weight = SEVERITY_WEIGHTS.get(str(finding.get("severity", "")), 0.0)
    confidence = min(max(float(finding.get("confidence", 0.0)), 0.0), 1.0)
    return weight * confidence


def level_for(score: float) -> str:
    if score <= 0.0:
        return "none"
    for floor, level in LEVELS:
        if score >= floor:
            return level
    return "low"


def level_at_least(level: str, floor: str) -> bool:
    return LEVEL_ORDER.index(level) >= LEVEL_ORDER.index(floor)


def host_risk(host_id: str, findings: Iterable[Mapping[str, Any]]) -> HostRisk:
    """Score one host from its findings (other hosts' findings are ignored)."""
    total = 0.0
    unapproved = 0
    by_severity: Counter[str] = Counter()
    for f in findings:
        if f.get("host_id") != host_id or f.get("policy", {}).get("approved", False):
            continue
        unapproved += 1
        by_severity[str(f.get("severity", ""))] += 1
        total += finding_points(f)
    score = round(min(total, MAX_SCORE), 1)
    return HostRisk(host_id, score, level_for(score), unapproved, dict(by_severity))


def hosts_risk(host_ids: Iterable[str], findings: Iterable[Mapping[str, Any]]) -> dict[str, HostRisk]:
    """Score many hosts in one pass; hosts without findings score 0. Finding hosts not listed are added."""
    grouped: dict[str, list[Mapping[str, Any]]] = {h: [] for h in host_ids}
    for f in findings:
        grouped.setdefault(str(f.get("host_id", "")), []).append(f)
    return {h: host_risk(h, fs) for h, fs in grouped.items()}


def fleet_risk(
    hosts: Sequence[HostRecord] | Sequence[str], findings: Sequence[Mapping[str, Any]]
) -> tuple[FleetRisk, dict[str, HostRisk]]:
    """The fleet summary and each host's risk, from the host list and all findings."""
    ids = [h if isinstance(h, str) else h.host_id for h in hosts]
    per_host = hosts_risk(ids, findings)
    scores = [r.score for r in per_host.values()]
    by_kind = Counter(str(f.get("kind", "")) for f in findings)
    by_severity = Counter(str(f.get("severity", "")) for f in findings)
    by_level = Counter(r.level for r in per_host.values())
    max_score = max(scores, default=0.0)
    summary = FleetRisk(
        hosts=len(per_host),
        hosts_at_risk=sum(1 for r in per_host.values() if level_at_least(r.level, AT_RISK_LEVEL)),
        mean_score=round(sum(scores) / len(scores), 1) if scores else 0.0,
        max_score=max_score,
        level=level_for(max_score),
        findings=len(findings),
        unapproved=sum(r.unapproved for r in per_host.values()),
        findings_by_kind={k: by_kind[k] for k in codec.KIND_NAMES if by_kind[k]},
        findings_by_severity={s: by_severity[s] for s in reversed(codec.SEVERITY_NAMES) if by_severity[s]},
        hosts_by_level={lv: by_level[lv] for lv in LEVEL_ORDER},
    )
    return summary, per_host

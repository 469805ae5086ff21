"""The risk model (README, "Risk model"): what a finding adds, how scores, levels and reasons follow.

A finding adds weight[severity] x confidence x decay(age of its last_seen) points, nothing when
policy approves it. A host's (or user's) score is the sum over its findings, capped at 100; its
level follows from the score; its reasons count its unapproved findings by kind. The fleet's
score is its riskiest host's.

The database sums the points (`score_spec` hands it the weights and age buckets, see
`storage.reads.ScoreSpec`) and returns one row per host, kind, severity and approval; `fold`
turns those rows into scores here. `host_risk` and `fleet_risk` compute the same from finding dicts:
the executable statement of the model that the tests hold the SQL to.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from umbra import codec

from .storage.base import HostRecord
from .storage.reads import ScoreRow, ScoreSpec, TallyRow, seconds_to_ns

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
#: Age decay: (age up to, factor), youngest first; a finding last seen longer ago weighs STALE_FACTOR.
#: Recent activity is what needs action; a month-old finding still counts, half as much.
DAY = 86400.0
DECAY: tuple[tuple[float, float], ...] = ((7 * DAY, 1.0), (30 * DAY, 0.5), (90 * DAY, 0.25))
STALE_FACTOR = 0.0
MAX_SCORE = 100.0
#: How a reason names unapproved findings of a kind: (one, many). AGENT_HEALTH gives no reason.
REASONS: Mapping[str, tuple[str, str]] = {
    "LOCAL_MODEL_RUNTIME": ("unapproved local model runtime", "unapproved local model runtimes"),
    "MODEL_SERVER_EXPOSED": ("exposed model server", "exposed model servers"),
    "GPU_AI_WORKLOAD": ("unapproved GPU AI workload", "unapproved GPU AI workloads"),
    "FINE_TUNING": ("fine-tuning job", "fine-tuning jobs"),
    "MODEL_ARTIFACT": ("unapproved model file", "unapproved model files"),
    "MODEL_DOWNLOAD": ("model download", "model downloads"),
    "MODEL_EXFILTRATION": ("model exfiltration", "model exfiltrations"),
    "AI_SERVICE_ACCESS": ("unapproved AI service", "unapproved AI services"),
    "AI_DATA_UPLOAD": ("upload to an unapproved AI service", "uploads to unapproved AI services"),
    "AI_AGENT": ("unapproved AI agent", "unapproved AI agents"),
    "MCP_SERVER": ("unapproved MCP server", "unapproved MCP servers"),
    "AI_EXTENSION": ("unapproved AI extension", "unapproved AI extensions"),
}
#: What an MCP server can reach that gets a reason of its own, riskiest first (the agent's catalog
#: scores these kinds of access higher: agent/catalog/aitools.toml, [risk] risky_access).
MCP_ACCESS_REASONS: tuple[str, ...] = ("shell", "database", "filesystem", "remote")
#: (lowest score, level), highest first; a score of 0 is "none".
LEVELS: tuple[tuple[float, str], ...] = ((70.0, "critical"), (40.0, "high"), (15.0, "medium"), (0.0, "low"))
LEVEL_ORDER: tuple[str, ...] = ("none", "low", "medium", "high", "critical")
#: A host counts as "at risk" from this level up: a lone low finding is noise, not risk.
AT_RISK_LEVEL = "medium"


@dataclass(frozen=True)
class HostRisk:
    """The risk of one host (or one user: host_id is then the user name)."""

    host_id: str
    score: float
    level: str
    unapproved: int  # unapproved findings that were scored
    by_severity: dict[str, int] = field(default_factory=dict)  # unapproved, by severity
    reasons: tuple[str, ...] = ()  # "3 unapproved AI services", the weightiest first
    findings: int = 0  # all its findings, approved or not

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


def decay_factor(age: float) -> float:
    """The weight of a finding last seen `age` seconds ago."""
    for bound, factor in DECAY:
        if age <= bound:
            return factor
    return STALE_FACTOR


def finding_points(finding: Mapping[str, Any], now: float | None = None) -> float:
    """What one finding dict adds to its host's score: 0 when approved. With `now`, its last_seen
    (ISO 8601, as finding dicts carry it) ages it; without, it counts as fresh."""
    if finding.get("policy", {}).get("approved", False):
        return 0.0
    weight = SEVERITY_WEIGHTS.get(str(finding.get("severity", "")), 0.0)
    confidence = min(max(float(finding.get("confidence", 0.0)), 0.0), 1.0)
    last_seen = finding.get("last_seen")
    if now is not None and isinstance(last_seen, str) and last_seen:
        weight *= decay_factor(now - datetime.fromisoformat(last_seen.replace("Z", "+00:00")).timestamp())
    return weight * confidence


def score_spec(now: float) -> ScoreSpec:
    """The model as the database computes it: weights by wire severity, age buckets as last_seen bounds.

    A bound is "last_seen >= now - age", so a finding exactly `age` old is still in the bucket,
    as `decay_factor` has it."""
    weights = tuple(
        (int(codec.severity_value(name)), w)
        for name, w in SEVERITY_WEIGHTS.items()
        if name in codec.SEVERITY_NAMES
    )
    decay = tuple((seconds_to_ns(now - age), factor) for age, factor in DECAY)
    return ScoreSpec(weights, decay, STALE_FACTOR, seconds_to_ns(now))


def reasons_for(points_by_kind: Mapping[str, float], count_by_kind: Mapping[str, int]) -> tuple[str, ...]:
    """ "3 unapproved AI services", one per kind whose unapproved findings add points, weightiest first."""
    ranked = sorted(
        (k for k, p in points_by_kind.items() if p > 0 and k in REASONS),
        key=lambda k: (-points_by_kind[k], codec.KIND_NAMES.index(k)),
    )
    out = []
    for kind in ranked:
        n = count_by_kind.get(kind, 0)
        one, many = REASONS[kind]
        out.append(f"{n} {one if n == 1 else many}")
    return tuple(out)


def mcp_access_reasons(findings: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    """ "2 MCP servers with shell access", "1 remote MCP server": what the unapproved MCP_SERVER
    finding dicts (a host's) say their servers can reach, riskiest access first."""
    counts: Counter[str] = Counter()
    for f in findings:
        if f.get("kind") != "MCP_SERVER" or f.get("policy", {}).get("approved", False):
            continue
        reach: set[str] = {
            a for ev in f.get("evidence", []) if ev.get("type") == "mcp_server" for a in ev.get("access", [])
        }
        counts.update(reach & set(MCP_ACCESS_REASONS))
    out = []
    for access in MCP_ACCESS_REASONS:
        n = counts[access]
        if n:
            servers = "MCP server" if n == 1 else "MCP servers"
            out.append(
                f"{n} remote {servers}" if access == "remote" else f"{n} {servers} with {access} access"
            )
    return tuple(out)


def fold(rows: Iterable[TallyRow], keys: Iterable[str] = ()) -> dict[str, HostRisk]:
    """Tally rows (one per key, kind, severity, approval) -> each key's risk; `keys` without rows
    score 0. The rows are few (keys x kinds x severities), never one per finding, but a fleet has
    tens of thousands: plain dicts, each made once per key."""
    points: dict[str, float] = {k: 0.0 for k in keys}
    total: dict[str, int] = {}
    unapproved: dict[str, int] = {}
    by_severity: dict[str, dict[str, int]] = {}
    kind_points: dict[str, dict[str, float]] = {}
    kind_count: dict[str, dict[str, int]] = {}
    for r in rows:
        key, n = r.key, r.findings
        points[key] = points.get(key, 0.0) + r.points
        total[key] = total.get(key, 0) + n
        if r.approved:
            continue
        unapproved[key] = unapproved.get(key, 0) + n
        sev = by_severity.get(key)
        if sev is None:
            sev = by_severity[key] = {}
            kind_points[key], kind_count[key] = {}, {}
        sev[r.severity] = sev.get(r.severity, 0) + n
        kp, kc = kind_points[key], kind_count[key]
        kp[r.kind] = kp.get(r.kind, 0.0) + r.points
        kc[r.kind] = kc.get(r.kind, 0) + n
    out = {}
    severities = tuple(reversed(codec.SEVERITY_NAMES))
    for key, summed in points.items():
        score = score_of(summed)
        sev = by_severity.get(key, {})
        out[key] = HostRisk(
            key,
            score,
            level_for(score),
            unapproved.get(key, 0),
            {s: sev[s] for s in severities if sev.get(s)},
            reasons_for(kind_points.get(key, {}), kind_count.get(key, {})),
            total.get(key, 0),
        )
    return out


def score_of(points: float) -> float:
    """A host's (or user's) score from the sum of its findings' points."""
    return round(min(points, MAX_SCORE), 1)


def fold_scores(rows: Iterable[ScoreRow], keys: Iterable[str] = ()) -> dict[str, HostRisk]:
    """Per-key sums (`Store.scores`) -> each key's score, level and counts, without the reasons and
    severities that `fold` adds from the full tally rows; `keys` without rows score 0."""
    out = {k: HostRisk(k, 0.0, level_for(0.0), 0) for k in keys}
    for r in rows:
        score = score_of(r.points)
        out[r.key] = HostRisk(r.key, score, level_for(score), r.unapproved, findings=r.findings)
    return out


def fleet_summary(host_ids: Sequence[str], rows: Sequence[TallyRow]) -> tuple[FleetRisk, dict[str, HostRisk]]:
    """The fleet summary and each host's risk from the hosts' tally rows (see `fold`)."""
    per_host = fold(rows, host_ids)
    return fleet_of(per_host, rows), per_host


def fleet_of(per_host: Mapping[str, HostRisk], rows: Iterable[TallyRow]) -> FleetRisk:
    """The fleet summary from every host's risk and tally rows of the hosts (per host, or summed
    over the fleet as `Store.tally_totals` gives them: only kinds, severities and counts are read)."""
    by_kind: Counter[str] = Counter()
    by_severity: Counter[str] = Counter()
    for r in rows:
        by_kind[r.kind] += r.findings
        by_severity[r.severity] += r.findings
    return _summary(per_host, by_kind, by_severity)


def _summary(per_host: Mapping[str, HostRisk], by_kind: Counter[str], by_severity: Counter[str]) -> FleetRisk:
    scores = [r.score for r in per_host.values()]
    by_level = Counter(r.level for r in per_host.values())
    max_score = max(scores, default=0.0)
    return FleetRisk(
        hosts=len(per_host),
        hosts_at_risk=sum(1 for r in per_host.values() if level_at_least(r.level, AT_RISK_LEVEL)),
        mean_score=round(sum(scores) / len(scores), 1) if scores else 0.0,
        max_score=max_score,
        level=level_for(max_score),
        findings=sum(by_kind.values()),
        unapproved=sum(r.unapproved for r in per_host.values()),
        findings_by_kind={k: by_kind[k] for k in codec.KIND_NAMES if by_kind[k]},
        findings_by_severity={s: by_severity[s] for s in reversed(codec.SEVERITY_NAMES) if by_severity[s]},
        hosts_by_level={lv: by_level[lv] for lv in LEVEL_ORDER},
    )


def level_for(score: float) -> str:
    if score <= 0.0:
        return "none"
    for floor, level in LEVELS:
        if score >= floor:
            return level
    return "low"


def level_at_least(level: str, floor: str) -> bool:
    return LEVEL_ORDER.index(level) >= LEVEL_ORDER.index(floor)


def host_risk(
    host_id: str, findings: Iterable[Mapping[str, Any]], now: float | None = None, key: str = "host_id"
) -> HostRisk:
    """Score one host from its findings (other hosts' findings are ignored); `key="user"` scores a user."""
    total = 0.0
    unapproved = seen = 0
    by_severity: Counter[str] = Counter()
    kind_points: dict[str, float] = {}
    kind_count: Counter[str] = Counter()
    for f in findings:
        if f.get(key) != host_id:
            continue
        seen += 1
        if f.get("policy", {}).get("approved", False):
            continue
        unapproved += 1
        by_severity[str(f.get("severity", ""))] += 1
        points = finding_points(f, now)
        total += points
        kind_points[str(f.get("kind", ""))] = kind_points.get(str(f.get("kind", "")), 0.0) + points
        kind_count[str(f.get("kind", ""))] += 1
    score = round(min(total, MAX_SCORE), 1)
    return HostRisk(
        host_id,
        score,
        level_for(score),
        unapproved,
        dict(by_severity),
        reasons_for(kind_points, kind_count),
        seen,
    )


def hosts_risk(
    host_ids: Iterable[str], findings: Iterable[Mapping[str, Any]], now: float | None = None
) -> dict[str, HostRisk]:
    """Score many hosts in one pass; hosts without findings score 0. Finding hosts not listed are added."""
    grouped: dict[str, list[Mapping[str, Any]]] = {h: [] for h in host_ids}
    for f in findings:
        grouped.setdefault(str(f.get("host_id", "")), []).append(f)
    return {h: host_risk(h, fs, now) for h, fs in grouped.items()}


def fleet_risk(
    hosts: Sequence[HostRecord] | Sequence[str], findings: Sequence[Mapping[str, Any]]
) -> tuple[FleetRisk, dict[str, HostRisk]]:
    """The fleet summary and each host's risk, from the host list and all findings (the reference
    the SQL path is tested against; the collector itself uses `fleet_summary`)."""
    ids = [h if isinstance(h, str) else h.host_id for h in hosts]
    per_host = hosts_risk(ids, findings)
    by_kind = Counter(str(f.get("kind", "")) for f in findings)
    by_severity = Counter(str(f.get("severity", "")) for f in findings)
    return _summary(per_host, by_kind, by_severity), per_host

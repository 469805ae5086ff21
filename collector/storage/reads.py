"""What the store's read side takes and returns: filters, cursors and aggregate rows.

Plain data, no backend types. Aggregates are grouped in the database (one row per host and kind,
per service, per weights hash...), never one row per finding, so a fleet view costs the same
memory at ten million findings as at ten. The SQL fragments every backend shares (the risk points
of one finding, the keyset condition) are built here from placeholders the backend names, so the
SQLite and PostgreSQL backends compute the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

#: What an aggregate groups findings by: the host they were seen on, or the user they belong to.
GroupBy = Literal["host", "user"]

_NS = 1_000_000_000


@dataclass(frozen=True)
class FindingFilter:
    """Which findings a listing or export wants; every field narrows (None or () means any).

    Kinds and severities are wire enum values. Times are Unix seconds on last_seen:
    `since <= last_seen < until`.
    """

    kinds: tuple[int, ...] = ()
    severities: tuple[int, ...] = ()
    host_id: str | None = None
    user: str | None = None
    service: str | None = None  # AI service host name (DNS or SNI)
    vendor: str | None = None
    runtime: str | None = None  # catalog id, e.g. "ollama"
    sha256: str | None = None
    approved: bool | None = None
    since: float | None = None
    until: float | None = None


@dataclass(frozen=True)
class FindingCursor:
    """Where a page ended: the last finding's (last_seen ns, host id, id), the keyset order."""

    last_seen_ns: int
    host_id: str
    id: str


@dataclass(frozen=True)
class FindingPage:
    """Findings as `codec.finding_to_dict` dicts, newest last_seen first; `next` is None on the last page."""

    findings: list[dict[str, Any]]
    next: FindingCursor | None


@dataclass(frozen=True)
class ScoreSpec:
    """How one finding's risk points are computed, handed to the database (see collector.risk).

    points = weight[severity] x confidence x decay(age of last_seen), 0 when approved.
    `decay` is (newest last_seen in Unix nanoseconds, factor) pairs, newest bound first; a finding
    older than every bound weighs `stale_factor`.
    """

    weights: tuple[tuple[int, float], ...]
    decay: tuple[tuple[int, float], ...]
    stale_factor: float = 0.0
    #: The time the bounds are counted back from (Unix ns); 0 when unknown. Summaries kept in the
    #: database are reused for another spec only while no finding changes age bucket between the two.
    as_of: int = 0

    def points_sql(self, placeholder: str = "?") -> tuple[str, list[Any]]:
        """The portable SQL expression of one finding's points (columns severity, confidence,
        approved, last_seen), with its parameters in order."""
        params: list[Any] = []
        weight = ["CASE severity"]
        for severity, points in self.weights:
            weight.append(f"WHEN {placeholder} THEN {placeholder}")
            params += [severity, points]
        weight.append("ELSE 0.0 END")
        decay = ["CASE"]
        for bound, factor in self.decay:
            decay.append(f"WHEN last_seen >= {placeholder} THEN {placeholder}")
            params += [bound, factor]
        decay.append(f"ELSE {placeholder} END")
        params.append(self.stale_factor)
        product = f"({' '.join(weight)}) * confidence * ({' '.join(decay)})"
        sql = f"CASE WHEN approved = 0 THEN {product} ELSE 0.0 END"
        return sql, params


def keyset_sql(cursor: FindingCursor, placeholder: str = "?") -> tuple[str, list[Any]]:
    """The condition "after `cursor`" in the order last_seen DESC, host_id DESC, id DESC (portable SQL)."""
    p = placeholder
    sql = f"(last_seen < {p} OR (last_seen = {p} AND (host_id < {p} OR (host_id = {p} AND id < {p}))))"
    return sql, [cursor.last_seen_ns, cursor.last_seen_ns, cursor.host_id, cursor.host_id, cursor.id]


#: The listing orders: findings_page's keyset order, and `Store.findings`'.
PAGE_ORDER = "last_seen DESC, host_id DESC, id DESC"
LIST_ORDER = "last_seen DESC, host_id, id"
#: Findings of the kinds a listing filters on, up to which they count as rare (see kinds_listing).
RARE_KINDS = 10_000


def rare_kinds_sql(kinds: Sequence[int], placeholder: str = "?") -> tuple[str, list[Any]]:
    """How many findings `kinds` have, counted up to RARE_KINDS: one range of an index led by kind."""
    p = placeholder
    sql = f"SELECT count(*) FROM (SELECT 1 FROM findings WHERE kind IN {in_list(kinds, p)} LIMIT {p}) AS c"
    return sql, [*(int(k) for k in kinds), RARE_KINDS]


def kinds_listing(
    columns: str,
    kinds: Sequence[int],
    rare: bool,
    clauses: Sequence[str],
    order: str,
    placeholder: str = "?",
) -> str:
    """A listing of some kinds, newest first, with its plan chosen by how many findings they have
    (rare_kinds_sql); its parameters are the kinds, then those of `clauses`, then the limit.

    Rare kinds: all their findings (an index range led by kind) sorted, at most RARE_KINDS rows.
    Common kinds: a walk of the index led by last_seen, which meets them every few entries; `+kind`
    keeps the planner off the kind index, which would sort every finding of the kind (a million at
    ten million findings: 1.1 s). A planner left alone picks one of the two whatever the counts."""
    p = placeholder
    kind = f"kind IN {in_list(kinds, p)}" if rare else f"+kind IN {in_list(kinds, p)}"
    select = f"SELECT {columns} FROM findings WHERE {' AND '.join([kind, *clauses])}"
    if rare:
        return f"WITH k AS MATERIALIZED ({select}) SELECT * FROM k ORDER BY {order} LIMIT {p}"
    return f"{select} ORDER BY {order} LIMIT {p}"


def seconds_to_ns(seconds: float) -> int:
    return int(seconds * _NS)


@dataclass(frozen=True)
class TallyRow:
    """Findings of one host (or user), kind, severity and approval: how many, and their risk points."""

    key: str
    kind: str
    severity: str
    approved: bool
    findings: int
    points: float


@dataclass(frozen=True)
class ScoreRow:
    """One host's (or user's) tally rows summed: all its findings, the unapproved ones, and their
    risk points (uncapped). Enough for a score and a level, not for reasons (see TallyRow)."""

    key: str
    findings: int
    unapproved: int
    points: float


@dataclass(frozen=True)
class ServiceRow:
    """One AI service (host name) across the fleet."""

    service: str
    vendor: str
    hosts: int
    processes: int  # distinct process names
    bytes_out: int
    findings: int
    unapproved: int  # findings not approved by policy
    last_seen: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RuntimeRow:
    """One local model runtime (catalog id) across the fleet."""

    runtime: str
    hosts: int
    exposed_hosts: int  # hosts where it listens beyond loopback (MODEL_SERVER_EXPOSED)
    findings: int
    unapproved: int
    last_seen: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ActivityRow:
    """Findings of some kinds on one host: how many, unapproved, bytes, last seen."""

    host_id: str
    kind: str
    findings: int
    unapproved: int
    bytes: int
    last_seen: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelHolder:
    host_id: str
    path: str
    approved: bool


@dataclass(frozen=True)
class ModelRow:
    """One distinct model-weights file (by SHA-256) across the fleet, from MODEL_ARTIFACT findings."""

    sha256: str
    format: str
    architecture: str
    parameters: int
    size_bytes: int
    hosts: int
    unapproved_hosts: int  # hosts where policy does not approve it
    copies: int
    last_seen: float
    holders: tuple[ModelHolder, ...] = field(default=())  # a sample, at most `holders` of the call

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SnapshotScope = Literal["host", "user", "fleet"]


@dataclass(frozen=True)
class SnapshotRow:
    """A day's risk of one host, user, or the fleet (key ""), kept for trends."""

    day: str  # YYYY-MM-DD, UTC
    scope: SnapshotScope
    key: str
    score: float
    level: str
    findings: int
    unapproved: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def in_list(values: Sequence[Any], placeholder: str = "?") -> str:
    """ "(?, ?, ?)" for an IN list (never empty: callers check)."""
    return "(" + ", ".join([placeholder] * len(values)) + ")"


def filter_sql(where: FindingFilter, placeholder: str = "?") -> tuple[list[str], list[Any]]:
    """A FindingFilter as portable SQL conditions on the findings columns, with their parameters."""
    p = placeholder
    clauses: list[str] = []
    params: list[Any] = []
    if where.kinds:
        clauses.append(f"kind IN {in_list(where.kinds, p)}")
        params += [int(k) for k in where.kinds]
    if where.severities:
        clauses.append(f"severity IN {in_list(where.severities, p)}")
        params += [int(s) for s in where.severities]
    for column, value in (
        ("host_id", where.host_id),
        ("user_name", where.user),
        ("service", where.service),
        ("vendor", where.vendor),
        ("runtime", where.runtime),
        ("sha256", where.sha256),
    ):
        if value is not None:
            clauses.append(f"{column} = {p}")
            params.append(value)
    if where.approved is not None:
        clauses.append(f"approved = {p}")
        params.append(1 if where.approved else 0)
    if where.since is not None:
        clauses.append(f"last_seen >= {p}")
        params.append(seconds_to_ns(where.since))
    if where.until is not None:
        clauses.append(f"last_seen < {p}")
        params.append(seconds_to_ns(where.until))
    return clauses, params

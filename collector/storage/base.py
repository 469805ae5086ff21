"""The storage interface every collector backend implements (SQLite, PostgreSQL), and the row
preparation they share.

The contract, which `tests/collector/contract/storage_contract.py` (writes and plain reads) and
`tests/collector/contract/query_contract.py` (the read side's aggregates) check against every backend:

* `store_batch` is one transaction and idempotent by finding id: replaying a batch adds no row
  and changes nothing. For an id already stored, first_seen only moves earlier, last_seen and
  count only grow, and the body (severity, evidence, policy, summary...) is replaced only by a
  version whose last_seen is strictly newer. The host's highest stored batch sequence is
  recorded in the same transaction, so an Ack sent after it returns means "durable".
* Reads return plain data (`HostRecord`, finding dicts in `umbra.codec.finding_to_dict` shape,
  the aggregate rows of `reads`) so the query layer never touches a backend's types.
* Aggregates are computed in the database: no read loads every finding.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, NamedTuple, NoReturn

from google.protobuf.timestamp_pb2 import Timestamp
from umbra import codec
from umbra.v1 import agent_pb2, finding_pb2

from .reads import (
    LIST_ORDER,
    PAGE_ORDER,
    ActivityRow,
    FindingCursor,
    FindingFilter,
    FindingPage,
    GroupBy,
    ModelHolder,
    ModelRow,
    RuntimeRow,
    ScoreRow,
    ScoreSpec,
    ServiceRow,
    SnapshotRow,
    SnapshotScope,
    TallyRow,
    filter_sql,
    in_list,
    kinds_listing,
)

#: Largest value an SQL BIGINT holds; wire uint64 values above it are refused or clamped.
MAX_INT64 = 2**63 - 1
#: Finding ids are hashes or short keys; anything longer is a broken agent.
MAX_ID_LENGTH = 512
MAX_HOST_ID_LENGTH = 256

KNOWN_KINDS = frozenset(v for v in finding_pb2.FindingKind.values() if v != finding_pb2.KIND_UNSPECIFIED)
_KNOWN_KINDS = KNOWN_KINDS
_KNOWN_SEVERITIES = frozenset(finding_pb2.Severity.values())


class StoreError(RuntimeError):
    """A backend could not do what was asked (cannot open, corrupt, closed...)."""


class InvalidBatch(ValueError):
    """A batch (or inventory) that can never be stored as sent; the server answers INVALID_ARGUMENT."""


@dataclass(frozen=True)
class StoreResult:
    """What one `store_batch` call did."""

    new: int = 0  # ids not stored before
    updated: int = 0  # stored ids whose row changed
    unchanged: int = 0  # stored ids the batch added nothing to (e.g. a replay)

    @property
    def total(self) -> int:
        return self.new + self.updated + self.unchanged


@dataclass(frozen=True)
class SensorRecord:
    name: str
    state: str  # "active", "degraded", "inactive", "unspecified"
    reason: str = ""


@dataclass(frozen=True)
class HostRecord:
    """One host as the collector knows it. Times are Unix seconds, 0.0 when unknown."""

    host_id: str
    hostname: str = ""
    os: str = ""
    os_release: str = ""
    architecture: str = ""
    agent_version: str = ""
    policy_version: int = 0
    peer: str = ""
    sensors: tuple[SensorRecord, ...] = ()
    first_seen: float = 0.0  # first contact
    last_seen: float = 0.0  # last contact (hello, batch or heartbeat)
    last_sequence: int = 0  # highest batch sequence stored
    last_heartbeat: float = 0.0
    agent_cpu_percent: float = 0.0
    agent_rss_bytes: int = 0
    spool_depth: int = 0
    dropped_total: int = 0
    capture_drops: int = 0  # packets the agent's network capture lost (its Heartbeat)
    findings_total: int = 0
    findings_unapproved: int = 0
    findings_by_severity: dict[str, int] = field(default_factory=dict)
    silent_since: float = 0.0  # when the collector marked the host silent; 0.0 while it reports

    @property
    def sensors_active(self) -> int:
        return sum(1 for s in self.sensors if s.state == "active")

    def to_dict(self) -> dict[str, Any]:
        """asdict's shape, built shallow: asdict deep-copies every field, half the time of a fleet
        document of 1,000 hosts."""
        out = {f.name: getattr(self, f.name) for f in _HOST_FIELDS}
        out["sensors"] = tuple(asdict(s) for s in self.sensors)
        out["findings_by_severity"] = dict(self.findings_by_severity)
        return out


_HOST_FIELDS = fields(HostRecord)


@dataclass(frozen=True)
class TokenRecord:
    """An enrollment token as stored: its hash, never the token itself."""

    token_hash: str
    created_at: float
    expires_at: float
    uses_left: int
    uses: int
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AgentRecord:
    """An enrolled agent: the host id its certificate carries, and its last certificate."""

    host_id: str
    enrolled_at: float
    renewed_at: float
    serial: str  # hex
    not_after: float
    hostname: str = ""
    revoked_at: float = 0.0  # 0.0: not revoked

    @property
    def revoked(self) -> bool:
        return self.revoked_at > 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "revoked": self.revoked}


@dataclass(frozen=True)
class PolicyRecord:
    """A policy version: `body` is the validated document (see collector.policy)."""

    version: int
    created_at: float
    body: dict[str, Any]


#: Console roles: a viewer reads, an admin also changes the policy and enrollment.
ROLES = ("admin", "viewer")


def check_role(role: str) -> None:
    """The backends' guard before storing a role: ValueError for one not in ROLES."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: {' or '.join(ROLES)}")


@dataclass(frozen=True)
class UserRecord:
    """A console user: the password's KDF string (see collector.console.auth), never the password."""

    name: str
    role: str
    password_hash: str
    created_at: float


@dataclass(frozen=True)
class ApiKeyRecord:
    """A bearer key for the JSON API: its public id and role; only the key's hash is stored."""

    key_id: str
    role: str
    created_at: float
    note: str = ""


@dataclass(frozen=True)
class SessionRecord:
    """A console login session, with its user's current role and the CSRF token of its forms."""

    user: str
    role: str
    csrf: str
    expires_at: float


@dataclass(frozen=True)
class InventoryRecord:
    """A host's newest inventory: the model files on its disks and the runtimes it reported, as
    `umbra.codec.message_to_dict` dicts. Times are Unix seconds."""

    host_id: str
    taken_at: float  # when the agent took it
    received_at: float
    models: list[dict[str, Any]]
    runtimes: list[dict[str, Any]]
    # the AI tooling sensor's last pass: agents installed, MCP servers configured, AI extensions
    ai_agents: list[dict[str, Any]] = field(default_factory=list)
    mcp_servers: list[dict[str, Any]] = field(default_factory=list)
    ai_extensions: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HostContact:
    """What silence detection reads for one host."""

    host_id: str
    last_seen: float
    silent_since: float


#: One finding as every backend stores it, a plain tuple (ingest builds a million a minute):
#: (host_id, id, kind, severity, confidence, approved, first_seen, last_seen, count, data,
#:  user_name, process_name, runtime, service, vendor, nbytes, sha256, model_format, model_arch,
#:  model_params, path).
#: The merge rule reads first_seen/last_seen/count (Unix nanoseconds), queries filter and sort on
#: the columns, and `data` is the serialized Finding (summary, evidence, process, policy...). The
#: columns after `data` are evidence facts the fleet aggregates group on (see `evidence_facts`),
#: copied out of the body once at ingest so no read ever has to parse a blob.
FindingRow = tuple[
    str,
    str,
    int,
    int,
    float,
    int,
    int,
    int,
    int,
    bytes,
    str,
    str,
    str,
    str,
    str,
    int,
    str,
    str,
    str,
    int,
    str,
]
#: Index of the first evidence fact in a FindingRow.
FACTS_AT = 10
#: Longest text an evidence-fact column keeps (the body keeps the whole value); indexes stay small.
MAX_FACT_LENGTH = 1024

EvidenceFacts = tuple[str, str, str, str, str, int, str, str, str, int, str]


@dataclass
class PreparedBatch:
    """A validated batch: its findings as rows, one per distinct id (see `finding_rows`)."""

    host_id: str
    sequence: int
    rows: list[FindingRow]

    @property
    def size(self) -> int:
        return len(self.rows)


class TokenRefused(Exception):
    """An enrollment token that is unknown, expired or used up (the reason is for the log only)."""


def sensor_state_name(state: int) -> str:
    """SensorState value -> "active"; unknown values (a newer agent) read as "unspecified"."""
    try:
        name = agent_pb2.SensorState.Name(state)  # type: ignore[arg-type]
    except ValueError:
        return "unspecified"
    return name.removeprefix("SENSOR_STATE_").lower()


def sensor_records(sensors: Sequence[agent_pb2.SensorStatus]) -> tuple[SensorRecord, ...]:
    return tuple(SensorRecord(s.name, sensor_state_name(s.state), s.reason) for s in sensors)


def validate_host_id(host_id: str) -> None:
    if not host_id or len(host_id) > MAX_HOST_ID_LENGTH or not host_id.isprintable():
        raise InvalidBatch(
            f"bad host id {host_id[:40]!r}: must be 1..{MAX_HOST_ID_LENGTH} printable characters"
        )


_NS = 1_000_000_000
#: Times are stored as signed 64-bit Unix nanoseconds: 1677-09-21 .. 2262-04-11.
_MIN_SECONDS, _MAX_SECONDS = -9_223_372_036, 9_223_372_035


def finding_rows(host_id: str, sequence: int, findings: Sequence[finding_pb2.Finding]) -> list[FindingRow]:
    """Validate a batch and turn it into rows, before any write: the one ingest path of every backend.

    Normalising here (not in each backend) keeps every backend's rows identical: host_id is the
    stream's identity (also in the serialized body), a missing first_seen is last_seen, a zero
    count is 1, counts fit BIGINT, and an id sent twice in one batch is merged by the store's rule.
    Raises InvalidBatch naming the first bad finding; nothing is written then.
    """
    validate_host_id(host_id)
    if not 0 <= sequence <= MAX_INT64:
        raise InvalidBatch(f"batch sequence {sequence} out of range")
    # The hot path of ingest. Every attribute read of a protobuf message costs about a quarter of
    # a microsecond, so each field is read once, and the message is touched again only for a
    # finding that fails a plain check. A NaN confidence fails the range check too.
    kinds, severities = _KNOWN_KINDS, _KNOWN_SEVERITIES
    rows: list[FindingRow] = []
    ids: set[str] = set()
    for index, f in enumerate(findings):
        fid, kind, severity, confidence = f.id, f.kind, f.severity, f.confidence
        if (
            not fid
            or len(fid) > MAX_ID_LENGTH
            or kind not in kinds
            or severity not in severities
            or not 0.0 <= confidence <= 1.0
        ):
            _refuse_finding(index, f)
        first, last = f.first_seen, f.last_seen
        # stored_time's check, inlined: this loop runs for every finding of every batch.
        first_s, first_n, last_s, last_n = first.seconds, first.nanos, last.seconds, last.nanos
        if not (
            _MIN_SECONDS <= first_s <= _MAX_SECONDS
            and _MIN_SECONDS <= last_s <= _MAX_SECONDS
            and 0 <= first_n < _NS
            and 0 <= last_n < _NS
        ):
            raise InvalidBatch(
                f"finding {index} (id {fid[:40]!r}): first_seen or last_seen outside 1677..2262 or bad nanos"
            )
        first_ns, last_ns = first_s * _NS + first_n, last_s * _NS + last_n
        if not (first_ns and last_ns):  # zero: unset, or set to the epoch itself
            has_first, has_last = f.HasField("first_seen"), f.HasField("last_seen")
            if not has_last and not has_first:
                raise InvalidBatch(f"finding {index} (id {fid[:40]!r}): neither first_seen nor last_seen set")
            if not has_last:
                last.CopyFrom(first)
                last_ns = first_ns
            elif not has_first:
                first.CopyFrom(last)
                first_ns = last_ns
        count = f.count
        if count == 0 or count > MAX_INT64:
            count = 1 if count == 0 else MAX_INT64
            f.count = count
        f.host_id = host_id
        approved, data = 1 if f.policy.approved else 0, f.SerializeToString()
        ids.add(fid)
        rows.append(
            (
                host_id,
                fid,
                kind,
                severity,
                confidence,
                approved,
                first_ns,
                last_ns,
                count,
                data,
                *evidence_facts(f),
            )
        )
    return rows if len(ids) == len(rows) else _merge_duplicates(rows)


def evidence_facts(f: finding_pb2.Finding) -> EvidenceFacts:
    """The facts fleet views group on, from a finding's first evidence of each type:
    (user, process name, runtime id, service host name, vendor, bytes, sha256, model format,
    architecture, parameters, path). Bytes are the bytes sent to a service, or a transfer's or
    model file's size; the user is the finding's, else its process's."""
    # Ingest's hot path after the checks (see finding_rows): one WhichOneof per evidence, only the
    # fields of its type, and one length sum instead of capping each text.
    runtime = service = vendor = sha256 = fmt = arch = path = ""
    nbytes = params = 0
    evidence = f.evidence
    for i in range(len(evidence)):
        ev = evidence[i]
        which = ev.WhichOneof("detail")
        if which == "network":
            if not service:
                n = ev.network
                service, vendor, nbytes = n.host_name, n.vendor, n.bytes_out or nbytes
        elif which == "runtime":
            if not runtime:
                runtime = ev.runtime.runtime_id
        elif which == "model_file":
            if not sha256 or not fmt:
                m = ev.model_file
                sha256, fmt, arch, params = m.sha256 or sha256, m.format, m.architecture, m.parameter_count
                path, nbytes = path or m.path, nbytes or m.size_bytes
        elif which == "transfer":
            t = ev.transfer
            sha256, path, nbytes = sha256 or t.sha256, path or t.source_path, nbytes or t.size_bytes
    process = f.process
    user, name = f.user or process.username, process.name
    if (
        len(user) + len(name) + len(runtime) + len(service) + len(vendor) + len(sha256) + len(fmt)
        + len(arch) + len(path) > MAX_FACT_LENGTH
        or nbytes > MAX_INT64
        or params > MAX_INT64
    ):  # fmt: skip
        cap = MAX_FACT_LENGTH
        return (
            user[:cap],
            name[:cap],
            runtime[:cap],
            service[:cap],
            vendor[:cap],
            min(nbytes, MAX_INT64),
            sha256[:cap],
            fmt[:cap],
            arch[:cap],
            min(params, MAX_INT64),
            path[:cap],
        )
    return (user, name, runtime, service, vendor, nbytes, sha256, fmt, arch, params, path)


def stored_time(ts: Timestamp, what: str) -> int:
    """A time an agent sent (set) as stored: Unix nanoseconds; InvalidBatch when out of range."""
    if not (_MIN_SECONDS <= ts.seconds <= _MAX_SECONDS and 0 <= ts.nanos < _NS):
        raise InvalidBatch(f"{what} outside 1677..2262 or bad nanos")
    return ts.seconds * _NS + ts.nanos


def inventory_time(inventory: agent_pb2.Inventory) -> int:
    """An Inventory's taken_at in Unix nanoseconds; InvalidBatch when unset or out of range."""
    if not inventory.HasField("taken_at"):
        raise InvalidBatch("inventory without taken_at")
    return stored_time(inventory.taken_at, "inventory taken_at")


def ns(seconds: float) -> int:
    """Unix seconds -> the stored Unix nanoseconds."""
    return int(seconds * _NS)


def clamp(value: int) -> int:
    """A wire uint64 as a BIGINT: values above its range are clamped."""
    return min(value, MAX_INT64)


def sensors_json(sensors: Sequence[agent_pb2.SensorStatus]) -> str:
    """Sensors as every backend stores them: a JSON list of {name, state, reason}."""
    return json.dumps(
        [{"name": s.name, "state": s.state, "reason": s.reason} for s in sensor_records(sensors)]
    )


def sensors_from_json(text: str) -> tuple[SensorRecord, ...]:
    return tuple(SensorRecord(s["name"], s["state"], s["reason"]) for s in json.loads(text))


class HelloRow(NamedTuple):
    """A host's facts from its Hello, as every backend stores them (contact times are the store's)."""

    host_id: str
    hostname: str
    os: str
    os_release: str
    architecture: str
    agent_version: str
    policy_version: int
    peer: str
    sensors: str  # sensors_json
    hello: bytes


def hello_row(host_id: str, hello: agent_pb2.Hello, peer: str) -> HelloRow:
    h = hello.host
    return HelloRow(
        host_id,
        h.hostname,
        h.os,
        h.os_release,
        h.architecture,
        hello.agent_version,
        clamp(hello.policy_version),
        peer,
        sensors_json(hello.sensors),
        hello.SerializeToString(),
    )


def described_hosts(rows: Sequence[HelloRow]) -> str:
    """Hosts for an error message: "host 'a'", or "3 hosts ('a', 'b', ...)"."""
    if len(rows) == 1:
        return f"host {rows[0].host_id!r}"
    named = ", ".join(repr(r.host_id) for r in rows[:2])
    return f"{len(rows)} hosts ({named}{', ...' if len(rows) > 2 else ''})"


class HeartbeatRow(NamedTuple):
    """An agent's self-reported health; `sensors` None keeps the stored ones (none were sent)."""

    host_id: str
    sent_at: int  # Unix ns: the agent's own time, or the store's `now` when it sent none
    cpu_percent: float
    rss_bytes: int
    spool_depth: int
    dropped_total: int
    capture_drops: int
    sensors: str | None


def heartbeat_row(host_id: str, heartbeat: agent_pb2.Heartbeat, now_ns: int) -> HeartbeatRow:
    """Raises InvalidBatch when the heartbeat's sent_at cannot be stored."""
    sent = stored_time(heartbeat.sent_at, "heartbeat sent_at") if heartbeat.HasField("sent_at") else now_ns
    return HeartbeatRow(
        host_id,
        sent,
        heartbeat.cpu_percent,
        clamp(heartbeat.rss_bytes),
        clamp(heartbeat.spool_depth),
        clamp(heartbeat.dropped_total),
        clamp(heartbeat.capture_drops),
        sensors_json(heartbeat.sensors) if heartbeat.sensors else None,
    )


class InventoryRow(NamedTuple):
    host_id: str
    taken_at: int  # Unix ns
    models: int
    runtimes: int
    data: bytes  # the serialized Inventory


def inventory_row(host_id: str, inventory: agent_pb2.Inventory) -> InventoryRow:
    """Raises InvalidBatch for a bad host id or a taken_at that is unset or out of range."""
    validate_host_id(host_id)
    return InventoryRow(
        host_id,
        inventory_time(inventory),
        len(inventory.models),
        len(inventory.runtimes),
        inventory.SerializeToString(),
    )


def inventory_record(host_id: str, taken_ns: int, received_ns: int, data: bytes) -> InventoryRecord:
    inventory = agent_pb2.Inventory.FromString(data)
    return InventoryRecord(
        host_id,
        taken_ns / 1e9,
        received_ns / 1e9,
        [codec.message_to_dict(m) for m in inventory.models],
        [codec.message_to_dict(r) for r in inventory.runtimes],
        [codec.message_to_dict(a) for a in inventory.ai_agents],
        [codec.message_to_dict(m) for m in inventory.mcp_servers],
        [codec.message_to_dict(e) for e in inventory.ai_extensions],
    )


def finding_dict(host_id: str, first_ns: int, last_ns: int, count: int, data: bytes) -> dict[str, Any]:
    """A stored finding as `findings()` returns it: the body with the merged times and count."""
    f = finding_pb2.Finding.FromString(data)
    f.host_id = host_id
    f.first_seen.FromNanoseconds(first_ns)
    f.last_seen.FromNanoseconds(last_ns)
    f.count = count
    return codec.finding_to_dict(f)


def host_record(
    row: Sequence[Any], totals: dict[str, list[int]], by_severity: dict[str, dict[str, int]]
) -> HostRecord:
    """A HostRecord from the host columns `hosts()` selects (see either backend's query) and the
    finding counts of `severity_counts`."""
    host_id = row[0]
    total, unapproved = totals.get(host_id, [0, 0])
    return HostRecord(
        host_id=host_id,
        hostname=row[1],
        os=row[2],
        os_release=row[3],
        architecture=row[4],
        agent_version=row[5],
        policy_version=row[6],
        peer=row[7],
        sensors=sensors_from_json(row[8]),
        first_seen=row[9] / 1e9,
        last_seen=row[10] / 1e9,
        last_sequence=row[11],
        last_heartbeat=row[12] / 1e9,
        agent_cpu_percent=row[13],
        agent_rss_bytes=row[14],
        spool_depth=row[15],
        dropped_total=row[16],
        silent_since=row[17] / 1e9,
        capture_drops=row[18],
        findings_total=total,
        findings_unapproved=unapproved,
        findings_by_severity=by_severity.get(host_id, {}),
    )


def severity_counts(
    rows: Iterable[Sequence[Any]],
) -> tuple[dict[str, list[int]], dict[str, dict[str, int]]]:
    """(host_id, severity, count, unapproved) rows -> per-host [total, unapproved] and by severity.

    A (host, severity) may come in several rows (a query grouped finer, to follow an index); they add up."""
    totals: dict[str, list[int]] = {}
    by_severity: dict[str, dict[str, int]] = {}
    for host_id, severity, count, unapproved in rows:
        t = totals.setdefault(host_id, [0, 0])
        t[0] += int(count)
        t[1] += int(unapproved)
        counts = by_severity.setdefault(host_id, {})
        name = codec.severity_name(severity)
        counts[name] = counts.get(name, 0) + int(count)
    return totals, by_severity


def _merge_duplicates(rows: list[FindingRow]) -> list[FindingRow]:
    """One row per id, merged by the store's own rule, so counts stay exact: the body of the
    strictly newer version (the earlier one on a tie), the earliest first_seen, the largest count."""
    merged: dict[str, FindingRow] = {}
    for row in rows:
        seen = merged.get(row[1])
        if seen is None:
            merged[row[1]] = row
            continue
        body = row if row[7] > seen[7] else seen
        first_ns, count = min(row[6], seen[6]), max(row[8], seen[8])
        merged[row[1]] = (*body[:6], first_ns, body[7], count, *body[9:])
    return list(merged.values())


def _refuse_finding(index: int, f: finding_pb2.Finding) -> NoReturn:
    where = f"finding {index} (id {f.id[:40]!r})"
    if not f.id:
        raise InvalidBatch(f"finding {index} has no id")
    if len(f.id) > MAX_ID_LENGTH:
        raise InvalidBatch(f"{where}: id longer than {MAX_ID_LENGTH} characters")
    if f.kind not in _KNOWN_KINDS:
        raise InvalidBatch(f"{where}: unknown or unspecified kind {f.kind}")
    if f.severity not in _KNOWN_SEVERITIES:
        raise InvalidBatch(f"{where}: unknown severity {f.severity}")
    raise InvalidBatch(f"{where}: confidence {f.confidence} not in 0..1")


class Store(ABC):
    """A collector store. Implementations must be safe to call from several threads."""

    def upsert_host(self, host_id: str, hello: agent_pb2.Hello, peer: str) -> None:
        """Register a host (or refresh its facts) from its Hello; marks contact now."""
        self.upsert_hosts([hello_row(host_id, hello, peer)])

    @abstractmethod
    def upsert_hosts(self, rows: Sequence[HelloRow]) -> None:
        """`upsert_host` for many Hellos (`hello_row`) in one transaction: a fleet that reconnects
        at once costs a write (one disk sync) a group, not one a host. A host given twice keeps
        the later Hello."""

    @abstractmethod
    def record_heartbeat(self, host_id: str, heartbeat: agent_pb2.Heartbeat) -> None:
        """Mark contact now and keep the agent's self-reported health (and sensors, when sent)."""

    def store_batch(
        self, host_id: str, sequence: int, findings: Sequence[finding_pb2.Finding]
    ) -> StoreResult:
        """Store a batch durably in one transaction (see the module docstring for the rules).

        The findings are validated and normalised in place first (host_id set to `host_id`).
        Raises InvalidBatch for a batch that can never be stored, StoreError on backend failure.
        """
        return self.store_prepared([self.prepare(host_id, sequence, findings)])[0]

    def prepare(self, host_id: str, sequence: int, findings: Sequence[finding_pb2.Finding]) -> PreparedBatch:
        """Validate a batch and build its rows (CPU only, no I/O, any thread) for `store_prepared`.

        Raises InvalidBatch. The server calls it on its event loop, so the writer thread is left
        with the database alone.
        """
        return PreparedBatch(host_id, sequence, finding_rows(host_id, sequence, findings))

    @abstractmethod
    def store_prepared(self, batches: Sequence[PreparedBatch]) -> list[StoreResult]:
        """Group commit: store prepared batches durably, one result each, in one transaction (one
        disk sync for many agents' batches). StoreError fails them all (none is stored then)."""

    def store_batches(
        self, batches: Sequence[tuple[str, int, Sequence[finding_pb2.Finding]]]
    ) -> list[StoreResult | InvalidBatch]:
        """`prepare` and `store_prepared` in one call: one result (or InvalidBatch) per batch."""
        out: list[StoreResult | InvalidBatch | None] = []
        valid: list[tuple[int, PreparedBatch]] = []
        for host_id, sequence, findings in batches:
            try:
                valid.append((len(out), self.prepare(host_id, sequence, findings)))
                out.append(None)
            except InvalidBatch as exc:
                out.append(exc)
        for (index, _), result in zip(valid, self.store_prepared([b for _, b in valid]), strict=True):
            out[index] = result
        return [r for r in out if r is not None]

    @abstractmethod
    def record_inventory(self, host_id: str, inventory: agent_pb2.Inventory) -> bool:
        """Keep a host's inventory in place of an older one (by taken_at); False when the one kept
        is newer (a late resend). Raises InvalidBatch when taken_at is unset or out of range."""

    @abstractmethod
    def inventories(self, host_id: str | None = None) -> list[InventoryRecord]:
        """The newest inventory of every host (or of `host_id`), by host id."""

    @abstractmethod
    def hosts(self, with_counts: bool = True) -> list[HostRecord]:
        """Every known host, ordered by host_id; `with_counts=False` leaves the finding counts at 0
        (the read side takes them from its own `tally`, so the findings are grouped only once)."""

    @abstractmethod
    def findings(
        self, host_id: str | None = None, kind: str | None = None, limit: int | None = 1000
    ) -> list[dict[str, Any]]:
        """Findings as `codec.finding_to_dict` dicts, newest last_seen first.

        `kind` is a kind name ("LOCAL_MODEL_RUNTIME"; ValueError if unknown); `limit=None` is all.
        """

    # ---- the read side's aggregates (collector.query builds every fleet view on these)

    @abstractmethod
    def findings_page(
        self, where: FindingFilter, limit: int, after: FindingCursor | None = None
    ) -> FindingPage:
        """At most `limit` findings matching `where`, newest last_seen first (ties: host id, then id,
        descending), starting after `after`: keyset pagination, stable while findings arrive."""

    @abstractmethod
    def finding(self, host_id: str, finding_id: str) -> dict[str, Any] | None:
        """One finding by its key, as `findings_page` gives it; None when it was never stored or
        retention dropped it. One index probe, however many findings the host has."""

    def iter_findings(self, where: FindingFilter, page_size: int = 1000) -> Iterator[dict[str, Any]]:
        """Every finding matching `where`, page by page (never all in memory), newest first."""
        after: FindingCursor | None = None
        while True:
            page = self.findings_page(where, page_size, after)
            yield from page.findings
            if page.next is None:
                return
            after = page.next

    @abstractmethod
    def newest_finding(self) -> float:
        """The largest last_seen of any finding (Unix seconds), 0.0 when there is none."""

    @abstractmethod
    def tally(self, by: GroupBy, spec: ScoreSpec, since: float | None = None) -> list[TallyRow]:
        """Findings counted per host (or per user, findings without one left out), kind, severity
        and approval, each group with the sum of its findings' risk points under `spec`;
        `since` keeps findings last seen from then on."""

    def scores(self, by: GroupBy, spec: ScoreSpec) -> list[ScoreRow]:
        """`tally(by, spec)` summed per key: what every key's score and level need, without the
        reasons, so a view that ranks or snapshots thousands of hosts and users reads one row each.
        Backends with kept summaries sum them in SQL."""
        return score_rows(self.tally(by, spec))

    def tally_of(self, by: GroupBy, spec: ScoreSpec, keys: Sequence[str]) -> list[TallyRow]:
        """`tally(by, spec)` of only `keys` (a board's riskiest hosts, for their reasons)."""
        wanted = set(keys)
        return [r for r in self.tally(by, spec) if r.key in wanted]

    def tally_totals(self, spec: ScoreSpec) -> list[TallyRow]:
        """Every host's findings per kind, severity and approval, summed over the fleet (key "")."""
        return totals_of(self.tally("host", spec))

    def refresh_summaries(self, spec: ScoreSpec) -> int:
        """Bring the kept summaries (storage.summaries) up to date: recompute the hosts, users and
        weights hashes stored to since, and the tallies whose age buckets changed by `spec.as_of`;
        returns how many were recomputed. `tally` and `model_census` do it for what they read, so
        they are always exact; the collector's monitor calls it so they find little left to do.
        A backend without summaries computes every view in full and has nothing to refresh."""
        del spec
        return 0

    @abstractmethod
    def services(self, since: float | None = None) -> list[ServiceRow]:
        """Every AI service (a finding's network host name) with hosts, processes, bytes sent,
        findings and unapproved findings; most unapproved first, then most hosts, then name."""

    @abstractmethod
    def runtimes(self, since: float | None = None) -> list[RuntimeRow]:
        """Every local model runtime (runtime evidence id) with hosts, exposed hosts, findings;
        most hosts first, then id."""

    @abstractmethod
    def activity(
        self, kinds: Sequence[int], since: float | None = None, spec: ScoreSpec | None = None
    ) -> list[ActivityRow]:
        """Findings of `kinds` (wire values) per host and kind: count, unapproved, bytes, last seen;
        by host id, then kind. With `spec` (the scoring of the risk views) and no `since`, a
        backend that keeps the hosts' tally answers from it, brought up to date under `spec`."""

    @abstractmethod
    def model_census(self, limit: int = 100, holders: int = 10) -> list[ModelRow]:
        """Distinct weights (SHA-256 of MODEL_ARTIFACT findings), the ones unapproved on most hosts
        first, then most hosts, then hash; each with at most `holders` (host, path) pairs, by host."""

    @abstractmethod
    def record_risk_snapshot(self, rows: Sequence[SnapshotRow]) -> None:
        """Keep a day's scores; a row for a (day, scope, key) already kept replaces it."""

    @abstractmethod
    def risk_snapshots(
        self, scope: SnapshotScope, key: str | None = None, since_day: str | None = None
    ) -> list[SnapshotRow]:
        """Kept scores of `scope` (of one `key` when given) from `since_day` on, by day then key."""

    @abstractmethod
    def drop_before(self, cutoff: float) -> None:
        """Retention: forget every finding whose last_seen is before `cutoff` (Unix seconds).

        Hosts, tokens, agents and policies are kept. A finding seen again later is stored anew.
        """

    # ---- fleet channel: health, enrollment tokens, agents, policy

    @abstractmethod
    def record_health(self, host_id: str, finding: finding_pb2.Finding, silent_since: float | None) -> None:
        """Store a collector-made AGENT_HEALTH finding (merge rule as for batches) without counting it
        as contact; `silent_since` sets the host's silent mark (0.0 clears it, None leaves it)."""

    @abstractmethod
    def host_contacts(self) -> list[HostContact]:
        """Every host's last contact and silent mark (cheap: no finding aggregates)."""

    @abstractmethod
    def create_token(self, token_hash: str, expires_at: float, uses: int, note: str = "") -> None:
        """Keep a new enrollment token's hash."""

    @abstractmethod
    def consume_token(self, token_hash: str, now: float) -> None:
        """Use a token once, atomically. Raises TokenRefused when unknown, expired or used up."""

    @abstractmethod
    def tokens(self) -> list[TokenRecord]:
        """Every token, newest first."""

    @abstractmethod
    def register_agent(
        self, host_id: str, serial: int, not_after: float, hostname: str, *, renewal: bool
    ) -> None:
        """Record a certificate issued to `host_id` (first enrollment or renewal).

        Raises StoreError on backend failure.
        """

    @abstractmethod
    def agent(self, host_id: str) -> AgentRecord | None:
        """One enrolled agent, or None."""

    @abstractmethod
    def agents(self) -> list[AgentRecord]:
        """Every enrolled agent, by host id."""

    @abstractmethod
    def revoke_agent(self, host_id: str, now: float) -> bool:
        """Revoke an agent's certificates for good; False when no such agent is enrolled."""

    @abstractmethod
    def forget_host(self, host_id: str) -> int:
        """Delete what the store holds about a host: its row, findings and inventory (`agent
        remove`); its enrollment record and risk snapshots stay. Returns the findings deleted;
        summaries are recomputed by the next refresh."""

    @abstractmethod
    def revoked_hosts(self) -> frozenset[str]:
        """Host ids whose certificates are revoked."""

    @abstractmethod
    def set_policy(self, body: dict[str, Any]) -> int:
        """Keep a new policy version; returns its version number (1, 2, ...)."""

    @abstractmethod
    def current_policy(self) -> PolicyRecord | None:
        """The newest policy, or None before the first `policy set`."""

    # ---- console access: users, API keys, sessions (secrets arrive hashed; none is stored in clear)

    @abstractmethod
    def add_user(self, name: str, role: str, password_hash: str) -> bool:
        """Keep a new user; False when the name is taken. ValueError for a role not in ROLES."""

    @abstractmethod
    def user(self, name: str) -> UserRecord | None:
        """One user, or None."""

    @abstractmethod
    def users(self) -> list[UserRecord]:
        """Every user, by name."""

    @abstractmethod
    def remove_user(self, name: str) -> bool:
        """Delete a user and end their sessions; False when there is no such user."""

    @abstractmethod
    def add_api_key(self, key_id: str, key_hash: str, role: str, note: str = "") -> None:
        """Keep a new API key's hash under its public id. ValueError for a role not in ROLES,
        StoreError when the id is taken."""

    @abstractmethod
    def api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """The key with this hash, or None (unknown or removed)."""

    @abstractmethod
    def api_keys(self) -> list[ApiKeyRecord]:
        """Every API key, newest first."""

    @abstractmethod
    def remove_api_key(self, key_id: str) -> bool:
        """Revoke a key for good; False when there is no such key."""

    @abstractmethod
    def create_session(self, session_hash: str, user: str, csrf: str, expires_at: float) -> None:
        """Keep a new session of `user` (expired sessions are purged on the way)."""

    @abstractmethod
    def session(self, session_hash: str, now: float) -> SessionRecord | None:
        """The live session with this hash, with its user's role now; None when unknown, expired,
        or its user was removed."""

    @abstractmethod
    def delete_session(self, session_hash: str) -> None:
        """End a session (logout); nothing when there is none."""

    @abstractmethod
    def close(self) -> None:
        """Finish the write in progress, then release the backend. Later calls raise StoreError."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- rows of the read side's queries -> their typed results (the same columns on every backend)


def _names(name: Callable[[int], str]) -> Callable[[int], str]:
    """`name` remembered per wire value: tens of thousands of tally rows name a dozen values."""
    seen: dict[int, str] = {}

    def lookup(value: int) -> str:
        got = seen.get(value)
        if got is None:
            got = seen[value] = name(value)
        return got

    return lookup


# ---- the listings' statements, one for both backends


def listing_sql(
    host_id: str | None, kinds: Sequence[int], limit: int | None, rare: bool, placeholder: str = "?"
) -> tuple[str, list[Any]]:
    """`Store.findings`' statement (rows host_id, first_seen, last_seen, count, data, id); `rare`:
    whether `kinds` have few findings (reads.rare_kinds_sql)."""
    p = placeholder
    if limit is not None and limit < 0:
        raise ValueError("limit must be >= 0")
    clauses: list[str] = []
    params: list[Any] = []
    if host_id is not None:
        clauses.append(f"host_id = {p}")
        params.append(host_id)
    columns = "host_id, first_seen, last_seen, count, data, id"
    if kinds and limit is not None and host_id is None:  # one host's: see page_sql
        return kinds_listing(columns, kinds, rare, clauses, LIST_ORDER, p), [*kinds, *params, limit]
    if kinds:
        clauses.append(f"kind IN {in_list(kinds, p)}")
        params += kinds
    sql = f"SELECT {columns} FROM findings" + (" WHERE " + " AND ".join(clauses) if clauses else "")
    sql += f" ORDER BY {LIST_ORDER}"
    if limit is not None:
        sql += f" LIMIT {p}"
        params.append(limit)
    return sql, params


def page_sql(
    where: FindingFilter, limit: int, keyset: tuple[str, list[Any]] | None, rare: bool, placeholder: str = "?"
) -> tuple[str, list[Any]]:
    """`Store.findings_page`'s statement for `limit + 1` rows (see findings_page_of); `keyset` is
    the backend's "after the cursor" condition; `rare` as in listing_sql."""
    columns = "host_id, id, first_seen, last_seen, count, data"
    # A host's findings of some kinds are one range of an index led by (kind, host_id): the
    # planner's own choice, whatever the kinds' counts.
    by_kinds = bool(where.kinds) and where.host_id is None
    clauses, params = filter_sql(replace(where, kinds=()) if by_kinds else where, placeholder)
    if keyset is not None:
        clauses.append(keyset[0])
        params += keyset[1]
    if by_kinds:
        kinds = [int(k) for k in where.kinds]
        sql = kinds_listing(columns, kinds, rare, clauses, PAGE_ORDER, placeholder)
        return sql, [*kinds, *params, limit + 1]
    sql = f"SELECT {columns} FROM findings" + (" WHERE " + " AND ".join(clauses) if clauses else "")
    return f"{sql} ORDER BY {PAGE_ORDER} LIMIT {placeholder}", [*params, limit + 1]


def tally_rows(rows: Iterable[Sequence[Any]]) -> list[TallyRow]:
    """(key, kind, severity, approved, findings, points) rows, kept or computed in full."""
    kinds, severities = _names(codec.kind_name), _names(codec.severity_name)
    return [
        TallyRow(k, kinds(kind), severities(sev), bool(appr), n, float(p or 0.0))
        for k, kind, sev, appr, n, p in rows
    ]


def score_rows(rows: Iterable[TallyRow]) -> list[ScoreRow]:
    """Tally rows summed per key (the computation `Store.scores` does in SQL over kept summaries)."""
    sums: dict[str, list[Any]] = {}
    for r in rows:
        acc = sums.setdefault(r.key, [0, 0, 0.0])
        acc[0] += r.findings
        acc[1] += 0 if r.approved else r.findings
        acc[2] += r.points
    return [ScoreRow(k, n, unappr, points) for k, (n, unappr, points) in sums.items()]


def totals_of(rows: Iterable[TallyRow]) -> list[TallyRow]:
    """Tally rows summed over their keys, per kind, severity and approval (key "")."""
    sums: dict[tuple[str, str, bool], list[Any]] = {}
    for r in rows:
        acc = sums.setdefault((r.kind, r.severity, r.approved), [0, 0.0])
        acc[0] += r.findings
        acc[1] += r.points
    return [TallyRow("", kind, sev, appr, n, p) for (kind, sev, appr), (n, p) in sums.items()]


def activity_rows(rows: Iterable[Sequence[Any]]) -> list[ActivityRow]:
    """Store.activity's (host, kind, findings, unapproved, bytes, last seen ns) rows, by host id,
    then kind."""
    out = [
        ActivityRow(host, codec.kind_name(kind), int(n), int(unappr or 0), int(nbytes or 0), last / 1e9)
        for host, kind, n, unappr, nbytes, last in rows
    ]
    return sorted(out, key=lambda r: (r.host_id, codec.KIND_NAMES.index(r.kind)))


def model_rows(rows: Iterable[Sequence[Any]], held: Mapping[str, Sequence[ModelHolder]]) -> list[ModelRow]:
    """The census' (sha256, format, architecture, parameters, size, hosts, unapproved hosts, copies,
    last seen ns) rows, with the holders found for each hash."""
    return [
        ModelRow(
            sha,
            fmt,
            arch,
            int(params or 0),
            int(size or 0),
            hosts,
            unappr_hosts,
            copies,
            last / 1e9,
            tuple(held.get(sha, ())),
        )
        for sha, fmt, arch, params, size, hosts, unappr_hosts, copies, last in rows
    ]


def findings_page_of(rows: Sequence[Sequence[Any]], limit: int) -> FindingPage:
    """A page from up to `limit + 1` (host_id, id, first_seen, last_seen, count, data) rows, newest
    first: the extra row only says that a next page exists."""
    page = rows[:limit]
    out = [finding_dict(host, first, last, count, data) for host, _, first, last, count, data in page]
    cursor = FindingCursor(page[-1][3], page[-1][0], page[-1][1]) if len(rows) > limit else None
    return FindingPage(out, cursor)

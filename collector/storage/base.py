"""The storage interface every collector backend implements (SQLite now, PostgreSQL later).

The contract, which `tests/collector/test_collector_storage.py` checks against every backend:

* `store_batch` is one transaction and idempotent by finding id: replaying a batch adds no row
  and changes nothing. For an id already stored, first_seen only moves earlier, last_seen and
  count only grow, and the body (severity, evidence, policy, summary...) is replaced only by a
  version whose last_seen is strictly newer. The host's highest stored batch sequence is
  recorded in the same transaction, so an Ack sent after it returns means "durable".
* Reads return plain data (`HostRecord`, finding dicts in `umbra.codec.finding_to_dict` shape)
  so the risk code, the HTTP API and the CLI never touch a backend's types.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from umbra.v1 import agent_pb2, finding_pb2

#: Largest value an SQL BIGINT holds; wire uint64 values above it are refused or clamped.
MAX_INT64 = 2**63 - 1
#: Finding ids are hashes or short keys; anything longer is a broken agent.
MAX_ID_LENGTH = 512
MAX_HOST_ID_LENGTH = 256

_KNOWN_KINDS = frozenset(v for v in finding_pb2.FindingKind.values() if v != finding_pb2.KIND_UNSPECIFIED)
_KNOWN_SEVERITIES = frozenset(finding_pb2.Severity.values())


class StoreError(RuntimeError):
    """A backend could not do what was asked (cannot open, corrupt, closed...)."""


class InvalidBatch(ValueError):
    """A batch that can never be stored as sent; the server answers INVALID_ARGUMENT."""


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
    findings_total: int = 0
    findings_unapproved: int = 0
    findings_by_severity: dict[str, int] = field(default_factory=dict)

    @property
    def sensors_active(self) -> int:
        return sum(1 for s in self.sensors if s.state == "active")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def prepare_batch(host_id: str, sequence: int, findings: Sequence[finding_pb2.Finding]) -> None:
    """Validate a batch and normalise its findings in place, before any write.

    Normalising here (not in each backend) keeps every backend's rows identical: host_id is the
    stream's identity, a missing first_seen is last_seen, a zero count is 1, counts fit BIGINT.
    Raises InvalidBatch naming the first bad finding; nothing is written then.
    """
    validate_host_id(host_id)
    if not 0 <= sequence <= MAX_INT64:
        raise InvalidBatch(f"batch sequence {sequence} out of range")
    for index, f in enumerate(findings):
        where = f"finding {index} (id {f.id[:40]!r})"
        if not f.id:
            raise InvalidBatch(f"finding {index} has no id")
        if len(f.id) > MAX_ID_LENGTH:
            raise InvalidBatch(f"{where}: id longer than {MAX_ID_LENGTH} characters")
        if f.kind not in _KNOWN_KINDS:
            raise InvalidBatch(f"{where}: unknown or unspecified kind {f.kind}")
        if f.severity not in _KNOWN_SEVERITIES:
            raise InvalidBatch(f"{where}: unknown severity {f.severity}")
        if not (math.isfinite(f.confidence) and 0.0 <= f.confidence <= 1.0):
            raise InvalidBatch(f"{where}: confidence {f.confidence} not in 0..1")
        if not f.HasField("last_seen") and not f.HasField("first_seen"):
            raise InvalidBatch(f"{where}: neither first_seen nor last_seen set")
        if not f.HasField("last_seen"):
            f.last_seen.CopyFrom(f.first_seen)
        if not f.HasField("first_seen"):
            f.first_seen.CopyFrom(f.last_seen)
        if f.count == 0:
            f.count = 1
        elif f.count > MAX_INT64:
            f.count = MAX_INT64
        f.host_id = host_id


class Store(ABC):
    """A collector store. Implementations must be safe to call from several threads."""

    @abstractmethod
    def upsert_host(self, host_id: str, hello: agent_pb2.Hello, peer: str) -> None:
        """Register a host (or refresh its facts) from its Hello; marks contact now."""

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
        prepare_batch(host_id, sequence, findings)
        return self._write_batch(host_id, sequence, findings)

    @abstractmethod
    def _write_batch(
        self, host_id: str, sequence: int, findings: Sequence[finding_pb2.Finding]
    ) -> StoreResult:
        """Backend part of `store_batch`; findings are already validated and normalised."""

    @abstractmethod
    def hosts(self) -> list[HostRecord]:
        """Every known host, ordered by host_id."""

    @abstractmethod
    def findings(
        self, host_id: str | None = None, kind: str | None = None, limit: int | None = 1000
    ) -> list[dict[str, Any]]:
        """Findings as `codec.finding_to_dict` dicts, newest last_seen first.

        `kind` is a kind name ("LOCAL_MODEL_RUNTIME"; ValueError if unknown); `limit=None` is all.
        """

    @abstractmethod
    def risk_facts(self) -> list[dict[str, Any]]:
        """Every finding reduced to what risk scoring reads, from indexed columns only.

        Keys: id, host_id, kind, severity, confidence, policy {approved}; the same names and
        values as `findings()` dicts, so `risk` accepts either. Cheap enough for the whole fleet.
        """

    @abstractmethod
    def close(self) -> None:
        """Finish the write in progress, then release the backend. Later calls raise StoreError."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

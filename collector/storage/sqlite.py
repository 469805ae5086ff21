"""SQLite backend: the zero-set-up store for a small fleet.

Durability: WAL journal with `synchronous=FULL`, so every committed batch has reached the
disk before `store_batch` returns and the server acks it. (NORMAL would only risk the last
transactions on power loss, but an Ack promises the agent it may delete its spool, so a lost
acked batch would be lost for good; one WAL fsync per batch is cheap next to that.)

Concurrency: one writer connection behind a lock (SQLite has one writer anyway), and a small
pool of reader connections, which WAL lets read while a batch is written, so the console and
CLI never stall ingest. Every method is blocking: the asyncio server calls them through
`asyncio.to_thread`.

Rows: the serialized Finding plus the indexed columns queries and the merge rule need. The
columns are authoritative for first_seen/last_seen/count: the blob keeps the body of the newest
version, and reads overlay the merged times and count on it. Times are Unix nanoseconds.
The key is (host_id, id): a host can only ever touch its own findings, whatever ids it sends.
"""

from __future__ import annotations

try:
    import fcntl
except ImportError:  # Windows: SQLite's own locking only
    fcntl = None  # type: ignore[assignment]
import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

from umbra import codec
from umbra.v1 import agent_pb2, finding_pb2

from .base import (
    AgentRecord,
    FindingRow,
    HostContact,
    HostRecord,
    InventoryRecord,
    PolicyRecord,
    PreparedBatch,
    RiskFacts,
    Store,
    StoreError,
    StoreResult,
    TokenRecord,
    TokenRefused,
    finding_dict,
    finding_rows,
    heartbeat_row,
    hello_row,
    host_record,
    inventory_record,
    inventory_row,
    ns,
    severity_counts,
)

SCHEMA_VERSION = 4
#: PRAGMA application_id marking a file as an Umbra collector database ("Umbr").
APPLICATION_ID = 0x556D6272
_MAX_IDLE_READERS = 4
WRITER_CACHE_KIB = 128 * 1024

_SCHEMA = """
CREATE TABLE hosts (
    host_id           TEXT PRIMARY KEY,
    hostname          TEXT NOT NULL DEFAULT '',
    os                TEXT NOT NULL DEFAULT '',
    os_release        TEXT NOT NULL DEFAULT '',
    architecture      TEXT NOT NULL DEFAULT '',
    agent_version     TEXT NOT NULL DEFAULT '',
    policy_version    INTEGER NOT NULL DEFAULT 0,
    peer              TEXT NOT NULL DEFAULT '',
    sensors           TEXT NOT NULL DEFAULT '[]',
    hello             BLOB,
    first_seen        INTEGER NOT NULL,
    last_seen         INTEGER NOT NULL,
    last_sequence     INTEGER NOT NULL DEFAULT 0,
    last_heartbeat    INTEGER NOT NULL DEFAULT 0,
    agent_cpu_percent REAL NOT NULL DEFAULT 0,
    agent_rss_bytes   INTEGER NOT NULL DEFAULT 0,
    spool_depth       INTEGER NOT NULL DEFAULT 0,
    dropped_total     INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE findings (
    host_id    TEXT NOT NULL,
    id         TEXT NOT NULL,
    kind       INTEGER NOT NULL,
    severity   INTEGER NOT NULL,
    confidence REAL NOT NULL,
    approved   INTEGER NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    count      INTEGER NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (host_id, id)
);
CREATE INDEX findings_kind ON findings (kind, last_seen);
CREATE INDEX findings_last_seen ON findings (last_seen);
"""

# The merge rule of base.Store in one statement. SET expressions all read the old row; the WHERE
# skips rows the incoming version adds nothing to, so `rowcount` counts only real changes.
_UPSERT_FINDING = """
INSERT INTO findings (host_id, id, kind, severity, confidence, approved, first_seen, last_seen, count, data)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (host_id, id) DO UPDATE SET
    kind       = CASE WHEN excluded.last_seen > findings.last_seen THEN excluded.kind ELSE findings.kind END,
    severity   = CASE WHEN excluded.last_seen > findings.last_seen
                      THEN excluded.severity ELSE findings.severity END,
    confidence = CASE WHEN excluded.last_seen > findings.last_seen
                      THEN excluded.confidence ELSE findings.confidence END,
    approved   = CASE WHEN excluded.last_seen > findings.last_seen
                      THEN excluded.approved ELSE findings.approved END,
    data       = CASE WHEN excluded.last_seen > findings.last_seen THEN excluded.data ELSE findings.data END,
    first_seen = min(findings.first_seen, excluded.first_seen),
    last_seen  = max(findings.last_seen, excluded.last_seen),
    count      = max(findings.count, excluded.count)
WHERE excluded.last_seen > findings.last_seen
   OR excluded.count > findings.count
   OR excluded.first_seen < findings.first_seen
"""

# Version 2: the fleet channel (silence marks, enrollment tokens, agents' certificates, policy).
_MIGRATE_TO_2 = """
ALTER TABLE hosts ADD COLUMN silent_since INTEGER NOT NULL DEFAULT 0;
CREATE TABLE enroll_tokens (
    token_hash TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    uses_left  INTEGER NOT NULL,
    uses       INTEGER NOT NULL,
    note       TEXT NOT NULL DEFAULT ''
);
CREATE TABLE agents (
    host_id     TEXT PRIMARY KEY,
    enrolled_at INTEGER NOT NULL,
    renewed_at  INTEGER NOT NULL,
    serial      TEXT NOT NULL,
    not_after   INTEGER NOT NULL,
    hostname    TEXT NOT NULL DEFAULT '',
    revoked_at  INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE policies (
    version    INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at INTEGER NOT NULL,
    body       TEXT NOT NULL
);
"""

# Version 3: one index for "newest first" and "newest first of a kind" instead of two. Findings
# replayed from spools arrive out of last_seen order, so every index keyed by last_seen takes
# random inserts, the dearest part of ingest (about 2 us a finding each). A kind filter walks this
# index and reads the kind from the index itself, without touching the table.
_MIGRATE_TO_3 = """
DROP INDEX IF EXISTS findings_kind;
DROP INDEX IF EXISTS findings_last_seen;
CREATE INDEX IF NOT EXISTS findings_recent ON findings (last_seen, kind);
"""

# Version 4: each host's newest Inventory (the model files on its disks, the runtimes it runs).
_MIGRATE_TO_4 = """
CREATE TABLE IF NOT EXISTS inventories (
    host_id     TEXT PRIMARY KEY,
    taken_at    INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    models      INTEGER NOT NULL,
    runtimes    INTEGER NOT NULL,
    data        BLOB NOT NULL
);
"""

_MIGRATIONS = {2: _MIGRATE_TO_2, 3: _MIGRATE_TO_3, 4: _MIGRATE_TO_4}

_UPSERT_INVENTORY = """
INSERT INTO inventories (host_id, taken_at, received_at, models, runtimes, data) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (host_id) DO UPDATE SET
    taken_at = excluded.taken_at, received_at = excluded.received_at, models = excluded.models,
    runtimes = excluded.runtimes, data = excluded.data
WHERE excluded.taken_at >= inventories.taken_at
"""

_CONSUME_TOKEN = """
UPDATE enroll_tokens SET uses_left = uses_left - 1
WHERE token_hash = ? AND uses_left > 0 AND expires_at > ?
"""

_REGISTER_AGENT = """
INSERT INTO agents (host_id, enrolled_at, renewed_at, serial, not_after, hostname) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (host_id) DO UPDATE SET
    renewed_at = excluded.renewed_at, serial = excluded.serial, not_after = excluded.not_after,
    hostname = CASE WHEN excluded.hostname != '' THEN excluded.hostname ELSE agents.hostname END
"""

_AGENT_COLUMNS = "host_id, enrolled_at, renewed_at, serial, not_after, hostname, revoked_at"

_MAX_ROWID = "SELECT coalesce(max(rowid), 0) FROM findings"
_COUNT_ROWS_AFTER = "SELECT count(*) FROM findings WHERE rowid > ?"

_TOUCH_HOST_SEQUENCE = """
INSERT INTO hosts (host_id, first_seen, last_seen, last_sequence) VALUES (?, ?, ?, ?)
ON CONFLICT (host_id) DO UPDATE SET
    last_seen = max(hosts.last_seen, excluded.last_seen),
    last_sequence = max(hosts.last_sequence, excluded.last_sequence)
"""

_UPSERT_HOST = """
INSERT INTO hosts (host_id, hostname, os, os_release, architecture, agent_version, policy_version,
                   peer, sensors, hello, first_seen, last_seen)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (host_id) DO UPDATE SET
    hostname = excluded.hostname, os = excluded.os, os_release = excluded.os_release,
    architecture = excluded.architecture, agent_version = excluded.agent_version,
    policy_version = excluded.policy_version, peer = excluded.peer, sensors = excluded.sensors,
    hello = excluded.hello, last_seen = max(hosts.last_seen, excluded.last_seen)
"""

_HEARTBEAT = """
INSERT INTO hosts (host_id, first_seen, last_seen, last_heartbeat, agent_cpu_percent, agent_rss_bytes,
                   spool_depth, dropped_total, sensors)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, coalesce(?, '[]'))
ON CONFLICT (host_id) DO UPDATE SET
    last_seen = max(hosts.last_seen, excluded.last_seen),
    last_heartbeat = excluded.last_heartbeat,
    agent_cpu_percent = excluded.agent_cpu_percent,
    agent_rss_bytes = excluded.agent_rss_bytes,
    spool_depth = excluded.spool_depth,
    dropped_total = excluded.dropped_total,
    sensors = coalesce(?, hosts.sensors)
"""

_HOSTS = """
SELECT h.host_id, h.hostname, h.os, h.os_release, h.architecture, h.agent_version, h.policy_version,
       h.peer, h.sensors, h.first_seen, h.last_seen, h.last_sequence, h.last_heartbeat,
       h.agent_cpu_percent, h.agent_rss_bytes, h.spool_depth, h.dropped_total, {silent}
FROM hosts h ORDER BY h.host_id
"""

_HOST_FINDING_COUNTS = """
SELECT host_id, severity, count(*), sum(approved = 0) FROM findings GROUP BY host_id, severity
"""


_ns = ns


def _upsert_batch(
    conn: sqlite3.Connection, host_id: str, sequence: int, rows: Sequence[FindingRow], now: int | None
) -> StoreResult:
    """Upsert a batch's rows; with `now`, also record the host's contact and batch sequence."""
    new = changed = 0
    if rows:
        # A new row takes rowid max+1 (nothing here sets rowids), so the rows this batch added are
        # exactly those past the largest rowid before it, inside this write transaction: a short
        # range at the table's end, cheaper than looking every id up first.
        before = conn.execute(_MAX_ROWID).fetchone()[0]
        changed = conn.executemany(_UPSERT_FINDING, rows).rowcount
        new = conn.execute(_COUNT_ROWS_AFTER, (before,)).fetchone()[0]
    if now is not None:
        conn.execute(_TOUCH_HOST_SEQUENCE, (host_id, now, now, sequence))
    updated = changed - new
    return StoreResult(new=new, updated=updated, unchanged=len(rows) - new - updated)


class SQLiteStore(Store):
    """`Store` over one SQLite file (or `:memory:`, for tests)."""

    def __init__(self, path: str, *, create: bool = True, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._memory = path == ":memory:"
        self._lock = threading.Lock()
        self._closed = False
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._legacy = False  # a version-1 file opened read-only: no fleet-channel tables yet
        self._version = SCHEMA_VERSION  # lower only for an older file opened read-only
        self._lock_fd: int | None = None  # see _writer_lock_fd
        if not self._memory:
            if not create and not os.path.exists(path):
                raise StoreError(f"no database at {path}")
            if create:
                parent = os.path.dirname(os.path.abspath(path))
                try:
                    os.makedirs(parent, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"cannot create directory {parent}: {exc.strerror}") from None
        self._writer = self._connect(create=create)
        try:
            self._init_schema(create)
            self._writer.execute("PRAGMA journal_mode = WAL")
            self._writer.execute("PRAGMA synchronous = FULL")
            # The writer's page cache: at a million findings the indexes no longer fit SQLite's
            # default 2 MiB, and every insert then reads pages back (12 -> 7 us per finding).
            self._writer.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
        except sqlite3.Error as exc:
            self._writer.close()
            raise StoreError(f"cannot use {path}: {exc}") from None
        except StoreError:
            self._writer.close()
            raise

    # ---- connections

    def _connect(self, *, create: bool = True, reader: bool = False) -> sqlite3.Connection:
        target = ":memory:" if self._memory else f"file:{quote(self.path)}?mode={'rwc' if create else 'rw'}"
        try:
            conn = sqlite3.connect(
                target, uri=not self._memory, check_same_thread=False, isolation_level=None, timeout=10.0
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from None
        conn.execute("PRAGMA busy_timeout = 10000")
        if reader:
            conn.execute("PRAGMA query_only = 1")
        return conn

    def _init_schema(self, create: bool) -> None:
        conn = self._writer
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app_id == 0 and version == 0 and tables == 0:
            if not create:
                raise StoreError(f"{self.path} is empty, not an Umbra collector database")
            # One script, one transaction: a crash never leaves half a schema behind.
            conn.executescript(
                f"BEGIN IMMEDIATE;{_SCHEMA}{''.join(_MIGRATIONS.values())}"
                f"PRAGMA application_id = {APPLICATION_ID};PRAGMA user_version = {SCHEMA_VERSION};COMMIT;"
            )
            return
        if app_id != APPLICATION_ID:
            raise StoreError(f"{self.path} is not an Umbra collector database")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this collector's {SCHEMA_VERSION}"
            )
        if version < SCHEMA_VERSION:
            if not create:
                # A read-only command never rewrites the file; `serve` migrates it.
                if version < 2:
                    self._legacy = True
                self._version = version
                return
            self._migrate(version)

    def _migrate(self, version: int) -> None:
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read inside the write lock: another collector may have migrated meanwhile.
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            for target in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target].split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        del version

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """The writer connection inside one IMMEDIATE transaction, committed on success."""
        with self._lock:
            if self._closed:
                raise StoreError("store is closed")
            conn = self._writer
            fd = self._writer_lock_fd()
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            finally:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)

    def _writer_lock_fd(self) -> int | None:
        """A lock file that queues writers of several processes (`serve --workers N`, CLI commands).

        SQLite alone makes a writer that finds the database locked sleep and poll (up to 100 ms a
        try), which leaves the lock idle between two collector processes; a blocking flock hands it
        over at once. Called with self._lock held; None for :memory: or where flock does not exist.
        """
        if self._memory or fcntl is None:
            return None
        if self._lock_fd is None:
            try:
                self._lock_fd = os.open(f"{self.path}.writer-lock", os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:
                self._lock_fd = -1  # a read-only directory: rely on SQLite's own locking
        return self._lock_fd if self._lock_fd >= 0 else None

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        if self._memory:  # one in-memory database, so reads share the writer
            with self._lock:
                if self._closed:
                    raise StoreError("store is closed")
                yield self._writer
            return
        if self._closed:
            raise StoreError("store is closed")
        try:
            conn = self._readers.get_nowait()
        except queue.Empty:
            conn = self._connect(create=False, reader=True)
        try:
            yield conn
        finally:
            if self._closed or self._readers.qsize() >= _MAX_IDLE_READERS:
                conn.close()
            else:
                self._readers.put(conn)

    # ---- writes

    def upsert_host(self, host_id: str, hello: agent_pb2.Hello, peer: str) -> None:
        now = _ns(self._clock())
        row = (*hello_row(host_id, hello, peer), now, now)
        try:
            with self._write() as conn:
                conn.execute(_UPSERT_HOST, row)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot register host {host_id!r}: {exc}") from exc

    def record_heartbeat(self, host_id: str, heartbeat: agent_pb2.Heartbeat) -> None:
        now = _ns(self._clock())
        hb = heartbeat_row(host_id, heartbeat, now)
        row = (
            host_id,
            now,
            now,
            hb.sent_at,
            hb.cpu_percent,
            hb.rss_bytes,
            hb.spool_depth,
            hb.dropped_total,
            hb.sensors,
            hb.sensors,
        )
        try:
            with self._write() as conn:
                conn.execute(_HEARTBEAT, row)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot record heartbeat of {host_id!r}: {exc}") from exc

    def store_prepared(self, batches: Sequence[PreparedBatch]) -> list[StoreResult]:
        """All batches in one transaction: one WAL sync for many agents' batches."""
        if not batches:
            return []
        now = _ns(self._clock())
        try:
            with self._write() as conn:
                return [_upsert_batch(conn, b.host_id, b.sequence, b.rows, now) for b in batches]
        except sqlite3.Error as exc:
            raise StoreError(f"cannot store {len(batches)} batches: {exc}") from exc

    def record_health(self, host_id: str, finding: finding_pb2.Finding, silent_since: float | None) -> None:
        rows = finding_rows(host_id, 0, [finding])
        now = _ns(self._clock())
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO hosts (host_id, first_seen, last_seen) VALUES (?, ?, ?) "
                    "ON CONFLICT (host_id) DO NOTHING",
                    (host_id, now, now),
                )
                _upsert_batch(conn, host_id, 0, rows, None)
                if silent_since is not None:
                    conn.execute(
                        "UPDATE hosts SET silent_since = ? WHERE host_id = ?", (_ns(silent_since), host_id)
                    )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot record health of {host_id!r}: {exc}") from exc

    def record_inventory(self, host_id: str, inventory: agent_pb2.Inventory) -> bool:
        inv = inventory_row(host_id, inventory)
        row = (inv.host_id, inv.taken_at, _ns(self._clock()), inv.models, inv.runtimes, inv.data)
        try:
            with self._fleet_write("inventory") as conn:
                return bool(conn.execute(_UPSERT_INVENTORY, row).rowcount)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot record the inventory of {host_id!r}: {exc}") from exc

    def inventories(self, host_id: str | None = None) -> list[InventoryRecord]:
        if self._version < 4:
            return []  # an older file opened read-only: no inventory kept there yet
        sql = "SELECT host_id, taken_at, received_at, data FROM inventories"
        params: tuple[str, ...] = ()
        if host_id is not None:
            sql, params = sql + " WHERE host_id = ?", (host_id,)
        try:
            with self._read() as conn:
                rows = conn.execute(sql + " ORDER BY host_id", params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read inventories: {exc}") from exc
        return [inventory_record(*row) for row in rows]

    def host_contacts(self) -> list[HostContact]:
        try:
            with self._read() as conn:
                rows = conn.execute(
                    "SELECT host_id, last_seen, silent_since FROM hosts ORDER BY host_id"
                ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read hosts: {exc}") from exc
        return [HostContact(h, last / 1e9, silent / 1e9) for h, last, silent in rows]

    # ---- enrollment tokens, agents, policy

    def _fleet_write(self, what: str) -> Any:
        if self._legacy:
            raise StoreError(f"{self.path} predates enrollment; start `umbra-collector serve` on it once")
        return self._write()

    def create_token(self, token_hash: str, expires_at: float, uses: int, note: str = "") -> None:
        now = _ns(self._clock())
        try:
            with self._fleet_write("token") as conn:
                conn.execute(
                    "INSERT INTO enroll_tokens (token_hash, created_at, expires_at, uses_left, uses, note) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (token_hash, now, _ns(expires_at), uses, uses, note),
                )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot create token: {exc}") from exc

    def consume_token(self, token_hash: str, now: float) -> None:
        try:
            with self._fleet_write("token") as conn:
                if conn.execute(_CONSUME_TOKEN, (token_hash, _ns(now))).rowcount == 1:
                    return
                row = conn.execute(
                    "SELECT expires_at, uses_left FROM enroll_tokens WHERE token_hash = ?", (token_hash,)
                ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot check token: {exc}") from exc
        if row is None:
            raise TokenRefused("unknown token")
        if row[1] <= 0:
            raise TokenRefused("token already used")
        raise TokenRefused("token expired")

    def tokens(self) -> list[TokenRecord]:
        if self._legacy:
            return []
        try:
            with self._read() as conn:
                rows = conn.execute(
                    "SELECT token_hash, created_at, expires_at, uses_left, uses, note FROM enroll_tokens "
                    "ORDER BY created_at DESC"
                ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read tokens: {exc}") from exc
        return [TokenRecord(h, c / 1e9, e / 1e9, left, uses, note) for h, c, e, left, uses, note in rows]

    def register_agent(
        self, host_id: str, serial: int, not_after: float, hostname: str, *, renewal: bool
    ) -> None:
        now = _ns(self._clock())
        try:
            with self._fleet_write("agent") as conn:
                conn.execute(_REGISTER_AGENT, (host_id, now, now, f"{serial:x}", _ns(not_after), hostname))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot register agent {host_id!r}: {exc}") from exc
        del renewal

    @staticmethod
    def _agent(row: tuple[Any, ...]) -> AgentRecord:
        host_id, enrolled, renewed, serial, not_after, hostname, revoked = row
        return AgentRecord(
            host_id, enrolled / 1e9, renewed / 1e9, serial, not_after / 1e9, hostname, revoked / 1e9
        )

    def agent(self, host_id: str) -> AgentRecord | None:
        if self._legacy:
            return None
        try:
            with self._read() as conn:
                row = conn.execute(
                    f"SELECT {_AGENT_COLUMNS} FROM agents WHERE host_id = ?", (host_id,)
                ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read agent {host_id!r}: {exc}") from exc
        return self._agent(row) if row else None

    def agents(self) -> list[AgentRecord]:
        if self._legacy:
            return []
        try:
            with self._read() as conn:
                rows = conn.execute(f"SELECT {_AGENT_COLUMNS} FROM agents ORDER BY host_id").fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read agents: {exc}") from exc
        return [self._agent(r) for r in rows]

    def revoke_agent(self, host_id: str, now: float) -> bool:
        try:
            with self._fleet_write("agent") as conn:
                changed = conn.execute(
                    "UPDATE agents SET revoked_at = ? WHERE host_id = ? AND revoked_at = 0",
                    (_ns(now), host_id),
                ).rowcount
                known = conn.execute("SELECT 1 FROM agents WHERE host_id = ?", (host_id,)).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot revoke agent {host_id!r}: {exc}") from exc
        return bool(changed or known)

    def revoked_hosts(self) -> frozenset[str]:
        if self._legacy:
            return frozenset()
        try:
            with self._read() as conn:
                rows = conn.execute("SELECT host_id FROM agents WHERE revoked_at != 0").fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read revocations: {exc}") from exc
        return frozenset(r[0] for r in rows)

    def set_policy(self, body: dict[str, Any]) -> int:
        now = _ns(self._clock())
        try:
            with self._fleet_write("policy") as conn:
                cur = conn.execute(
                    "INSERT INTO policies (created_at, body) VALUES (?, ?)",
                    (now, json.dumps(body, sort_keys=True)),
                )
                return int(cur.lastrowid or 0)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot store policy: {exc}") from exc

    def current_policy(self) -> PolicyRecord | None:
        if self._legacy:
            return None
        try:
            with self._read() as conn:
                row = conn.execute(
                    "SELECT version, created_at, body FROM policies ORDER BY version DESC LIMIT 1"
                ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read policy: {exc}") from exc
        return PolicyRecord(row[0], row[1] / 1e9, json.loads(row[2])) if row else None

    # ---- reads

    def hosts(self) -> list[HostRecord]:
        try:
            with self._read() as conn:
                host_rows = conn.execute(
                    _HOSTS.format(silent="0" if self._legacy else "h.silent_since")
                ).fetchall()
                count_rows = conn.execute(_HOST_FINDING_COUNTS).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read hosts: {exc}") from exc
        totals, by_severity = severity_counts(count_rows)
        return [host_record(r, totals, by_severity) for r in host_rows]

    def findings(
        self, host_id: str | None = None, kind: str | None = None, limit: int | None = 1000
    ) -> list[dict[str, Any]]:
        where: list[str] = []
        params: list[Any] = []
        if host_id is not None:
            where.append("host_id = ?")
            params.append(host_id)
        if kind is not None:
            where.append("kind = ?")
            params.append(int(codec.kind_value(kind)))
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        sql = "SELECT host_id, first_seen, last_seen, count, data FROM findings"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY last_seen DESC, host_id, id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        try:
            with self._read() as conn:
                rows = conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read findings: {exc}") from exc
        return [finding_dict(*row) for row in rows]

    def risk_facts(self) -> list[dict[str, Any]]:
        sql = "SELECT host_id, id, kind, severity, confidence, approved FROM findings ORDER BY host_id, id"
        try:
            with self._read() as conn:
                rows = conn.execute(sql).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read findings: {exc}") from exc
        facts = RiskFacts()
        return [facts.fact(*row) for row in rows]

    def drop_before(self, cutoff: float) -> None:
        try:
            with self._write() as conn:
                conn.execute("DELETE FROM findings WHERE last_seen < ?", (_ns(cutoff),))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot drop old findings: {exc}") from exc

    def close(self) -> None:
        with self._lock:  # waits for the batch being written
            if self._closed:
                return
            self._closed = True
            self._writer.close()
            if self._lock_fd is not None and self._lock_fd >= 0:
                os.close(self._lock_fd)
            self._lock_fd = None
        while True:
            try:
                self._readers.get_nowait().close()
            except queue.Empty:
                break

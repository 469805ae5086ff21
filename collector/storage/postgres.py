"""PostgreSQL backend: one database shared by several stateless collector processes.

Schema and migrations: versioned scripts in `_MIGRATIONS`, applied on start by `serve` (create=True)
in order, each in its own transaction and recorded in `schema_version`. A session advisory lock
serialises collectors that start at once; read-only commands never migrate and refuse an older
schema.

Findings are range-partitioned by day on last_seen, so retention (`drop_before`) drops whole
partitions instead of deleting rows. Why last_seen, and how idempotency survives it:

* Retention means "forget what has not been seen for N days", which is last_seen. Partitioning
  on first_seen would drop a model server that has run every day for three months.
* PostgreSQL cannot enforce a unique key across partitions unless it holds the partition key, so
  (host_id, id) alone is not a constraint of `findings`. The small unpartitioned `finding_keys`
  table is: it holds each finding's merge state (first_seen, last_seen, count) under the primary
  key (host_id, id). Ingest reads the merge state there (one index probe, no matter how many
  partitions), merges in Python by the contract's rule, and moves a finding to its new day's
  partition with one UPDATE when its last_seen grows. A finding is thus in exactly one partition,
  and a second copy would violate finding_keys' key before it could be stored.
* Writers of one host are serialised with a transaction advisory lock per host (taken in a fixed
  order, so no deadlock), so two collectors never merge the same finding from stale state; the
  key is still the guarantee.
* Days far from today (agents' clocks, old replays) fall into a DEFAULT partition instead of
  creating a partition each; a day's partition, when created, takes its rows out of the default.

Durability: `store_prepared` commits one transaction for a group of batches; PostgreSQL's commit
is durable (synchronous_commit on, the server default) before the Ack goes out.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from google.protobuf.message import DecodeError
from psycopg_pool import ConnectionPool
from umbra import codec
from umbra.v1 import agent_pb2, finding_pb2

from . import summaries
from .base import (
    KNOWN_KINDS,
    AgentRecord,
    ApiKeyRecord,
    FindingRow,
    HelloRow,
    HostContact,
    HostRecord,
    InventoryRecord,
    PolicyRecord,
    PreparedBatch,
    SessionRecord,
    StoreError,
    StoreResult,
    TokenRecord,
    TokenRefused,
    UserRecord,
    activity_rows,
    check_role,
    described_hosts,
    evidence_facts,
    finding_dict,
    finding_rows,
    findings_page_of,
    heartbeat_row,
    host_record,
    inventory_record,
    inventory_row,
    listing_sql,
    model_rows,
    ns,
    page_sql,
    severity_counts,
    tally_rows,
)
from .reads import (
    RARE_KINDS,
    ActivityRow,
    FindingCursor,
    FindingFilter,
    FindingPage,
    GroupBy,
    ModelHolder,
    ModelRow,
    RuntimeRow,
    ScoreSpec,
    ServiceRow,
    SnapshotRow,
    SnapshotScope,
    TallyRow,
    in_list,
    rare_kinds_sql,
    seconds_to_ns,
)

SCHEMA_VERSION = 6
_ARTIFACT = int(finding_pb2.KIND_MODEL_ARTIFACT)
_EXPOSED = int(finding_pb2.KIND_MODEL_SERVER_EXPOSED)
#: Advisory lock keys (the two-int form, apart from the per-host bigint keys): "Umbr", what.
_LOCK_SPACE = 0x556D6272
_MIGRATION_LOCK = 1
_PARTITION_LOCK = 2

DAY_NS = 86_400 * 1_000_000_000
#: Days that get their own partition, around today; others fall into findings_default.
PAST_DAYS, FUTURE_DAYS = 3660, 2
_PARTITION_NAME = re.compile(r"^findings_(\d{8})$")

_SCHEMA_1 = """
CREATE TABLE hosts (
    host_id           text COLLATE "C" PRIMARY KEY,
    hostname          text NOT NULL DEFAULT '',
    os                text NOT NULL DEFAULT '',
    os_release        text NOT NULL DEFAULT '',
    architecture      text NOT NULL DEFAULT '',
    agent_version     text NOT NULL DEFAULT '',
    policy_version    bigint NOT NULL DEFAULT 0,
    peer              text NOT NULL DEFAULT '',
    sensors           text NOT NULL DEFAULT '[]',
    hello             bytea,
    first_seen        bigint NOT NULL,
    last_seen         bigint NOT NULL,
    last_sequence     bigint NOT NULL DEFAULT 0,
    last_heartbeat    bigint NOT NULL DEFAULT 0,
    agent_cpu_percent double precision NOT NULL DEFAULT 0,
    agent_rss_bytes   bigint NOT NULL DEFAULT 0,
    spool_depth       bigint NOT NULL DEFAULT 0,
    dropped_total     bigint NOT NULL DEFAULT 0,
    silent_since      bigint NOT NULL DEFAULT 0
);
-- One row per stored finding: the unique key partitions cannot enforce, and the merge state.
CREATE TABLE finding_keys (
    host_id    text COLLATE "C" NOT NULL,
    id         text COLLATE "C" NOT NULL,
    first_seen bigint NOT NULL,
    last_seen  bigint NOT NULL,
    count      bigint NOT NULL,
    PRIMARY KEY (host_id, id)
);
CREATE TABLE findings (
    host_id    text COLLATE "C" NOT NULL,
    id         text COLLATE "C" NOT NULL,
    kind       smallint NOT NULL,
    severity   smallint NOT NULL,
    confidence double precision NOT NULL,
    approved   smallint NOT NULL,
    first_seen bigint NOT NULL,
    last_seen  bigint NOT NULL,
    count      bigint NOT NULL,
    data       bytea NOT NULL,
    PRIMARY KEY (host_id, id, last_seen)
) PARTITION BY RANGE (last_seen);
CREATE INDEX findings_recent ON findings (last_seen, kind);
CREATE TABLE findings_default PARTITION OF findings DEFAULT;
CREATE TABLE inventories (
    host_id     text COLLATE "C" PRIMARY KEY,
    taken_at    bigint NOT NULL,
    received_at bigint NOT NULL,
    models      integer NOT NULL,
    runtimes    integer NOT NULL,
    data        bytea NOT NULL
);
CREATE TABLE enroll_tokens (
    token_hash text PRIMARY KEY,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    uses_left  bigint NOT NULL,
    uses       bigint NOT NULL,
    note       text NOT NULL DEFAULT ''
);
CREATE TABLE agents (
    host_id     text COLLATE "C" PRIMARY KEY,
    enrolled_at bigint NOT NULL,
    renewed_at  bigint NOT NULL,
    serial      text NOT NULL,
    not_after   bigint NOT NULL,
    hostname    text NOT NULL DEFAULT '',
    revoked_at  bigint NOT NULL DEFAULT 0
);
CREATE TABLE policies (
    version    bigserial PRIMARY KEY,
    created_at bigint NOT NULL,
    body       text NOT NULL
);
"""

#: Evidence-fact columns, in FindingRow order (base.evidence_facts), with their types.
_FACTS = (
    ("user_name", "text"),
    ("process_name", "text"),
    ("runtime", "text"),
    ("service", "text"),
    ("vendor", "text"),
    ("nbytes", "int8"),
    ("sha256", "text"),
    ("model_format", "text"),
    ("model_arch", "text"),
    ("model_params", "int8"),
    ("path", "text"),
)
_FACT_COLUMNS = ", ".join(c for c, _ in _FACTS)

# Version 2: the read side aggregates in SQL. The evidence facts fleet views group on become
# columns (filled at ingest from base.finding_rows, backfilled from the stored bodies by
# `_backfill_facts`); risk_snapshots keeps daily scores. ADD COLUMN with a constant default
# rewrites no partition.
_MIGRATE_TO_2 = (
    "".join(
        f"ALTER TABLE findings ADD COLUMN {c} "
        + ("bigint NOT NULL DEFAULT 0;\n" if t == "int8" else "text COLLATE \"C\" NOT NULL DEFAULT '';\n")
        for c, t in _FACTS
    )
    + """
CREATE TABLE risk_snapshots (
    day        text COLLATE "C" NOT NULL,
    scope      text COLLATE "C" NOT NULL,
    key        text COLLATE "C" NOT NULL,
    score      double precision NOT NULL,
    level      text NOT NULL,
    findings   bigint NOT NULL,
    unapproved bigint NOT NULL,
    PRIMARY KEY (day, scope, key)
);
-- The indexes SQLite's version 5 has, for the same views, as partitioned indexes (each day's
-- partition gets its own; a partition attached later gets them on ATTACH). Grouping columns are
-- keys, the rest INCLUDEd, so an aggregate reads the index only (once vacuum has set the
-- visibility map). findings_recent becomes the keyset order of findings_page.
DROP INDEX findings_recent;
CREATE INDEX findings_recent ON findings (last_seen, host_id, id) INCLUDE (kind);
CREATE INDEX findings_tally ON findings (kind, host_id, severity, approved)
    INCLUDE (last_seen, confidence, nbytes);
CREATE INDEX findings_user ON findings (user_name, kind, severity, approved)
    INCLUDE (last_seen, confidence) WHERE user_name <> '';
CREATE INDEX findings_service ON findings (service, host_id, process_name)
    INCLUDE (approved, nbytes, vendor, last_seen) WHERE service <> '';
CREATE INDEX findings_runtime ON findings (runtime, host_id) INCLUDE (kind, approved, last_seen)
    WHERE runtime <> '';
CREATE INDEX findings_model ON findings (sha256, host_id, path)
    INCLUDE (approved, last_seen, model_format, model_arch, model_params, nbytes)
    WHERE sha256 <> '' AND kind = {artifact};
"""
).replace("{artifact}", str(int(finding_pb2.KIND_MODEL_ARTIFACT)))

# Version 3: console access, as SQLite's version 6. Passwords as KDF strings, API keys and sessions
# as SHA-256 hashes of high-entropy secrets, so a copy of the database logs nobody in. A session
# references its user: removing the user ends it even against a login racing on another collector.
_MIGRATE_TO_3 = """
CREATE TABLE users (
    name          text COLLATE "C" PRIMARY KEY,
    role          text NOT NULL CHECK (role IN ('admin', 'viewer')),
    password_hash text NOT NULL,
    created_at    bigint NOT NULL
);
CREATE TABLE api_keys (
    key_id     text COLLATE "C" PRIMARY KEY,
    key_hash   text NOT NULL UNIQUE,
    role       text NOT NULL CHECK (role IN ('admin', 'viewer')),
    created_at bigint NOT NULL,
    note       text NOT NULL DEFAULT ''
);
CREATE TABLE sessions (
    session_hash text PRIMARY KEY,
    user_name    text COLLATE "C" NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    csrf         text NOT NULL,
    expires_at   bigint NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_name);
CREATE INDEX sessions_expiry ON sessions (expires_at);
"""

# Version 4: summaries kept in tables, as SQLite's versions 7 to 9 (storage.summaries): dirty keys,
# each host's and user's risk tally, each weights hash's census row, each host's services and
# runtimes. A newer version of a finding lists the keys it leaves in `moved` (_MOVE_FINDING).
# findings_host replaces findings_tally and findings_runtime: a host's refresh reads one index
# range per kind. Everything stored before is marked dirty: the first refresh computes it all.
_MIGRATE_TO_4 = """
ALTER TABLE findings ADD COLUMN moved text COLLATE "C" NOT NULL DEFAULT '';
CREATE INDEX findings_moved ON findings (host_id, id) WHERE moved <> '';
DROP INDEX findings_tally;
DROP INDEX findings_runtime;
CREATE INDEX findings_host ON findings (kind, host_id, severity, approved)
    INCLUDE (last_seen, confidence, nbytes, runtime, service, process_name, vendor);
CREATE TABLE summary_keys (
    scope       text COLLATE "C" NOT NULL,
    key         text COLLATE "C" NOT NULL,
    dirty       bigint NOT NULL DEFAULT 0,
    valid_after bigint NOT NULL DEFAULT 0,
    valid_until bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, key)
);
CREATE TABLE risk_summary (
    scope    text COLLATE "C" NOT NULL,
    key      text COLLATE "C" NOT NULL,
    kind     smallint NOT NULL,
    severity smallint NOT NULL,
    approved smallint NOT NULL,
    findings bigint NOT NULL,
    points   double precision NOT NULL,
    PRIMARY KEY (scope, key, kind, severity, approved)
);
CREATE TABLE model_summary (
    sha256           text COLLATE "C" PRIMARY KEY,
    model_format     text COLLATE "C" NOT NULL,
    model_arch       text COLLATE "C" NOT NULL,
    model_params     bigint NOT NULL,
    nbytes           bigint NOT NULL,
    hosts            bigint NOT NULL,
    unapproved_hosts bigint NOT NULL,
    copies           bigint NOT NULL,
    last_seen        bigint NOT NULL
);
CREATE INDEX model_summary_rank ON model_summary (unapproved_hosts DESC, hosts DESC, sha256);
CREATE TABLE service_summary (
    host_id      text COLLATE "C" NOT NULL,
    service      text COLLATE "C" NOT NULL,
    process_name text COLLATE "C" NOT NULL,
    vendor       text COLLATE "C" NOT NULL,
    nbytes       bigint NOT NULL,
    findings     bigint NOT NULL,
    unapproved   bigint NOT NULL,
    last_seen    bigint NOT NULL,
    PRIMARY KEY (host_id, service, process_name)
);
CREATE INDEX service_summary_by_service ON service_summary (service, host_id, process_name)
    INCLUDE (vendor, nbytes, findings, unapproved, last_seen);
CREATE TABLE runtime_summary (
    host_id    text COLLATE "C" NOT NULL,
    runtime    text COLLATE "C" NOT NULL,
    exposed    integer NOT NULL,
    findings   bigint NOT NULL,
    unapproved bigint NOT NULL,
    last_seen  bigint NOT NULL,
    PRIMARY KEY (host_id, runtime)
);
INSERT INTO summary_keys (scope, key, dirty) SELECT 'host', host_id, 1 FROM findings GROUP BY host_id;
INSERT INTO summary_keys (scope, key, dirty)
    SELECT 'usage', host_id, 1 FROM findings WHERE runtime <> '' OR service <> '' GROUP BY host_id;
INSERT INTO summary_keys (scope, key, dirty)
    SELECT 'user', user_name, 1 FROM findings WHERE user_name <> '' GROUP BY user_name;
INSERT INTO summary_keys (scope, key, dirty)
    SELECT 'model', sha256, 1 FROM findings WHERE sha256 <> '' AND kind = {artifact} GROUP BY sha256;
""".replace("{artifact}", str(_ARTIFACT))

# Migration 5: the packets each agent's network capture lost (Heartbeat.capture_drops).
_MIGRATE_TO_5 = """
ALTER TABLE hosts ADD COLUMN capture_drops bigint NOT NULL DEFAULT 0;
"""

# Migration 6, as SQLite's version 11: the activity views, the services view and the census'
# holders read kept rows. A host's tally rows keep their findings' bytes and newest last_seen
# (summaries.read_activity); each AI service keeps one fleet row (summaries.refresh_fleet_services)
# computed from the hosts' service rows; each weights hash its first holders (KEPT_HOLDERS). Every
# host, hash and service held is marked dirty: the first refresh computes them.
_MIGRATE_TO_6 = """
ALTER TABLE risk_summary ADD COLUMN nbytes bigint NOT NULL DEFAULT 0;
ALTER TABLE risk_summary ADD COLUMN last_seen bigint NOT NULL DEFAULT 0;
CREATE TABLE fleet_service_summary (
    service    text COLLATE "C" PRIMARY KEY,
    vendor     text COLLATE "C" NOT NULL,
    hosts      bigint NOT NULL,
    processes  bigint NOT NULL,
    nbytes     bigint NOT NULL,
    findings   bigint NOT NULL,
    unapproved bigint NOT NULL,
    last_seen  bigint NOT NULL
);
CREATE TABLE model_holder_summary (
    sha256   text COLLATE "C" NOT NULL,
    n        integer NOT NULL,
    host_id  text COLLATE "C" NOT NULL,
    path     text COLLATE "C" NOT NULL,
    approved smallint NOT NULL,
    PRIMARY KEY (sha256, n)
);
UPDATE summary_keys SET dirty = dirty + 1 WHERE scope IN ('host', 'model');
INSERT INTO summary_keys (scope, key, dirty)
    SELECT 'service', service, 1 FROM service_summary GROUP BY service
    ON CONFLICT (scope, key) DO UPDATE SET dirty = summary_keys.dirty + 1;
"""

_MIGRATIONS = {
    1: _SCHEMA_1,
    2: _MIGRATE_TO_2,
    3: _MIGRATE_TO_3,
    4: _MIGRATE_TO_4,
    5: _MIGRATE_TO_5,
    6: _MIGRATE_TO_6,
}

_FINDING_COLUMNS = (
    f"host_id, id, kind, severity, confidence, approved, first_seen, last_seen, count, data, {_FACT_COLUMNS}"
)
_FINDING_TYPES = [
    "text", "text", "int2", "int2", "float8", "int2", "int8", "int8", "int8", "bytea", *(t for _, t in _FACTS)
]  # fmt: skip

_EXISTING = """
SELECT k.host_id, k.id, k.first_seen, k.last_seen, k.count
FROM finding_keys k JOIN unnest(%s::text[], %s::text[]) AS u(host_id, id)
  ON k.host_id = u.host_id AND k.id = u.id
"""

# A finding whose last_seen grew takes the new body; PostgreSQL moves the row to its new day's
# partition when the day changes. The old last_seen names the partition it is in now.
# `moved` lists the summary keys the old version belonged to and the new one does not (SET
# expressions read the old row; `n` holds the new version's key columns), as SQLite's upsert does.
_MOVE_FINDING = """
UPDATE findings SET kind = %s, severity = %s, confidence = %s, approved = %s, first_seen = %s,
    last_seen = %s, count = %s, data = %s, {facts},
    moved = {moved}
FROM (SELECT %s::int2 AS kind, %s::text AS user_name, %s::text AS sha256, %s::text AS runtime,
             %s::text AS service) AS n
WHERE host_id = %s AND id = %s AND last_seen = %s
""".format(
    facts=", ".join(f"{c} = %s" for c, _ in _FACTS),
    moved=summaries.moved_sql("findings", "n", _ARTIFACT),
)

_WIDEN_FINDING = """
UPDATE findings SET first_seen = %s, count = %s WHERE host_id = %s AND id = %s AND last_seen = %s
"""

_UPDATE_KEYS = """
UPDATE finding_keys k SET first_seen = u.first_seen, last_seen = u.last_seen, count = u.count
FROM unnest(%s::text[], %s::text[], %s::int8[], %s::int8[], %s::int8[])
    AS u(host_id, id, first_seen, last_seen, count)
WHERE k.host_id = u.host_id AND k.id = u.id
"""

_TOUCH_HOST_SEQUENCE = """
INSERT INTO hosts (host_id, first_seen, last_seen, last_sequence) VALUES (%s, %s, %s, %s)
ON CONFLICT (host_id) DO UPDATE SET
    last_seen = greatest(hosts.last_seen, excluded.last_seen),
    last_sequence = greatest(hosts.last_sequence, excluded.last_sequence)
"""

_UPSERT_HOST = """
INSERT INTO hosts (host_id, hostname, os, os_release, architecture, agent_version, policy_version,
                   peer, sensors, hello, first_seen, last_seen)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (host_id) DO UPDATE SET
    hostname = excluded.hostname, os = excluded.os, os_release = excluded.os_release,
    architecture = excluded.architecture, agent_version = excluded.agent_version,
    policy_version = excluded.policy_version, peer = excluded.peer, sensors = excluded.sensors,
    hello = excluded.hello, last_seen = greatest(hosts.last_seen, excluded.last_seen)
"""

_HEARTBEAT = """
INSERT INTO hosts (host_id, first_seen, last_seen, last_heartbeat, agent_cpu_percent, agent_rss_bytes,
                   spool_depth, dropped_total, capture_drops, sensors)
VALUES (%(host)s, %(now)s, %(now)s, %(sent)s, %(cpu)s, %(rss)s, %(spool)s, %(dropped)s, %(capture)s,
        coalesce(%(sensors)s, '[]'))
ON CONFLICT (host_id) DO UPDATE SET
    last_seen = greatest(hosts.last_seen, excluded.last_seen),
    last_heartbeat = excluded.last_heartbeat,
    agent_cpu_percent = excluded.agent_cpu_percent,
    agent_rss_bytes = excluded.agent_rss_bytes,
    spool_depth = excluded.spool_depth,
    dropped_total = excluded.dropped_total,
    capture_drops = excluded.capture_drops,
    sensors = coalesce(%(sensors)s, hosts.sensors)
"""

_UPSERT_INVENTORY = """
INSERT INTO inventories (host_id, taken_at, received_at, models, runtimes, data)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (host_id) DO UPDATE SET
    taken_at = excluded.taken_at, received_at = excluded.received_at, models = excluded.models,
    runtimes = excluded.runtimes, data = excluded.data
WHERE excluded.taken_at >= inventories.taken_at
"""

_REGISTER_AGENT = """
INSERT INTO agents (host_id, enrolled_at, renewed_at, serial, not_after, hostname)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (host_id) DO UPDATE SET
    renewed_at = excluded.renewed_at, serial = excluded.serial, not_after = excluded.not_after,
    hostname = CASE WHEN excluded.hostname <> '' THEN excluded.hostname ELSE agents.hostname END
"""

_AGENT_COLUMNS = "host_id, enrolled_at, renewed_at, serial, not_after, hostname, revoked_at"

_HOSTS = """
SELECT host_id, hostname, os, os_release, architecture, agent_version, policy_version, peer, sensors,
       first_seen, last_seen, last_sequence, last_heartbeat, agent_cpu_percent, agent_rss_bytes,
       spool_depth, dropped_total, silent_since, capture_drops
FROM hosts ORDER BY host_id
"""

_HOST_FINDING_COUNTS = """
SELECT host_id, severity, count(*), count(*) FILTER (WHERE approved = 0)
FROM findings GROUP BY host_id, severity
"""

_UPSERT_SNAPSHOT = """
INSERT INTO risk_snapshots (day, scope, key, score, level, findings, unapproved)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (day, scope, key) DO UPDATE SET
    score = excluded.score, level = excluded.level, findings = excluded.findings,
    unapproved = excluded.unapproved
"""

#: psycopg's placeholder, handed to the SQL builders of reads.py and summaries.py (SQLite's is "?").
_P = "%s"
_MARK_DIRTY = summaries.portable(summaries.MARK_DIRTY, _P)


def _since_sql(since: float | None) -> str:
    return "" if since is None else f" AND last_seen >= {_P}"


def _since_params(since: float | None) -> list[Any]:
    return [] if since is None else [seconds_to_ns(since)]


# The fleet views' aggregates: SQLite's (sqlite.py), in PostgreSQL's words (FILTER, = ANY).
_SERVICES = """
SELECT service, max(vendor), count(DISTINCT host_id), count(DISTINCT process_name), sum(nbytes), count(*),
       count(*) FILTER (WHERE approved = 0) AS unapproved, max(last_seen)
FROM findings WHERE service <> ''{since} GROUP BY service
ORDER BY unapproved DESC, count(DISTINCT host_id) DESC, service
"""

_RUNTIMES = """
SELECT runtime, count(DISTINCT host_id), count(DISTINCT host_id) FILTER (WHERE kind = %s), count(*),
       count(*) FILTER (WHERE approved = 0), max(last_seen)
FROM findings WHERE runtime <> ''{since} GROUP BY runtime ORDER BY count(DISTINCT host_id) DESC, runtime
"""

# The kind is a constant, not a parameter: only a constant proves findings_model's predicate.
_CENSUS_HOLDERS = """
SELECT sha256, host_id, path, approved FROM (
    SELECT sha256, host_id, path, approved,
           row_number() OVER (PARTITION BY sha256 ORDER BY host_id, path, approved) AS n
    FROM findings WHERE sha256 <> '' AND kind = {artifact} AND sha256 = ANY(%s::text[])
) AS held WHERE n <= %s ORDER BY sha256, n
""".replace("{artifact}", str(int(finding_pb2.KIND_MODEL_ARTIFACT)))

_PARTITIONS = """
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'findings'::regclass
"""


def _backfill_facts(conn: psycopg.Connection[Any]) -> None:
    """Version 2: fill the evidence-fact columns of findings stored before them, from their bodies
    (in key order, 10,000 at a time, inside the migration's transaction)."""
    after: tuple[str, str] = ("", "")
    columns = ", ".join(f"u.{c}" for c, _ in _FACTS)
    arrays = ", ".join(f"%s::{t}[]" for _, t in _FACTS)
    update = (
        f"UPDATE findings f SET ({_FACT_COLUMNS}) = ({columns}) "
        f"FROM unnest(%s::text[], %s::text[], %s::int8[], {arrays}) "
        f"AS u(host_id, id, last_seen, {_FACT_COLUMNS}) "
        "WHERE f.host_id = u.host_id AND f.id = u.id AND f.last_seen = u.last_seen"
    )
    while True:
        rows = conn.execute(
            "SELECT host_id, id, last_seen, data FROM findings WHERE (host_id, id) > (%s, %s) "
            "ORDER BY host_id, id LIMIT 10000",
            after,
        ).fetchall()
        if not rows:
            return
        updates = []
        for host_id, fid, last_seen, data in rows:
            try:
                facts = evidence_facts(finding_pb2.Finding.FromString(data))
            except DecodeError:
                continue  # an unreadable body keeps empty facts; reads show it as before
            updates.append((host_id, fid, last_seen, *facts))
        if updates:
            conn.execute(update.encode(), [list(column) for column in zip(*updates, strict=True)])
        after = (rows[-1][0], rows[-1][1])


def host_lock_key(host_id: str) -> int:
    """The advisory lock key of one host's findings: a stable signed 64-bit hash of its id."""
    return int.from_bytes(hashlib.blake2b(host_id.encode(), digest_size=8).digest(), "big", signed=True)


def partition_name(day: int) -> str:
    return f"findings_{dt.date.fromordinal(_EPOCH_ORDINAL + day):%Y%m%d}"


_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


def _partition_day(name: str) -> int | None:
    found = _PARTITION_NAME.match(name)
    if not found:
        return None
    return dt.datetime.strptime(found.group(1), "%Y%m%d").date().toordinal() - _EPOCH_ORDINAL


def _rows_with(row: FindingRow, first: int, count: int) -> FindingRow:
    return (*row[:6], first, row[7], count, *row[9:])


class PostgresStore(summaries.KeptTallyReads):
    """`Store` over one PostgreSQL database (a `postgresql://` URL, libpq's syntax)."""

    def __init__(
        self,
        url: str,
        *,
        create: bool = True,
        clock: Callable[[], float] = time.time,
        pool_size: int = 8,
        connect_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self._clock = clock
        self._closed = False
        self._days: set[int] = set()  # days whose partition exists (may lag behind other collectors)
        self._days_lock = threading.Lock()
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=int(connect_timeout)) as conn:
                self._init_schema(conn, create)
                self._days = self._attached_days(conn)
        except psycopg.Error as exc:
            raise StoreError(f"cannot use {self._safe_url()}: {_reason(exc)}") from None
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            timeout=connect_timeout,
            kwargs={"connect_timeout": int(connect_timeout)},
            check=ConnectionPool.check_connection,
            reconnect_timeout=3600.0,
            name="umbra-store",
            open=True,
        )

    def _safe_url(self) -> str:
        from . import redact_url

        return redact_url(self.url)

    # ---- schema

    @staticmethod
    def _schema_version(conn: psycopg.Connection[Any]) -> int:
        if conn.execute("SELECT to_regclass('schema_version')").fetchone() == (None,):
            return 0
        row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        return int(row[0]) if row else 0

    def _init_schema(self, conn: psycopg.Connection[Any], create: bool) -> None:
        if not create:
            version = self._schema_version(conn)
            if version == 0:
                raise StoreError(
                    f"{self._safe_url()} has no Umbra schema: "
                    "start `umbra-collector serve --db URL` on it once"
                )
            if version < SCHEMA_VERSION:
                raise StoreError(
                    f"{self._safe_url()} has schema version {version}, older than this collector's "
                    f"{SCHEMA_VERSION}: start `umbra-collector serve` on it once to migrate"
                )
            if version > SCHEMA_VERSION:
                raise StoreError(f"schema version {version} is newer than this collector's {SCHEMA_VERSION}")
            return
        # Collectors starting at once queue here; the second finds the work done.
        conn.execute("SELECT pg_advisory_lock(%s, %s)", (_LOCK_SPACE, _MIGRATION_LOCK))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            current = self._schema_version(conn)
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"{self._safe_url()} has schema version {current}, newer than this collector's "
                    f"{SCHEMA_VERSION}"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                with conn.transaction():
                    conn.execute(_MIGRATIONS[version].encode())
                    if version == 2:
                        _backfill_facts(conn)
                    conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", (_LOCK_SPACE, _MIGRATION_LOCK))

    @staticmethod
    def _attached_days(conn: psycopg.Connection[Any]) -> set[int]:
        days = set()
        for (name,) in conn.execute(_PARTITIONS).fetchall():
            day = _partition_day(name)
            if day is not None:
                days.add(day)
        return days

    def partitions(self) -> list[str]:
        """The names of the findings partitions, oldest first (the default partition last)."""
        with self._conn("read partitions") as conn:
            names = [name for (name,) in conn.execute(_PARTITIONS).fetchall()]
        return sorted(names, key=lambda n: (n == "findings_default", n))

    def _ensure_partitions(self, days: set[int]) -> None:
        """Create the partitions of `days` near today that do not exist yet (their own transaction:
        DDL must not sit inside the ingest transaction, which many collectors run at once)."""
        today = int(self._clock() // 86_400)
        wanted = {d for d in days if today - PAST_DAYS <= d <= today + FUTURE_DAYS}
        with self._days_lock:
            missing = wanted - self._days
        if not missing:
            return
        with self._conn("create partitions") as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_SPACE, _PARTITION_LOCK))
            existing = self._attached_days(conn)  # another collector may have made them
            for day in sorted(missing - existing):
                name = partition_name(day)
                low, high = day * DAY_NS, (day + 1) * DAY_NS
                # Rows of that day already in the default partition move into the new one, which
                # must not be attached while the default still holds them. Locks go parent first,
                # then the default, the order ingest and retention take them in (no deadlock).
                conn.execute("LOCK TABLE ONLY findings IN SHARE UPDATE EXCLUSIVE MODE")
                conn.execute("LOCK TABLE findings_default IN ACCESS EXCLUSIVE MODE")
                conn.execute(
                    f'CREATE TABLE "{name}" (LIKE findings INCLUDING DEFAULTS INCLUDING CONSTRAINTS)'
                )
                columns = f"{_FINDING_COLUMNS}, moved"
                conn.execute(
                    f"WITH taken AS (DELETE FROM findings_default WHERE last_seen >= %s AND last_seen < %s "
                    f'RETURNING {columns}) INSERT INTO "{name}" ({columns}) SELECT {columns} FROM taken',
                    (low, high),
                )
                conn.execute(
                    f'ALTER TABLE findings ATTACH PARTITION "{name}" FOR VALUES FROM ({low}) TO ({high})'
                )
            existing |= missing
        with self._days_lock:
            self._days |= existing

    # ---- connections

    @contextmanager
    def _conn(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection inside one transaction, committed on success; any database error
        (including a server that went away) becomes StoreError, and the pool drops that connection."""
        if self._closed:
            raise StoreError("store is closed")
        try:
            with self._pool.connection() as conn, conn.transaction():
                yield conn
        except psycopg.Error as exc:
            raise StoreError(f"cannot {what}: {_reason(exc)}") from exc
        except Exception as exc:
            if self._closed:
                raise StoreError("store is closed") from exc
            raise

    # ---- writes

    def upsert_hosts(self, rows: Sequence[HelloRow]) -> None:
        if not rows:
            return
        now = ns(self._clock())
        # In host order (stable: a host's later Hello still wins), so two collectors' groups lock
        # host rows in one order and never deadlock.
        ordered = sorted(rows, key=lambda r: r.host_id)
        with self._conn(f"register {described_hosts(rows)}") as conn, conn.cursor() as cur:
            cur.executemany(_UPSERT_HOST, [(*row, now, now) for row in ordered])

    def record_heartbeat(self, host_id: str, heartbeat: agent_pb2.Heartbeat) -> None:
        now = ns(self._clock())
        hb = heartbeat_row(host_id, heartbeat, now)
        params = {
            "host": host_id,
            "now": now,
            "sent": hb.sent_at,
            "cpu": hb.cpu_percent,
            "rss": hb.rss_bytes,
            "spool": hb.spool_depth,
            "dropped": hb.dropped_total,
            "capture": hb.capture_drops,
            "sensors": hb.sensors,
        }
        with self._conn(f"record heartbeat of {host_id!r}") as conn:
            conn.execute(_HEARTBEAT, params)

    def store_prepared(self, batches: Sequence[PreparedBatch]) -> list[StoreResult]:
        """All batches in one transaction: one commit (one WAL flush) for many agents' batches."""
        if not batches:
            return []
        now = ns(self._clock())
        self._ensure_partitions({row[7] // DAY_NS for b in batches for row in b.rows})
        with self._conn(f"store {len(batches)} batches") as conn:
            results = self._merge(conn, [(b.host_id, b.rows) for b in batches])
            sequences: dict[str, int] = {}
            for b in batches:
                sequences[b.host_id] = max(sequences.get(b.host_id, 0), b.sequence)
            with conn.cursor() as cur:
                cur.executemany(
                    _TOUCH_HOST_SEQUENCE, [(h, now, now, seq) for h, seq in sorted(sequences.items())]
                )
                cur.executemany(_MARK_DIRTY, summaries.batch_keys(batches, _ARTIFACT))
        return results

    def _merge(
        self, conn: psycopg.Connection[Any], batches: Sequence[tuple[str, Sequence[FindingRow]]]
    ) -> list[StoreResult]:
        """Upsert the batches' rows by the contract's merge rule; one exact result per batch."""
        # Retention (drop_before) locks the table exclusively: it waits for this transaction or
        # this one waits for it, never half of each.
        conn.execute("LOCK TABLE ONLY findings IN ROW EXCLUSIVE MODE")
        # In ascending key order, so two collectors' groups never wait on each other in a cycle.
        conn.execute(
            "SELECT count(pg_advisory_xact_lock(k)) FROM unnest(%s::int8[]) AS k",
            (sorted({host_lock_key(host) for host, _ in batches}),),
        )
        keys_h = [row[0] for _, rows in batches for row in rows]
        keys_i = [row[1] for _, rows in batches for row in rows]
        stored: dict[tuple[str, str], tuple[int, int, int]] = {}
        if keys_h:
            for host_id, fid, first, last, count in conn.execute(_EXISTING, (keys_h, keys_i)).fetchall():
                stored[(host_id, fid)] = (first, last, count)
        # Merge in memory, batch by batch, so each batch's counts see the ones before it.
        state: dict[tuple[str, str], list[int]] = {k: list(v) for k, v in stored.items()}
        body: dict[tuple[str, str], FindingRow] = {}  # the newest version of each changed finding
        results = []
        for _, rows in batches:
            new = updated = unchanged = 0
            for row in rows:
                key = (row[0], row[1])
                seen = state.get(key)
                if seen is None:
                    state[key] = [row[6], row[7], row[8]]
                    body[key] = row
                    new += 1
                    continue
                changed = False
                if row[7] > seen[1]:
                    seen[1] = row[7]
                    body[key] = row
                    changed = True
                if row[6] < seen[0]:
                    seen[0] = row[6]
                    changed = True
                if row[8] > seen[2]:
                    seen[2] = row[8]
                    changed = True
                if changed:
                    updated += 1
                else:
                    unchanged += 1
            results.append(StoreResult(new=new, updated=updated, unchanged=unchanged))
        inserts: list[FindingRow] = []
        moves: list[tuple[Any, ...]] = []
        widens: list[tuple[Any, ...]] = []
        key_updates: list[tuple[str, str, int, int, int]] = []
        for key, (first, last, count) in state.items():
            before = stored.get(key)
            if before is None:
                inserts.append(_rows_with(body[key], first, count))
                continue
            if before == (first, last, count):
                continue
            key_updates.append((key[0], key[1], first, last, count))
            if key in body:
                row = body[key]
                # the new version's summary keys: kind, user, sha256, runtime, service
                new_keys = (row[2], row[10], row[16], row[12], row[13])
                moves.append((*row[2:6], first, last, count, *row[9:], *new_keys, key[0], key[1], before[1]))
            else:
                widens.append((first, count, key[0], key[1], before[1]))
        with conn.cursor() as cur:
            if inserts:
                with cur.copy(f"COPY findings ({_FINDING_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(_FINDING_TYPES)
                    for finding in inserts:
                        copy.write_row(finding)
                with cur.copy(
                    "COPY finding_keys (host_id, id, first_seen, last_seen, count) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(["text", "text", "int8", "int8", "int8"])
                    for f in inserts:
                        copy.write_row((f[0], f[1], f[6], f[7], f[8]))
            if moves:
                cur.executemany(_MOVE_FINDING, moves)
            if widens:
                cur.executemany(_WIDEN_FINDING, widens)
            if key_updates:
                cur.execute(_UPDATE_KEYS, [list(column) for column in zip(*key_updates, strict=True)])
        return results

    def record_health(self, host_id: str, finding: finding_pb2.Finding, silent_since: float | None) -> None:
        rows = finding_rows(host_id, 0, [finding])
        now = ns(self._clock())
        self._ensure_partitions({row[7] // DAY_NS for row in rows})
        with self._conn(f"record health of {host_id!r}") as conn:
            conn.execute(
                "INSERT INTO hosts (host_id, first_seen, last_seen) VALUES (%s, %s, %s) "
                "ON CONFLICT (host_id) DO NOTHING",
                (host_id, now, now),
            )
            self._merge(conn, [(host_id, rows)])
            with conn.cursor() as cur:
                keys = summaries.batch_keys([PreparedBatch(host_id, 0, rows)], _ARTIFACT)
                cur.executemany(_MARK_DIRTY, keys)
            if silent_since is not None:
                conn.execute(
                    "UPDATE hosts SET silent_since = %s WHERE host_id = %s", (ns(silent_since), host_id)
                )

    def record_inventory(self, host_id: str, inventory: agent_pb2.Inventory) -> bool:
        inv = inventory_row(host_id, inventory)
        row = (inv.host_id, inv.taken_at, ns(self._clock()), inv.models, inv.runtimes, inv.data)
        with self._conn(f"record the inventory of {host_id!r}") as conn:
            return conn.execute(_UPSERT_INVENTORY, row).rowcount > 0

    def drop_before(self, cutoff: float) -> None:
        """Drop every partition wholly before `cutoff`, then delete the older rows of the day it
        falls in (and of the default partition), and the merge state of all of them."""
        cut = ns(cutoff)
        with self._conn("drop old findings") as conn:
            # Waits for ingest transactions in flight; ingest waits for this one.
            conn.execute("LOCK TABLE ONLY findings IN ACCESS EXCLUSIVE MODE")
            dropped = set()
            for day in sorted(self._attached_days(conn)):
                if (day + 1) * DAY_NS <= cut:
                    conn.execute(f'DROP TABLE "{partition_name(day)}"')
                    dropped.add(day)
            conn.execute("DELETE FROM findings WHERE last_seen < %s", (cut,))
            conn.execute("DELETE FROM finding_keys WHERE last_seen < %s", (cut,))
            conn.execute(summaries.ALL_DIRTY)
        with self._days_lock:
            self._days -= dropped

    # ---- reads

    def inventories(self, host_id: str | None = None) -> list[InventoryRecord]:
        sql = "SELECT host_id, taken_at, received_at, data FROM inventories"
        params: tuple[str, ...] = ()
        if host_id is not None:
            sql, params = sql + " WHERE host_id = %s", (host_id,)
        with self._conn("read inventories") as conn:
            rows = conn.execute(sql + " ORDER BY host_id", params).fetchall()
        return [inventory_record(*row) for row in rows]

    def host_contacts(self) -> list[HostContact]:
        with self._conn("read hosts") as conn:
            rows = conn.execute(
                "SELECT host_id, last_seen, silent_since FROM hosts ORDER BY host_id"
            ).fetchall()
        return [HostContact(h, last / 1e9, silent / 1e9) for h, last, silent in rows]

    def hosts(self, with_counts: bool = True) -> list[HostRecord]:
        with self._conn("read hosts") as conn:
            host_rows = conn.execute(_HOSTS).fetchall()
            count_rows = conn.execute(_HOST_FINDING_COUNTS).fetchall() if with_counts else []
        totals, by_severity = severity_counts(count_rows)
        return [host_record(r, totals, by_severity) for r in host_rows]

    def findings(
        self, host_id: str | None = None, kind: str | None = None, limit: int | None = 1000
    ) -> list[dict[str, Any]]:
        kinds = [] if kind is None else [int(codec.kind_value(kind))]
        sql, params = listing_sql(host_id, kinds, limit, self._rare(kinds if host_id is None else []), _P)
        with self._conn("read findings") as conn:
            rows = conn.execute(sql.encode(), params).fetchall()
        return [finding_dict(*row[:5]) for row in rows]

    # ---- the read side's aggregates (collector.query builds every fleet view on these)

    def _rows(self, sql: str, params: Sequence[Any], what: str) -> list[tuple[Any, ...]]:
        with self._conn(f"read {what}") as conn:
            return conn.execute(sql.encode(), params).fetchall()

    def newest_finding(self) -> float:
        (newest,) = self._rows("SELECT max(last_seen) FROM findings", [], "findings")[0]
        return (newest or 0) / 1e9

    # storage.summaries' SummaryDb: each read and each write its own pooled transaction
    placeholder = _P

    def summary_rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._rows(sql, params, "summaries")

    lock_rows = " FOR UPDATE"

    @contextmanager
    def summary_write(self) -> Iterator[tuple[summaries.Run, summaries.Fetch]]:
        with self._conn("write summaries") as conn, conn.cursor() as cur:

            def run(sql: str, rows: Sequence[Sequence[Any]]) -> int:
                if not rows:
                    return 0
                cur.executemany(sql.encode(), rows)  # pipelined: one round trip for all rows
                return cur.rowcount

            def fetch(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
                return cur.execute(sql.encode(), params).fetchall()

            yield run, fetch

    def refresh_summaries(self, spec: ScoreSpec) -> int:
        if not spec.as_of:
            return 0
        kinds = sorted(KNOWN_KINDS)
        return (
            summaries.refresh_tally(self, "host", spec, kinds)
            + summaries.refresh_tally(self, "user", spec, kinds)
            + summaries.refresh_models(self, _ARTIFACT)
            + summaries.refresh_usage(self, kinds, _EXPOSED)
        )

    def _kept_tally(self, by: GroupBy, spec: ScoreSpec) -> bool:
        """Whether `by`'s tally under `spec` is read from the kept summaries, brought up to date here."""
        if by not in ("host", "user"):
            raise ValueError(f"cannot group findings by {by!r}")
        if not spec.as_of:
            return False
        summaries.refresh_tally(self, by, spec, sorted(KNOWN_KINDS))
        return True

    def tally(self, by: GroupBy, spec: ScoreSpec, since: float | None = None) -> list[TallyRow]:
        if since is None and self._kept_tally(by, spec):
            return tally_rows(summaries.read_tally(self, by))
        points, params = spec.points_sql(_P)
        if by == "host":
            key, where = "host_id", []
        elif by == "user":
            key, where = "user_name", ["user_name <> ''"]
        else:
            raise ValueError(f"cannot group findings by {by!r}")
        if since is not None:
            where.append(f"last_seen >= {_P}")
            params.append(seconds_to_ns(since))
        sql = (
            f"SELECT {key}, kind, severity, approved, count(*), sum({points}) FROM findings"
            + (" WHERE " + " AND ".join(where) if where else "")
            + f" GROUP BY kind, {key}, severity, approved"
        )
        return tally_rows(self._rows(sql, params, "risk tallies"))

    def findings_page(
        self, where: FindingFilter, limit: int, after: FindingCursor | None = None
    ) -> FindingPage:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        # reads.keyset_sql's condition as a row comparison, which PostgreSQL turns into the
        # start of an index range (the OR form would be a filter over every row before it).
        keyset = (
            (f"(last_seen, host_id, id) < ({_P}, {_P}, {_P})", [after.last_seen_ns, after.host_id, after.id])
            if after is not None
            else None
        )
        sql, params = page_sql(
            where, limit, keyset, self._rare(where.kinds if where.host_id is None else []), _P
        )
        return findings_page_of(self._rows(sql, params, "findings"), limit)

    def _rare(self, kinds: Sequence[int]) -> bool:
        """Whether `kinds` have few findings (reads.kinds_listing); False for no kinds."""
        return bool(kinds) and self._rows(*rare_kinds_sql(kinds, _P), "findings")[0][0] < RARE_KINDS

    def finding(self, host_id: str, finding_id: str) -> dict[str, Any] | None:
        # finding_keys' last_seen names the one partition the finding is in (as ingest's UPDATEs
        # use it), so the second probe touches one partition's key, not every day's.
        with self._conn("read a finding") as conn:
            key = conn.execute(
                "SELECT last_seen FROM finding_keys WHERE host_id = %s AND id = %s", (host_id, finding_id)
            ).fetchone()
            row = (
                conn.execute(
                    "SELECT first_seen, last_seen, count, data FROM findings "
                    "WHERE host_id = %s AND id = %s AND last_seen = %s",
                    (host_id, finding_id, key[0]),
                ).fetchone()
                if key is not None
                else None
            )
        return finding_dict(host_id, *row) if row is not None else None

    def services(self, since: float | None = None) -> list[ServiceRow]:
        sql, params = _SERVICES.format(since=_since_sql(since)), _since_params(since)
        if since is None:
            summaries.refresh_usage(self, sorted(KNOWN_KINDS), _EXPOSED)
            sql = summaries.READ_SERVICES
        return [  # sums of bigint columns come back as numeric
            ServiceRow(svc, vendor, hosts, procs, int(nbytes or 0), int(n), int(unappr or 0), int(last) / 1e9)
            for svc, vendor, hosts, procs, nbytes, n, unappr, last in self._rows(sql, params, "AI services")
        ]

    def runtimes(self, since: float | None = None) -> list[RuntimeRow]:
        sql = _RUNTIMES.format(since=_since_sql(since))
        params = [_EXPOSED, *_since_params(since)]
        if since is None:
            summaries.refresh_usage(self, sorted(KNOWN_KINDS), _EXPOSED)
            sql, params = summaries.READ_RUNTIMES, []
        return [  # sums of bigint columns come back as numeric
            RuntimeRow(rt, hosts, int(exposed), int(n), int(unappr or 0), int(last) / 1e9)
            for rt, hosts, exposed, n, unappr, last in self._rows(sql, params, "runtimes")
        ]

    def activity(
        self, kinds: Sequence[int], since: float | None = None, spec: ScoreSpec | None = None
    ) -> list[ActivityRow]:
        if not kinds:
            return []
        if since is None and spec is not None and self._kept_tally("host", spec):
            return activity_rows(summaries.read_activity(self, kinds))
        sql = (
            "SELECT host_id, kind, count(*), count(*) FILTER (WHERE approved = 0), sum(nbytes), "
            f"max(last_seen) FROM findings WHERE kind IN {in_list(kinds, _P)}{_since_sql(since)} "
            "GROUP BY kind, host_id"
        )
        params = [int(k) for k in kinds] + _since_params(since)
        return activity_rows(self._rows(sql, params, "activity"))

    def model_census(self, limit: int = 100, holders: int = 10) -> list[ModelRow]:
        if limit < 1 or holders < 0:
            raise ValueError("limit must be >= 1 and holders >= 0")
        summaries.refresh_models(self, _ARTIFACT)
        rows = summaries.read_census(self, limit)
        if not rows:
            return []
        held: dict[str, list[ModelHolder]] = {}
        hashes = [r[0] for r in rows]
        found = (
            summaries.read_holders(self, hashes, holders)
            if holders <= summaries.KEPT_HOLDERS
            else self._rows(_CENSUS_HOLDERS, [hashes, holders], "the model census")
        )
        for sha, host, path, approved in found if holders else ():
            held.setdefault(sha, []).append(ModelHolder(host, path, bool(approved)))
        return model_rows(rows, held)

    def record_risk_snapshot(self, rows: Sequence[SnapshotRow]) -> None:
        with self._conn("record risk snapshot") as conn, conn.cursor() as cur:
            cur.executemany(
                _UPSERT_SNAPSHOT,
                [(r.day, r.scope, r.key, r.score, r.level, r.findings, r.unapproved) for r in rows],
            )

    def risk_snapshots(
        self, scope: SnapshotScope, key: str | None = None, since_day: str | None = None
    ) -> list[SnapshotRow]:
        sql = (
            "SELECT day, scope, key, score, level, findings, unapproved FROM risk_snapshots WHERE scope = %s"
        )
        params: list[Any] = [scope]
        if key is not None:
            sql += " AND key = %s"
            params.append(key)
        if since_day is not None:
            sql += " AND day >= %s"
            params.append(since_day)
        rows = self._rows(sql + " ORDER BY day, key", params, "risk snapshots")
        return [SnapshotRow(*r) for r in rows]

    # ---- enrollment tokens, agents, policy

    def create_token(self, token_hash: str, expires_at: float, uses: int, note: str = "") -> None:
        now = ns(self._clock())
        with self._conn("create token") as conn:
            conn.execute(
                "INSERT INTO enroll_tokens (token_hash, created_at, expires_at, uses_left, uses, note) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (token_hash, now, ns(expires_at), uses, uses, note),
            )

    def consume_token(self, token_hash: str, now: float) -> None:
        with self._conn("check token") as conn:
            used = conn.execute(
                "UPDATE enroll_tokens SET uses_left = uses_left - 1 "
                "WHERE token_hash = %s AND uses_left > 0 AND expires_at > %s",
                (token_hash, ns(now)),
            ).rowcount
            if used == 1:
                return
            row = conn.execute(
                "SELECT expires_at, uses_left FROM enroll_tokens WHERE token_hash = %s", (token_hash,)
            ).fetchone()
        if row is None:
            raise TokenRefused("unknown token")
        if row[1] <= 0:
            raise TokenRefused("token already used")
        raise TokenRefused("token expired")

    def tokens(self) -> list[TokenRecord]:
        with self._conn("read tokens") as conn:
            rows = conn.execute(
                "SELECT token_hash, created_at, expires_at, uses_left, uses, note FROM enroll_tokens "
                "ORDER BY created_at DESC"
            ).fetchall()
        return [TokenRecord(h, c / 1e9, e / 1e9, left, uses, note) for h, c, e, left, uses, note in rows]

    def register_agent(
        self, host_id: str, serial: int, not_after: float, hostname: str, *, renewal: bool
    ) -> None:
        now = ns(self._clock())
        with self._conn(f"register agent {host_id!r}") as conn:
            conn.execute(_REGISTER_AGENT, (host_id, now, now, f"{serial:x}", ns(not_after), hostname))
        del renewal

    @staticmethod
    def _agent(row: Sequence[Any]) -> AgentRecord:
        host_id, enrolled, renewed, serial, not_after, hostname, revoked = row
        return AgentRecord(
            host_id, enrolled / 1e9, renewed / 1e9, serial, not_after / 1e9, hostname, revoked / 1e9
        )

    def agent(self, host_id: str) -> AgentRecord | None:
        with self._conn(f"read agent {host_id!r}") as conn:
            row = conn.execute(
                f"SELECT {_AGENT_COLUMNS} FROM agents WHERE host_id = %s", (host_id,)
            ).fetchone()
        return self._agent(row) if row else None

    def agents(self) -> list[AgentRecord]:
        with self._conn("read agents") as conn:
            rows = conn.execute(f"SELECT {_AGENT_COLUMNS} FROM agents ORDER BY host_id").fetchall()
        return [self._agent(r) for r in rows]

    def revoke_agent(self, host_id: str, now: float) -> bool:
        with self._conn(f"revoke agent {host_id!r}") as conn:
            changed = conn.execute(
                "UPDATE agents SET revoked_at = %s WHERE host_id = %s AND revoked_at = 0", (ns(now), host_id)
            ).rowcount
            known = conn.execute("SELECT 1 FROM agents WHERE host_id = %s", (host_id,)).fetchone()
        return bool(changed or known)

    def forget_host(self, host_id: str) -> int:
        with self._conn(f"remove host {host_id!r}") as conn:
            deleted = conn.execute("DELETE FROM findings WHERE host_id = %s", (host_id,)).rowcount
            conn.execute("DELETE FROM finding_keys WHERE host_id = %s", (host_id,))
            conn.execute("DELETE FROM inventories WHERE host_id = %s", (host_id,))
            conn.execute("DELETE FROM hosts WHERE host_id = %s", (host_id,))
            conn.execute(summaries.ALL_DIRTY)
        return int(deleted)

    def revoked_hosts(self) -> frozenset[str]:
        with self._conn("read revocations") as conn:
            rows = conn.execute("SELECT host_id FROM agents WHERE revoked_at <> 0").fetchall()
        return frozenset(r[0] for r in rows)

    def set_policy(self, body: dict[str, Any]) -> int:
        now = ns(self._clock())
        with self._conn("store policy") as conn:
            row = conn.execute(
                "INSERT INTO policies (created_at, body) VALUES (%s, %s) RETURNING version",
                (now, json.dumps(body, sort_keys=True)),
            ).fetchone()
        return int(row[0]) if row else 0

    def current_policy(self) -> PolicyRecord | None:
        with self._conn("read policy") as conn:
            row = conn.execute(
                "SELECT version, created_at, body FROM policies ORDER BY version DESC LIMIT 1"
            ).fetchone()
        return PolicyRecord(row[0], row[1] / 1e9, json.loads(row[2])) if row else None

    # ---- console access: users, API keys, sessions

    def add_user(self, name: str, role: str, password_hash: str) -> bool:
        check_role(role)
        with self._conn(f"add user {name!r}") as conn:
            return (
                conn.execute(
                    "INSERT INTO users (name, role, password_hash, created_at) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (name) DO NOTHING",
                    (name, role, password_hash, ns(self._clock())),
                ).rowcount
                == 1
            )

    def user(self, name: str) -> UserRecord | None:
        rows = self._rows(
            "SELECT name, role, password_hash, created_at FROM users WHERE name = %s", (name,), "users"
        )
        return UserRecord(rows[0][0], rows[0][1], rows[0][2], rows[0][3] / 1e9) if rows else None

    def users(self) -> list[UserRecord]:
        rows = self._rows(
            "SELECT name, role, password_hash, created_at FROM users ORDER BY name", (), "users"
        )
        return [UserRecord(n, r, h, c / 1e9) for n, r, h, c in rows]

    def remove_user(self, name: str) -> bool:
        # The foreign key's ON DELETE CASCADE ends the user's sessions in the same statement.
        with self._conn(f"remove user {name!r}") as conn:
            return conn.execute("DELETE FROM users WHERE name = %s", (name,)).rowcount == 1

    def add_api_key(self, key_id: str, key_hash: str, role: str, note: str = "") -> None:
        check_role(role)
        with self._conn(f"add API key {key_id!r}") as conn:
            conn.execute(
                "INSERT INTO api_keys (key_id, key_hash, role, created_at, note) VALUES (%s, %s, %s, %s, %s)",
                (key_id, key_hash, role, ns(self._clock()), note),
            )

    def api_key(self, key_hash: str) -> ApiKeyRecord | None:
        rows = self._rows(
            "SELECT key_id, role, created_at, note FROM api_keys WHERE key_hash = %s",
            (key_hash,),
            "API keys",
        )
        return ApiKeyRecord(rows[0][0], rows[0][1], rows[0][2] / 1e9, rows[0][3]) if rows else None

    def api_keys(self) -> list[ApiKeyRecord]:
        rows = self._rows(
            "SELECT key_id, role, created_at, note FROM api_keys ORDER BY created_at DESC, key_id",
            (),
            "API keys",
        )
        return [ApiKeyRecord(k, r, c / 1e9, n) for k, r, c, n in rows]

    def remove_api_key(self, key_id: str) -> bool:
        with self._conn(f"remove API key {key_id!r}") as conn:
            return conn.execute("DELETE FROM api_keys WHERE key_id = %s", (key_id,)).rowcount == 1

    def create_session(self, session_hash: str, user: str, csrf: str, expires_at: float) -> None:
        with self._conn("create a session") as conn:
            conn.execute("DELETE FROM sessions WHERE expires_at <= %s", (ns(self._clock()),))
            conn.execute(
                "INSERT INTO sessions (session_hash, user_name, csrf, expires_at) VALUES (%s, %s, %s, %s)",
                (session_hash, user, csrf, ns(expires_at)),
            )

    def session(self, session_hash: str, now: float) -> SessionRecord | None:
        rows = self._rows(
            "SELECT s.user_name, u.role, s.csrf, s.expires_at FROM sessions s "
            "JOIN users u ON u.name = s.user_name WHERE s.session_hash = %s AND s.expires_at > %s",
            (session_hash, ns(now)),
            "sessions",
        )
        return SessionRecord(rows[0][0], rows[0][1], rows[0][2], rows[0][3] / 1e9) if rows else None

    def delete_session(self, session_hash: str) -> None:
        with self._conn("end a session") as conn:
            conn.execute("DELETE FROM sessions WHERE session_hash = %s", (session_hash,))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.close()


def _reason(exc: psycopg.Error) -> str:
    """The server's message without psycopg's multi-line context."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__

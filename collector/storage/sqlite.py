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
import itertools
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import quote

from google.protobuf.message import DecodeError
from umbra import codec
from umbra.private import create_private_file
from umbra.v1 import agent_pb2, finding_pb2

from . import summaries
from .base import (
    KNOWN_KINDS,
    AgentRecord,
    ApiKeyRecord,
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
    keyset_sql,
    rare_kinds_sql,
    seconds_to_ns,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 12
_EXPOSED = int(finding_pb2.KIND_MODEL_SERVER_EXPOSED)
_ARTIFACT = int(finding_pb2.KIND_MODEL_ARTIFACT)
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

#: Evidence-fact columns, in FindingRow order (base.evidence_facts).
_FACT_COLUMNS = (
    "user_name",
    "process_name",
    "runtime",
    "service",
    "vendor",
    "nbytes",
    "sha256",
    "model_format",
    "model_arch",
    "model_params",
    "path",
)
_INTEGER_FACTS = frozenset({"nbytes", "model_params"})

# The merge rule of base.Store in one statement. SET expressions all read the old row; the WHERE
# skips rows the incoming version adds nothing to, so `rowcount` counts only real changes.
_BODY_COLUMNS = ("kind", "severity", "confidence", "approved", "data", *_FACT_COLUMNS)
_NEWER_BODY = "".join(
    f"{c} = CASE WHEN excluded.last_seen > findings.last_seen THEN excluded.{c} ELSE findings.{c} END,\n    "
    for c in _BODY_COLUMNS
)
# A group commit's rows are first copied into the writer connection's temporary table, before the
# write lock is taken (`_stage`); under the lock, one statement a batch upserts its range of them.
# Binding 21 values a row costs about 2 us in Python's sqlite3, and executemany gives up and takes
# back the GIL around every row: with the rows bound under the lock, two collector processes
# spent their time waiting on each other's lock (held 96 % of the wall, on the CPU a third less).
# Staged, the lock is held about two thirds as long for the same findings (README: "SQLite ingest
# after session 7's work").
_ROW_COLUMNS = (
    "host_id, id, kind, severity, confidence, approved, first_seen, last_seen, count, data, "
    + ", ".join(_FACT_COLUMNS)
)  # FindingRow's order
_CREATE_STAGED = f"CREATE TEMP TABLE IF NOT EXISTS staged ({_ROW_COLUMNS})"
_ROW_VALUES = f"({', '.join(['?'] * (10 + len(_FACT_COLUMNS)))})"
_STAGE = f"INSERT INTO temp.staged VALUES {_ROW_VALUES}"
#: Rows one staging statement binds: one step, so one GIL hand-off, for many rows (in one process,
#: a group commit's staging 2.6 -> 2.3 us a finding).
_STAGE_ROWS = 64
_STAGE_MANY = f"INSERT INTO temp.staged VALUES {', '.join([_ROW_VALUES] * _STAGE_ROWS)}"
_UPSERT_TAIL = f"""
ON CONFLICT (host_id, id) DO UPDATE SET
    {_NEWER_BODY}moved = CASE WHEN excluded.last_seen > findings.last_seen
        THEN {summaries.moved_sql("findings", "excluded", _ARTIFACT)} ELSE findings.moved END,
    first_seen = min(findings.first_seen, excluded.first_seen),
    last_seen  = max(findings.last_seen, excluded.last_seen),
    count      = max(findings.count, excluded.count)
WHERE excluded.last_seen > findings.last_seen
   OR excluded.count > findings.count
   OR excluded.first_seen < findings.first_seen
"""
_UPSERT_FINDING = f"""
INSERT INTO findings ({_ROW_COLUMNS})
SELECT {_ROW_COLUMNS} FROM temp.staged WHERE rowid BETWEEN ? AND ?{_UPSERT_TAIL}"""

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

# Version 5: the read side aggregates in SQL. Evidence facts the fleet views group on become
# columns (filled at ingest by base.finding_rows, backfilled here from the stored bodies), each
# with a covering index so a view walks an index, not the table. Partial indexes (WHERE x <> '')
# cost ingest only for the findings that carry the fact. risk_snapshots keeps daily scores.
_MIGRATE_TO_5 = (
    "".join(
        f"ALTER TABLE findings ADD COLUMN {c} {'INTEGER' if c in _INTEGER_FACTS else 'TEXT'} NOT NULL "
        f"DEFAULT {0 if c in _INTEGER_FACTS else repr('')};\n"
        for c in _FACT_COLUMNS
    )
    + """
CREATE INDEX IF NOT EXISTS findings_tally
    ON findings (kind, host_id, severity, approved, last_seen, confidence, nbytes);
CREATE INDEX IF NOT EXISTS findings_user
    ON findings (user_name, kind, severity, approved, last_seen, confidence) WHERE user_name <> '';
CREATE INDEX IF NOT EXISTS findings_service
    ON findings (service, host_id, process_name, approved, nbytes, vendor, last_seen) WHERE service <> '';
CREATE INDEX IF NOT EXISTS findings_runtime
    ON findings (runtime, host_id, kind, approved, last_seen) WHERE runtime <> '';
CREATE INDEX IF NOT EXISTS findings_model
    ON findings (sha256, host_id, approved, last_seen, model_format, model_arch, model_params, nbytes, path)
    WHERE sha256 <> '' AND kind = 5;
CREATE TABLE IF NOT EXISTS risk_snapshots (
    day        TEXT NOT NULL,
    scope      TEXT NOT NULL,
    key        TEXT NOT NULL,
    score      REAL NOT NULL,
    level      TEXT NOT NULL,
    findings   INTEGER NOT NULL,
    unapproved INTEGER NOT NULL,
    PRIMARY KEY (day, scope, key)
);
"""
)

# Version 6: console access. Passwords as KDF strings, API keys and sessions as SHA-256 hashes of
# high-entropy secrets, so a copy of the database logs nobody in.
_MIGRATE_TO_6 = """
CREATE TABLE IF NOT EXISTS users (
    name          TEXT PRIMARY KEY,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id     TEXT PRIMARY KEY,
    key_hash   TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
    created_at INTEGER NOT NULL,
    note       TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS sessions (
    session_hash TEXT PRIMARY KEY,
    user_name    TEXT NOT NULL,
    csrf         TEXT NOT NULL,
    expires_at   INTEGER NOT NULL
);
"""

# Version 7: summaries kept in tables (see storage.summaries): which hosts, users and weights hashes
# changed since their rows were computed, each host's and user's risk tally, each hash's census row.
# A finding whose newer version names another user or hash leaves the old one's rows behind, so
# triggers mark the old one dirty too (the batch itself names only the new one). Everything stored
# before is marked dirty: the first refresh computes it all.
_MIGRATE_TO_7 = f"""
CREATE TABLE IF NOT EXISTS summary_keys (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    dirty       INTEGER NOT NULL DEFAULT 0,
    valid_after INTEGER NOT NULL DEFAULT 0,
    valid_until INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, key)
);
CREATE TABLE IF NOT EXISTS risk_summary (
    scope    TEXT NOT NULL,
    key      TEXT NOT NULL,
    kind     INTEGER NOT NULL,
    severity INTEGER NOT NULL,
    approved INTEGER NOT NULL,
    findings INTEGER NOT NULL,
    points   REAL NOT NULL,
    PRIMARY KEY (scope, key, kind, severity, approved)
);
CREATE TABLE IF NOT EXISTS model_summary (
    sha256           TEXT PRIMARY KEY,
    model_format     TEXT NOT NULL,
    model_arch       TEXT NOT NULL,
    model_params     INTEGER NOT NULL,
    nbytes           INTEGER NOT NULL,
    hosts            INTEGER NOT NULL,
    unapproved_hosts INTEGER NOT NULL,
    copies           INTEGER NOT NULL,
    last_seen        INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS findings_user_moved AFTER UPDATE OF user_name ON findings
WHEN old.user_name <> '' AND old.user_name <> new.user_name
BEGIN
    INSERT INTO summary_keys (scope, key, dirty) VALUES ('user', old.user_name, 1)
    ON CONFLICT (scope, key) DO UPDATE SET dirty = summary_keys.dirty + 1;
END;
CREATE TRIGGER IF NOT EXISTS findings_model_moved AFTER UPDATE OF sha256, kind ON findings
WHEN old.kind = {_ARTIFACT} AND old.sha256 <> '' AND (old.sha256 <> new.sha256 OR new.kind <> {_ARTIFACT})
BEGIN
    INSERT INTO summary_keys (scope, key, dirty) VALUES ('model', old.sha256, 1)
    ON CONFLICT (scope, key) DO UPDATE SET dirty = summary_keys.dirty + 1;
END;
INSERT INTO summary_keys (scope, key, dirty) SELECT 'host', host_id, 1 FROM findings GROUP BY host_id;
INSERT INTO summary_keys (scope, key, dirty)
    SELECT 'user', user_name, 1 FROM findings WHERE user_name <> '' GROUP BY user_name;
INSERT INTO summary_keys (scope, key, dirty)
    SELECT 'model', sha256, 1 FROM findings WHERE sha256 <> '' AND kind = {_ARTIFACT} GROUP BY sha256;
"""

# Version 8: the keys a newer version of a finding leaves behind are listed in its row (`moved`,
# see storage.summaries) instead of by version 7's triggers: any trigger on findings made SQLite
# keep a statement journal page per index for every upserted row (19 -> 8 us a finding at 1M).
_MIGRATE_TO_8 = """
DROP TRIGGER IF EXISTS findings_user_moved;
DROP TRIGGER IF EXISTS findings_model_moved;
ALTER TABLE findings ADD COLUMN moved TEXT NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS findings_moved ON findings (host_id, id) WHERE moved <> '';
"""

# Version 9: each host's AI services and runtimes kept (storage.summaries, scope "usage"), so the
# services and runtimes views read O(hosts) rows. Their refresh reads a host's findings from the
# tally index, which therefore carries the runtime and service facts; findings_runtime is dropped
# (no view walks it now: a runtime filter on a listing walks findings_recent). findings_service
# stays for the service filter and services(since).
_MIGRATE_TO_9 = """
DROP INDEX IF EXISTS findings_tally;
DROP INDEX IF EXISTS findings_runtime;
CREATE INDEX IF NOT EXISTS findings_host
    ON findings (kind, host_id, severity, approved, last_seen, confidence, nbytes, runtime, service,
                 process_name, vendor);
CREATE TABLE IF NOT EXISTS service_summary (
    host_id      TEXT NOT NULL,
    service      TEXT NOT NULL,
    process_name TEXT NOT NULL,
    vendor       TEXT NOT NULL,
    nbytes       INTEGER NOT NULL,
    findings     INTEGER NOT NULL,
    unapproved   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL,
    PRIMARY KEY (host_id, service, process_name)
);
CREATE INDEX IF NOT EXISTS service_summary_by_service
    ON service_summary (service, host_id, process_name, vendor, nbytes, findings, unapproved, last_seen);
CREATE TABLE IF NOT EXISTS runtime_summary (
    host_id    TEXT NOT NULL,
    runtime    TEXT NOT NULL,
    exposed    INTEGER NOT NULL,
    findings   INTEGER NOT NULL,
    unapproved INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    PRIMARY KEY (host_id, runtime)
);
INSERT INTO summary_keys (scope, key, dirty)
    SELECT 'usage', host_id, 1 FROM findings WHERE runtime <> '' OR service <> '' GROUP BY host_id
    ON CONFLICT (scope, key) DO UPDATE SET dirty = summary_keys.dirty + 1;
"""

# Version 10: the packets each agent's network capture lost (Heartbeat.capture_drops).
_MIGRATE_TO_10 = """
ALTER TABLE hosts ADD COLUMN capture_drops INTEGER NOT NULL DEFAULT 0;
"""

# Version 11, as PostgreSQL's migration 6: the activity views, the services view and the census'
# holders read kept rows. A host's tally rows keep their findings' bytes and newest last_seen
# (summaries.read_activity); each AI service keeps one fleet row (summaries.refresh_fleet_services)
# computed from the hosts' service rows; each weights hash its first holders (KEPT_HOLDERS). Every
# host, hash and service held is marked dirty: the first refresh computes them.
_MIGRATE_TO_11 = """
ALTER TABLE risk_summary ADD COLUMN nbytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE risk_summary ADD COLUMN last_seen INTEGER NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS fleet_service_summary (
    service    TEXT PRIMARY KEY,
    vendor     TEXT NOT NULL,
    hosts      INTEGER NOT NULL,
    processes  INTEGER NOT NULL,
    nbytes     INTEGER NOT NULL,
    findings   INTEGER NOT NULL,
    unapproved INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS model_holder_summary (
    sha256   TEXT NOT NULL,
    n        INTEGER NOT NULL,
    host_id  TEXT NOT NULL,
    path     TEXT NOT NULL,
    approved INTEGER NOT NULL,
    PRIMARY KEY (sha256, n)
);
UPDATE summary_keys SET dirty = dirty + 1 WHERE scope IN ('host', 'model');
INSERT INTO summary_keys (scope, key, dirty)
    SELECT 'service', service, 1 FROM service_summary GROUP BY service
    ON CONFLICT (scope, key) DO UPDATE SET dirty = summary_keys.dirty + 1;
"""

# Version 12: ingest writes one B-tree fewer a finding. `findings_host` (kind, host_id and nine
# more columns, which the per-host refreshes read) cost a fifth of the write (in one process at a
# million findings, 8.8 -> 7.3 us a finding with this version). A host's refresh reads the host's
# rows by the key (host_id, id) instead: slower (every host of a million findings 1.4 -> 2.2 s), but
# off ingest's path and paced by the monitor. Kind filters (the count that picks a listing's plan, a
# rare kind's findings) read an index on kind alone, appended to in rowid order: the cheapest to keep.
_MIGRATE_TO_12 = """
DROP INDEX IF EXISTS findings_host;
CREATE INDEX IF NOT EXISTS findings_of_kind ON findings (kind);
"""

_MIGRATIONS = {
    2: _MIGRATE_TO_2,
    3: _MIGRATE_TO_3,
    4: _MIGRATE_TO_4,
    5: _MIGRATE_TO_5,
    6: _MIGRATE_TO_6,
    7: _MIGRATE_TO_7,
    8: _MIGRATE_TO_8,
    9: _MIGRATE_TO_9,
    10: _MIGRATE_TO_10,
    11: _MIGRATE_TO_11,
    12: _MIGRATE_TO_12,
}

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

# A group commit's hosts (contact time, newest batch sequence) and summary keys, each in one
# statement over a JSON array: under the write lock, every statement hands the GIL to the event
# loop and waits to get it back, so the few statements there do not grow with the commit.
_TOUCH_HOSTS = """
INSERT INTO hosts (host_id, first_seen, last_seen, last_sequence)
SELECT json_extract(value, '$[0]'), ?1, ?1, json_extract(value, '$[1]') FROM json_each(?2) WHERE true
ON CONFLICT (host_id) DO UPDATE SET
    last_seen = max(hosts.last_seen, excluded.last_seen),
    last_sequence = max(hosts.last_sequence, excluded.last_sequence)
"""
_MARK_DIRTY = """
INSERT INTO summary_keys (scope, key, dirty)
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), 1 FROM json_each(?) WHERE true
ON CONFLICT (scope, key) DO UPDATE SET dirty = summary_keys.dirty + 1
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
                   spool_depth, dropped_total, capture_drops, sensors)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, coalesce(?, '[]'))
ON CONFLICT (host_id) DO UPDATE SET
    last_seen = max(hosts.last_seen, excluded.last_seen),
    last_heartbeat = excluded.last_heartbeat,
    agent_cpu_percent = excluded.agent_cpu_percent,
    agent_rss_bytes = excluded.agent_rss_bytes,
    spool_depth = excluded.spool_depth,
    dropped_total = excluded.dropped_total,
    capture_drops = excluded.capture_drops,
    sensors = coalesce(?, hosts.sensors)
"""

_HOSTS = """
SELECT h.host_id, h.hostname, h.os, h.os_release, h.architecture, h.agent_version, h.policy_version,
       h.peer, h.sensors, h.first_seen, h.last_seen, h.last_sequence, h.last_heartbeat,
       h.agent_cpu_percent, h.agent_rss_bytes, h.spool_depth, h.dropped_total, {silent}, {capture}
FROM hosts h ORDER BY h.host_id
"""

# The full computations, for services(since) and runtimes(since) and a file before version 9.
_SERVICES = """
SELECT service, max(vendor), count(DISTINCT host_id), count(DISTINCT process_name), sum(nbytes), count(*),
       sum(CASE WHEN approved = 0 THEN 1 ELSE 0 END), max(last_seen)
FROM findings WHERE service <> '' GROUP BY service
ORDER BY sum(CASE WHEN approved = 0 THEN 1 ELSE 0 END) DESC, count(DISTINCT host_id) DESC, service
"""

_RUNTIMES = """
SELECT runtime, count(DISTINCT host_id), count(DISTINCT CASE WHEN kind = ? THEN host_id END), count(*),
       sum(CASE WHEN approved = 0 THEN 1 ELSE 0 END), max(last_seen)
FROM findings WHERE runtime <> '' GROUP BY runtime ORDER BY count(DISTINCT host_id) DESC, runtime
"""

_CENSUS = """
SELECT sha256, max(model_format), max(model_arch), max(model_params), max(nbytes), count(DISTINCT host_id),
       count(DISTINCT CASE WHEN approved = 0 THEN host_id END), count(*), max(last_seen)
FROM findings WHERE sha256 <> '' AND kind = ? GROUP BY sha256
ORDER BY count(DISTINCT CASE WHEN approved = 0 THEN host_id END) DESC, count(DISTINCT host_id) DESC, sha256
LIMIT ?
"""

# INDEXED BY: without statistics the planner prefers findings_host's (kind, host_id) order, which
# walks every weights file of the fleet for each hash (2.6 s at a million findings).
_CENSUS_HOLDERS = f"""
SELECT host_id, path, approved FROM findings INDEXED BY findings_model
WHERE sha256 = ? AND sha256 <> '' AND kind = {_ARTIFACT}
ORDER BY host_id, path, approved LIMIT ?
"""

_UPSERT_SNAPSHOT = """
INSERT INTO risk_snapshots (day, scope, key, score, level, findings, unapproved) VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (day, scope, key) DO UPDATE SET
    score = excluded.score, level = excluded.level, findings = excluded.findings,
    unapproved = excluded.unapproved
"""

_HOST_FINDING_COUNTS = """
SELECT kind, host_id, severity, approved, count(*) FROM findings GROUP BY kind, host_id, severity, approved
"""


_ns = ns


def _statements(script: str) -> Iterator[str]:
    """A script's statements one by one (a trigger's body holds semicolons of its own)."""
    pending = ""
    for part in script.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""


def _backfill_facts(conn: sqlite3.Connection) -> None:
    """Version 5: fill the evidence-fact columns of findings stored before them, from their bodies."""
    assignments = ", ".join(f"{c} = ?" for c in _FACT_COLUMNS)
    last = -1
    while True:
        rows = conn.execute(
            "SELECT rowid, data FROM findings WHERE rowid > ? ORDER BY rowid LIMIT 10000", (last,)
        ).fetchall()
        if not rows:
            return
        updates = []
        for rowid, data in rows:
            try:
                facts = evidence_facts(finding_pb2.Finding.FromString(data))
            except DecodeError:
                continue  # an unreadable body keeps empty facts; reads show it as before
            updates.append((*facts, rowid))
        conn.executemany(f"UPDATE findings SET {assignments} WHERE rowid = ?", updates)
        last = rows[-1][0]


def _stage(conn: sqlite3.Connection, batches: Sequence[PreparedBatch]) -> list[int]:
    """Copy the batches' rows into temp.staged (the writer's own memory: no lock on the database
    file) and return the rowid each batch's rows start at."""
    conn.execute("BEGIN")
    try:
        # Each write empties the table when done; should that have failed, the new rows follow.
        at = conn.execute("SELECT coalesce(max(rowid), 0) + 1 FROM temp.staged").fetchone()[0]
        starts = []
        for b in batches:
            starts.append(at)
            at += len(b.rows)
        rows = [row for b in batches for row in b.rows]
        whole = len(rows) - len(rows) % _STAGE_ROWS
        chain = itertools.chain.from_iterable
        conn.executemany(
            _STAGE_MANY, [tuple(chain(rows[i : i + _STAGE_ROWS])) for i in range(0, whole, _STAGE_ROWS)]
        )
        conn.executemany(_STAGE, rows[whole:])
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return starts


def _upsert_batch(conn: sqlite3.Connection, batch: PreparedBatch, start: int, before: int) -> StoreResult:
    """Upsert a batch's rows, staged from rowid `start` (`_stage`); `before`: the table's largest
    rowid before it, inside this write transaction."""
    rows = len(batch.rows)
    if not rows:
        return StoreResult(new=0, updated=0, unchanged=0)
    # A new row takes rowid max+1 (nothing here sets rowids), so the rows this batch added are
    # exactly those past `before`: a short range at the table's end, cheaper than looking every id
    # up first. The next batch's `before` is this one's plus its new rows.
    changed = conn.execute(_UPSERT_FINDING, (start, start + rows - 1)).rowcount
    new = conn.execute(_COUNT_ROWS_AFTER, (before,)).fetchone()[0]
    return StoreResult(new=new, updated=changed - new, unchanged=rows - changed)


def _upsert_batches(
    conn: sqlite3.Connection, batches: Sequence[PreparedBatch], starts: Sequence[int], now: int | None
) -> list[StoreResult]:
    """Upsert staged batches (`_stage`) in order; with `now`, also record each host's contact and
    newest batch sequence."""
    before = conn.execute(_MAX_ROWID).fetchone()[0]
    results = []
    for batch, start in zip(batches, starts, strict=True):
        result = _upsert_batch(conn, batch, start, before)
        before += result.new
        results.append(result)
    if now is not None:
        sequences: dict[str, int] = {}
        for b in batches:
            sequences[b.host_id] = max(sequences.get(b.host_id, 0), b.sequence)
        conn.execute(_TOUCH_HOSTS, (now, json.dumps(list(sequences.items()))))
    return results


def _mark_dirty(conn: sqlite3.Connection, keys: list[tuple[summaries.SummaryScope, str]]) -> None:
    """Mark the hosts, users and weights hashes a group commit stored to (storage.summaries, keys
    from `summaries.batch_keys`, computed before the write lock), once each."""
    conn.execute(_MARK_DIRTY, (json.dumps(keys),))


class SQLiteStore(summaries.KeptTallyReads):
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
                try:  # 0600 (missing directories 0700) before SQLite opens it; -wal and -shm follow
                    create_private_file(Path(path))
                except OSError as exc:
                    raise StoreError(f"cannot create {path}: {exc.strerror or exc}") from None
        self._writer = self._connect(create=create)
        try:
            self._init_schema(create)
            self._writer.execute("PRAGMA journal_mode = WAL")
            self._writer.execute("PRAGMA synchronous = FULL")
            # The writer's page cache: at a million findings the indexes no longer fit SQLite's
            # default 2 MiB, and every insert then reads pages back (12 -> 7 us per finding).
            self._writer.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
            # temp.staged (see _stage) never on disk; its pages stay allocated at the largest group
            # commit's size (MAX_FINDINGS_PER_COMMIT bounds it).
            self._writer.execute("PRAGMA temp_store = MEMORY")
            self._writer.execute(_CREATE_STAGED)
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
            if current < SCHEMA_VERSION:  # a large file takes minutes (version 12: 3.5 min at 10M findings)
                log.info("%s: migrating schema version %d -> %d", self.path, current, SCHEMA_VERSION)
            started = time.monotonic()
            for target in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _statements(_MIGRATIONS[target]):
                    conn.execute(statement)
                if target == 5:
                    _backfill_facts(conn)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
            if current < SCHEMA_VERSION:
                log.info(
                    "%s: schema version %d in %.1f s", self.path, SCHEMA_VERSION, time.monotonic() - started
                )
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        del version

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """The writer connection inside one IMMEDIATE transaction, committed on success."""
        with self._write_staged(()) as (conn, _):
            yield conn

    @contextmanager
    def _write_staged(
        self, batches: Sequence[PreparedBatch]
    ) -> Iterator[tuple[sqlite3.Connection, list[int]]]:
        """`_write`, with the batches' rows staged first (`_stage`: before the write lock is taken,
        so another collector process writes meanwhile) and the rowid each batch starts at."""
        with self._lock:
            if self._closed:
                raise StoreError("store is closed")
            conn = self._writer
            starts = _stage(conn, batches) if batches else []
            fd = self._writer_lock_fd()
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn, starts
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            finally:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                if batches:  # the bodies do not linger in memory until the next write
                    with suppress(sqlite3.Error):  # never hides the write's own error
                        conn.execute("DELETE FROM temp.staged")

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

    def upsert_hosts(self, rows: Sequence[HelloRow]) -> None:
        if not rows:
            return
        now = _ns(self._clock())
        try:
            with self._write() as conn:
                conn.executemany(_UPSERT_HOST, [(*row, now, now) for row in rows])
        except sqlite3.Error as exc:
            raise StoreError(f"cannot register {described_hosts(rows)}: {exc}") from exc

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
            hb.capture_drops,
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
        keys = summaries.batch_keys(batches, _ARTIFACT) if self._summaries() else []
        try:
            with self._write_staged(batches) as (conn, starts):
                results = _upsert_batches(conn, batches, starts, now)
                if keys:
                    _mark_dirty(conn, keys)
                return results
        except sqlite3.Error as exc:
            raise StoreError(f"cannot store {len(batches)} batches: {exc}") from exc

    def record_health(self, host_id: str, finding: finding_pb2.Finding, silent_since: float | None) -> None:
        batch = PreparedBatch(host_id, 0, finding_rows(host_id, 0, [finding]))
        now = _ns(self._clock())
        try:
            with self._write_staged([batch]) as (conn, starts):
                conn.execute(
                    "INSERT INTO hosts (host_id, first_seen, last_seen) VALUES (?, ?, ?) "
                    "ON CONFLICT (host_id) DO NOTHING",
                    (host_id, now, now),
                )
                _upsert_batches(conn, [batch], starts, None)
                if self._summaries():
                    _mark_dirty(conn, summaries.batch_keys([batch], _ARTIFACT))
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

    def forget_host(self, host_id: str) -> int:
        try:
            with self._write() as conn:
                deleted = conn.execute("DELETE FROM findings WHERE host_id = ?", (host_id,)).rowcount
                if self._version >= 4:  # the version that added inventories
                    conn.execute("DELETE FROM inventories WHERE host_id = ?", (host_id,))
                conn.execute("DELETE FROM hosts WHERE host_id = ?", (host_id,))
                if self._summaries():
                    conn.execute(summaries.ALL_DIRTY)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot remove host {host_id!r}: {exc}") from exc
        return int(deleted)

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

    def hosts(self, with_counts: bool = True) -> list[HostRecord]:
        try:
            with self._read() as conn:
                host_rows = conn.execute(
                    _HOSTS.format(
                        silent="0" if self._legacy else "h.silent_since",
                        capture="h.capture_drops" if self._version >= 10 else "0",
                    )
                ).fetchall()
                count_rows = conn.execute(_HOST_FINDING_COUNTS).fetchall() if with_counts else []
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read hosts: {exc}") from exc
        # Grouped by kind first to follow the covering index; severity_counts adds the groups up.
        totals, by_severity = severity_counts(
            (host_id, severity, count, 0 if approved else count)
            for _, host_id, severity, approved, count in count_rows
        )
        return [host_record(r, totals, by_severity) for r in host_rows]

    def findings(
        self, host_id: str | None = None, kind: str | None = None, limit: int | None = 1000
    ) -> list[dict[str, Any]]:
        kinds = [] if kind is None else [int(codec.kind_value(kind))]
        sql, params = listing_sql(host_id, kinds, limit, self._rare(kinds if host_id is None else []))
        try:
            with self._read() as conn:
                rows = conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read findings: {exc}") from exc
        return [finding_dict(*row[:5]) for row in rows]

    # ---- the read side's aggregates

    def _need_facts(self, what: str) -> None:
        if self._version < 5:
            raise StoreError(
                f"{self.path} has schema version {self._version}, before {what} was kept; "
                "start `umbra-collector serve` on it once to migrate it"
            )

    def _rows(self, sql: str, params: Sequence[Any], what: str) -> list[tuple[Any, ...]]:
        try:
            with self._read() as conn:
                return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {what}: {exc}") from exc

    def findings_page(
        self, where: FindingFilter, limit: int, after: FindingCursor | None = None
    ) -> FindingPage:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        if any(v is not None for v in (where.user, where.service, where.vendor, where.runtime, where.sha256)):
            self._need_facts("evidence facts")
        keyset = keyset_sql(after) if after is not None else None
        sql, params = page_sql(where, limit, keyset, self._rare(where.kinds if where.host_id is None else []))
        return findings_page_of(self._rows(sql, params, "findings"), limit)

    def _rare(self, kinds: Sequence[int]) -> bool:
        """Whether `kinds` have few findings (reads.kinds_listing); False for no kinds."""
        return bool(kinds) and self._rows(*rare_kinds_sql(kinds), "findings")[0][0] < RARE_KINDS

    def finding(self, host_id: str, finding_id: str) -> dict[str, Any] | None:
        rows = self._rows(
            "SELECT first_seen, last_seen, count, data FROM findings WHERE host_id = ? AND id = ?",
            [host_id, finding_id],
            "a finding",
        )
        return finding_dict(host_id, *rows[0]) if rows else None

    def newest_finding(self) -> float:
        (newest,) = self._rows("SELECT max(last_seen) FROM findings", [], "findings")[0]
        return (newest or 0) / 1e9

    # storage.summaries' SummaryDb: the refresh reads through the reader pool, writes as the writer
    placeholder = "?"

    def summary_rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._rows(sql, params, "summaries")

    lock_rows = ""  # the writer is alone once its transaction has begun

    @contextmanager
    def summary_write(self) -> Iterator[tuple[summaries.Run, summaries.Fetch]]:
        try:
            with self._write() as conn:
                yield (
                    lambda sql, rows: conn.executemany(sql, rows).rowcount,
                    lambda sql, params: conn.execute(sql, params).fetchall(),
                )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write summaries: {exc}") from exc

    def _summaries(self) -> bool:
        # Version 7 listed moved keys by triggers, 8 by `moved`; 11's tally rows have bytes and
        # last_seen. An older file opened read-only computes from the findings.
        return self._version >= 11

    def _usage(self) -> bool:
        return self._version >= 11  # 9 kept the hosts' services; 11 each service's fleet row

    def _host_kinds(self) -> list[int]:
        """The kinds a host's refresh names (summaries.kind_clause): every one for a file with
        `findings_host` (versions 9 to 11), none from version 12 (the key serves a host's rows)."""
        return sorted(KNOWN_KINDS) if self._version < 12 else []

    def refresh_summaries(self, spec: ScoreSpec) -> int:
        if not self._summaries() or not spec.as_of:
            return 0
        kinds = self._host_kinds()
        return (
            summaries.refresh_tally(self, "host", spec, kinds)
            + summaries.refresh_tally(self, "user", spec, kinds)
            + summaries.refresh_models(self, _ARTIFACT)
            + (summaries.refresh_usage(self, kinds, _EXPOSED) if self._usage() else 0)
        )

    def _kept_tally(self, by: GroupBy, spec: ScoreSpec) -> bool:
        """Whether `by`'s tally under `spec` is read from the kept summaries, brought up to date here."""
        if by not in ("host", "user"):
            raise ValueError(f"cannot group findings by {by!r}")
        if not (spec.as_of and self._summaries()):
            return False
        summaries.refresh_tally(self, by, spec, self._host_kinds())
        return True

    def tally(self, by: GroupBy, spec: ScoreSpec, since: float | None = None) -> list[TallyRow]:
        if since is None and self._kept_tally(by, spec):
            return tally_rows(summaries.read_tally(self, by))
        points, params = spec.points_sql()
        if by == "host":
            key, where = "host_id", []
        elif by == "user":
            self._need_facts("the user of a finding")
            key, where = "user_name", ["user_name <> ''"]
        else:
            raise ValueError(f"cannot group findings by {by!r}")
        if since is not None:
            where.append("last_seen >= ?")
            params.append(seconds_to_ns(since))
        sql = (
            f"SELECT {key}, kind, severity, approved, count(*), sum({points}) FROM findings"
            + (" WHERE " + " AND ".join(where) if where else "")
            + f" GROUP BY kind, {key}, severity, approved"
        )
        return tally_rows(self._rows(sql, params, "risk tallies"))

    def services(self, since: float | None = None) -> list[ServiceRow]:
        self._need_facts("AI services")
        sql, params = _SERVICES, []
        if since is None and self._usage():
            summaries.refresh_usage(self, self._host_kinds(), _EXPOSED)
            sql = summaries.READ_SERVICES
        elif since is not None:
            sql, params = (
                sql.replace("WHERE service <> ''", "WHERE service <> '' AND last_seen >= ?"),
                [seconds_to_ns(since)],
            )
        return [
            ServiceRow(svc, vendor, hosts, procs, int(nbytes or 0), n, int(unappr or 0), last / 1e9)
            for svc, vendor, hosts, procs, nbytes, n, unappr, last in self._rows(sql, params, "AI services")
        ]

    def runtimes(self, since: float | None = None) -> list[RuntimeRow]:
        self._need_facts("runtimes")
        params: list[Any] = [_EXPOSED]
        sql = _RUNTIMES
        if since is None and self._usage():
            summaries.refresh_usage(self, self._host_kinds(), _EXPOSED)
            sql, params = summaries.READ_RUNTIMES, []
        elif since is not None:
            sql = sql.replace("WHERE runtime <> ''", "WHERE runtime <> '' AND last_seen >= ?")
            params.append(seconds_to_ns(since))
        return [
            RuntimeRow(rt, hosts, exposed, n, int(unappr or 0), last / 1e9)
            for rt, hosts, exposed, n, unappr, last in self._rows(sql, params, "runtimes")
        ]

    def activity(
        self, kinds: Sequence[int], since: float | None = None, spec: ScoreSpec | None = None
    ) -> list[ActivityRow]:
        if not kinds:
            return []
        self._need_facts("activity")
        if since is None and spec is not None and self._kept_tally("host", spec):
            return activity_rows(summaries.read_activity(self, kinds))
        params: list[Any] = [int(k) for k in kinds]
        sql = (
            "SELECT host_id, kind, count(*), sum(CASE WHEN approved = 0 THEN 1 ELSE 0 END), sum(nbytes), "
            f"max(last_seen) FROM findings WHERE kind IN {in_list(kinds)}"
        )
        if since is not None:
            sql += " AND last_seen >= ?"
            params.append(seconds_to_ns(since))
        sql += " GROUP BY kind, host_id"
        return activity_rows(self._rows(sql, params, "activity"))

    def model_census(self, limit: int = 100, holders: int = 10) -> list[ModelRow]:
        self._need_facts("the model census")
        if limit < 1 or holders < 0:
            raise ValueError("limit must be >= 1 and holders >= 0")
        artifact = _ARTIFACT
        if self._summaries():
            summaries.refresh_models(self, artifact)
            rows = summaries.read_census(self, limit)
        else:
            rows = self._rows(_CENSUS, [artifact, limit], "the model census")
        if not rows:
            return []
        hashes = [r[0] for r in rows]
        held: dict[str, list[ModelHolder]] = {}
        if holders and self._summaries() and holders <= summaries.KEPT_HOLDERS:
            for sha, host, path, approved in summaries.read_holders(self, hashes, holders):
                held.setdefault(sha, []).append(ModelHolder(host, path, bool(approved)))
        elif holders:
            # One short index range per hash (findings_model): a window over all copies of the
            # listed hashes would read every copy, and there are thousands of each at 10M findings.
            for sha in hashes:
                held[sha] = [
                    ModelHolder(host, path, bool(approved))
                    for host, path, approved in self._rows(_CENSUS_HOLDERS, [sha, holders], "models")
                ]
        return model_rows(rows, held)

    def record_risk_snapshot(self, rows: Sequence[SnapshotRow]) -> None:
        self._need_facts("risk snapshots")
        try:
            with self._write() as conn:
                conn.executemany(
                    _UPSERT_SNAPSHOT,
                    [(r.day, r.scope, r.key, r.score, r.level, r.findings, r.unapproved) for r in rows],
                )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot record risk snapshot: {exc}") from exc

    def risk_snapshots(
        self, scope: SnapshotScope, key: str | None = None, since_day: str | None = None
    ) -> list[SnapshotRow]:
        if self._version < 5:
            return []
        sql = "SELECT day, scope, key, score, level, findings, unapproved FROM risk_snapshots WHERE scope = ?"
        params: list[Any] = [scope]
        if key is not None:
            sql += " AND key = ?"
            params.append(key)
        if since_day is not None:
            sql += " AND day >= ?"
            params.append(since_day)
        rows = self._rows(sql + " ORDER BY day, key", params, "risk snapshots")
        return [SnapshotRow(*r) for r in rows]

    def drop_before(self, cutoff: float) -> None:
        try:
            with self._write() as conn:
                conn.execute("DELETE FROM findings WHERE last_seen < ?", (_ns(cutoff),))
                if self._summaries():
                    conn.execute(summaries.ALL_DIRTY)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot drop old findings: {exc}") from exc

    # ---- console access: users, API keys, sessions

    def _access_write(self, what: str) -> Any:
        if self._version < 6:
            raise StoreError(f"{self.path} predates console {what}; start `umbra-collector serve` on it once")
        return self._write()

    def _access_rows(self, sql: str, params: Sequence[Any], what: str) -> list[tuple[Any, ...]]:
        return [] if self._version < 6 else self._rows(sql, params, what)

    def add_user(self, name: str, role: str, password_hash: str) -> bool:
        check_role(role)
        try:
            with self._access_write("users") as conn:
                return bool(
                    conn.execute(
                        "INSERT INTO users (name, role, password_hash, created_at) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (name) DO NOTHING",
                        (name, role, password_hash, _ns(self._clock())),
                    ).rowcount
                )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot add user {name!r}: {exc}") from exc

    def user(self, name: str) -> UserRecord | None:
        rows = self._access_rows(
            "SELECT name, role, password_hash, created_at FROM users WHERE name = ?", [name], "users"
        )
        return UserRecord(rows[0][0], rows[0][1], rows[0][2], rows[0][3] / 1e9) if rows else None

    def users(self) -> list[UserRecord]:
        rows = self._access_rows(
            "SELECT name, role, password_hash, created_at FROM users ORDER BY name", [], "users"
        )
        return [UserRecord(n, r, h, c / 1e9) for n, r, h, c in rows]

    def remove_user(self, name: str) -> bool:
        try:
            with self._access_write("users") as conn:
                conn.execute("DELETE FROM sessions WHERE user_name = ?", (name,))
                return bool(conn.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot remove user {name!r}: {exc}") from exc

    def add_api_key(self, key_id: str, key_hash: str, role: str, note: str = "") -> None:
        check_role(role)
        try:
            with self._access_write("API keys") as conn:
                conn.execute(
                    "INSERT INTO api_keys (key_id, key_hash, role, created_at, note) VALUES (?, ?, ?, ?, ?)",
                    (key_id, key_hash, role, _ns(self._clock()), note),
                )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot add API key {key_id!r}: {exc}") from exc

    def api_key(self, key_hash: str) -> ApiKeyRecord | None:
        rows = self._access_rows(
            "SELECT key_id, role, created_at, note FROM api_keys WHERE key_hash = ?", [key_hash], "API keys"
        )
        return ApiKeyRecord(rows[0][0], rows[0][1], rows[0][2] / 1e9, rows[0][3]) if rows else None

    def api_keys(self) -> list[ApiKeyRecord]:
        rows = self._access_rows(
            "SELECT key_id, role, created_at, note FROM api_keys ORDER BY created_at DESC, key_id",
            [],
            "API keys",
        )
        return [ApiKeyRecord(k, r, c / 1e9, n) for k, r, c, n in rows]

    def remove_api_key(self, key_id: str) -> bool:
        try:
            with self._access_write("API keys") as conn:
                return bool(conn.execute("DELETE FROM api_keys WHERE key_id = ?", (key_id,)).rowcount)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot remove API key {key_id!r}: {exc}") from exc

    def create_session(self, session_hash: str, user: str, csrf: str, expires_at: float) -> None:
        now = _ns(self._clock())
        try:
            with self._access_write("sessions") as conn:
                conn.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
                conn.execute(
                    "INSERT INTO sessions (session_hash, user_name, csrf, expires_at) VALUES (?, ?, ?, ?)",
                    (session_hash, user, csrf, _ns(expires_at)),
                )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot create a session: {exc}") from exc

    def session(self, session_hash: str, now: float) -> SessionRecord | None:
        rows = self._access_rows(
            "SELECT s.user_name, u.role, s.csrf, s.expires_at FROM sessions s "
            "JOIN users u ON u.name = s.user_name WHERE s.session_hash = ? AND s.expires_at > ?",
            [session_hash, _ns(now)],
            "sessions",
        )
        return SessionRecord(rows[0][0], rows[0][1], rows[0][2], rows[0][3] / 1e9) if rows else None

    def delete_session(self, session_hash: str) -> None:
        try:
            with self._access_write("sessions") as conn:
                conn.execute("DELETE FROM sessions WHERE session_hash = ?", (session_hash,))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot end a session: {exc}") from exc

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

"""The durable spool: findings wait on disk until the collector has acknowledged them.

One SQLite file in WAL mode. `outbox` rows get strictly increasing sequence numbers
(AUTOINCREMENT never reuses one). The transport leases rows after its cursor and sends them
as a batch whose sequence is the last row's; the collector's Ack of sequence N commits
(deletes) every row up to N. A crash before the Ack replays the batch; the collector stores
by finding id, so the replay adds nothing twice. `synchronous=FULL` because accepting a
finding is a promise that it will arrive.

The same file keeps the finding tracker's state (first seen, count) so ids, counts and
first-seen times survive agent restarts, and small counters (drops).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from umbra.private import create_private_file
from umbra.v1 import finding_pb2 as fpb

from agent.delivery.tracker import TrackedState
from agent.privacy.scrub import scrub_finding

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    finding_id TEXT NOT NULL,
    severity INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_finding ON outbox(finding_id);
CREATE INDEX IF NOT EXISTS outbox_drop_order ON outbox(severity, seq);
CREATE TABLE IF NOT EXISTS finding_state (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    saved_at REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


#: PRAGMA user_version of a spool whose rows were all scrubbed (agent/privacy): 0 is a spool from
#: before command lines were scrubbed where they are read, scrubbed once when opened.
_SCRUBBED_VERSION = 1


@dataclass(frozen=True)
class SpooledFinding:
    seq: int
    finding: fpb.Finding


class SpoolError(RuntimeError):
    pass


#: A finding's saved tracker state is kept this long after it was last saved (seconds). The tracker
#: saves a live finding's state at least every refresh interval, so only findings gone for this long
#: lose their first_seen and count here (the collector keeps its own); the spool's disk use follows
#: what the host does now, not everything it ever did.
STATE_RETENTION = 90 * 86400.0
_PRUNE_EVERY = 3600.0  # seconds between prunes while the spool is open


class Spool:
    """Thread-safe: the daemon appends from its pipeline and commits from its transport."""

    def __init__(
        self, path: Path, max_findings: int = 100_000, state_retention: float = STATE_RETENTION
    ) -> None:
        self.path = path
        self.max_findings = max_findings
        self.state_retention = state_retention
        try:
            create_private_file(path)  # 0600 before SQLite opens it; its -wal and -shm take that mode
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA cache_size=-512")  # KiB of page cache: the agent's memory goal is 60 MB
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(finding_state)")}
            if "saved_at" not in columns:  # a spool from before states were pruned: they start afresh
                self._db.execute("ALTER TABLE finding_state ADD COLUMN saved_at REAL NOT NULL DEFAULT 0")
                self._db.execute("UPDATE finding_state SET saved_at = ?", (time.time(),))
            self._prune_states()
            self._scrub_old_rows()
        except sqlite3.DatabaseError as exc:
            raise SpoolError(f"cannot open spool {path}: {exc}") from exc
        except OSError as exc:
            raise SpoolError(f"cannot create spool {path}: {exc.strerror or exc}") from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _scrub_old_rows(self) -> None:
        """Once per spool: findings an agent queued before it scrubbed command lines at the source
        lose their secrets and prompts before they are sent, and VACUUM and a WAL checkpoint take
        the old bytes off the disk."""
        if self._db.execute("PRAGMA user_version").fetchone()[0] >= _SCRUBBED_VERSION:
            return
        changed = []
        for seq, payload in self._db.execute("SELECT seq, payload FROM outbox").fetchall():
            finding = fpb.Finding.FromString(payload)
            if scrub_finding(finding):
                changed.append((finding.SerializeToString(), seq))
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("UPDATE outbox SET payload = ? WHERE seq = ?", changed)
            self._db.execute(f"PRAGMA user_version = {_SCRUBBED_VERSION}")
        if changed:
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # ---- outbox
    def append(
        self,
        findings: Iterable[fpb.Finding],
        not_after: int = 0,
        states: Mapping[str, TrackedState] | None = None,
    ) -> int:
        """Spool findings (and the tracker states that go with them) in one transaction;
        return how many findings were dropped to keep the spool bounded.

        An unsent older version of the same finding (seq > `not_after`, the transport's send
        cursor) is replaced, so an outage does not pile up versions of one finding.
        """
        rows = [(f.id, int(f.severity), f.SerializeToString()) for f in findings]
        if not rows and not states:
            return 0
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            now = time.time()
            if now - self._pruned_at >= _PRUNE_EVERY:
                self._prune_states(now)
            self._db.executemany(
                "INSERT INTO finding_state(id, state, saved_at) VALUES (?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET state = excluded.state, saved_at = excluded.saved_at",
                [(fid, json.dumps(asdict(state)), now) for fid, state in (states or {}).items()],
            )
            self._db.executemany(
                "DELETE FROM outbox WHERE finding_id = ? AND seq > ?", [(r[0], not_after) for r in rows]
            )
            self._db.executemany("INSERT INTO outbox(finding_id, severity, payload) VALUES (?, ?, ?)", rows)
            return self._enforce_bound()

    def _prune_states(self, now: float | None = None) -> None:
        """Forget the states not saved for `state_retention`: findings long gone from this host."""
        self._pruned_at = time.time() if now is None else now
        self._db.execute(
            "DELETE FROM finding_state WHERE saved_at < ?", (self._pruned_at - self.state_retention,)
        )

    def _enforce_bound(self) -> int:
        (depth,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        excess = depth - self.max_findings
        if excess <= 0:
            return 0
        # Lowest severity first, oldest first within a severity.
        self._db.execute(
            "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY severity, seq LIMIT ?)",
            (excess,),
        )
        self._db.execute(
            "INSERT INTO counters(name, value) VALUES ('dropped', ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (excess,),
        )
        return int(excess)

    def lease(self, after_seq: int, limit: int) -> list[SpooledFinding]:
        """Up to `limit` findings after `after_seq`, oldest first. They stay until `commit`."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
            ).fetchall()
        return [SpooledFinding(seq, fpb.Finding.FromString(payload)) for seq, payload in rows]

    def commit(self, up_to_seq: int) -> int:
        """The collector stored everything up to `up_to_seq`: delete it. Returns rows removed."""
        with self._lock, self._db:
            cur = self._db.execute("DELETE FROM outbox WHERE seq <= ?", (up_to_seq,))
            return cur.rowcount

    def depth(self) -> int:
        with self._lock:
            (depth,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        return int(depth)

    def dropped(self) -> int:
        return self.counter("dropped")

    def counter(self, name: str) -> int:
        """A counter kept in the spool (0 when never set): 'dropped' (findings the bound dropped),
        'capture_drops' (packets the running daemon's capture lost, for `umbra-agent status`)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def set_counter(self, name: str, value: int) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO counters(name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (name, value),
            )

    # ---- tracker state (FindingStateStore; saved by append)
    def load_state(self, finding_id: str) -> TrackedState | None:
        with self._lock:
            row = self._db.execute("SELECT state FROM finding_state WHERE id = ?", (finding_id,)).fetchone()
        return TrackedState(**json.loads(row[0])) if row else None

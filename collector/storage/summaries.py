"""Summaries kept in tables: each host's and user's risk tally (a host's with its bytes and newest
last_seen per kind, for the activity views), each weights hash's census row and first holders,
each host's AI services and runtimes ("usage") and each service's fleet row ("service"),
refreshed incrementally, so the fleet views read O(hosts) rows instead of grouping every finding.

Ingest marks what a group commit touched as dirty (`summary_keys`: one upsert per host, user and
MODEL_ARTIFACT hash of the commit, a counter that only grows). A refresh recomputes only dirty keys,
with the same grouped SQL as the full computation restricted to those keys, and replaces their rows.
A key's counter is cleared only if it still holds the value the refresh read before computing, so
a batch stored meanwhile leaves its key dirty for the next refresh (never a lost update).

Age decay (README, "Risk model"): a tally row's points are summed as of one time A. With them the
refresh stores the key's validity window (valid_after, valid_until]: the as-of times for which no
finding of the key changes age bucket, from the newest finding below and the oldest above each
bucket bound. A view as of A' reuses the rows while A' lies in the window and recomputes the key
otherwise, so scores equal the full computation exactly, whatever `now` a view asks for; a host
whose findings keep crossing bucket edges costs one small recompute per crossing.

A finding whose newer version names another user or weights hash leaves the old key's rows behind
(the batch names only the new one). The upsert that replaces the body appends the old key to the
row's `moved` column (`moved_sql`, the old row's value in `old.`); a refresh first marks every
key listed there dirty and clears the column (`collect_moved`). No trigger: a trigger on the
findings table makes SQLite keep a statement journal for every upserted row, which tripled the
cost of ingest.

Everything here is portable SQL over the tables `summary_keys`, `risk_summary`, `model_summary`,
`model_holder_summary`, `service_summary`, `runtime_summary` and `fleet_service_summary`; a
backend supplies the tables, a placeholder and two primitives (`SummaryDb`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal, Protocol

from .base import PreparedBatch, Store, tally_rows
from .reads import GroupBy, ScoreRow, ScoreSpec, TallyRow, in_list

SummaryScope = Literal["host", "user", "model", "usage", "service"]

_MIN_NS, _MAX_NS = -(2**63), 2**63 - 1
#: Keys per recompute statement: short IN lists, well under every backend's parameter limit.
CHUNK = 500

MARK_DIRTY = (
    "INSERT INTO summary_keys (scope, key, dirty) VALUES (?, ?, 1) "
    "ON CONFLICT (scope, key) DO UPDATE SET dirty = summary_keys.dirty + 1"
)
#: In key order: two refreshes (or a refresh and ingest) lock keys in one order on PostgreSQL.
STALE_KEYS = (
    "SELECT key, dirty FROM summary_keys "
    "WHERE scope = ? AND (dirty > 0 OR valid_after >= ? OR valid_until < ?) ORDER BY key"
)
#: Retention deleted findings of any key: every kept row is recomputed by the next refresh.
ALL_DIRTY = "UPDATE summary_keys SET dirty = dirty + 1"
CLAIM_KEY = (
    "UPDATE summary_keys SET dirty = 0, valid_after = ?, valid_until = ? "
    "WHERE scope = ? AND key = ? AND dirty = ?"
)
DELETE_TALLY = "DELETE FROM risk_summary WHERE scope = ? AND key IN {keys}"
INSERT_TALLY = (
    "INSERT INTO risk_summary (scope, key, kind, severity, approved, findings, points, nbytes, last_seen) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
READ_TALLY = "SELECT key, kind, severity, approved, findings, points FROM risk_summary WHERE scope = ?"
#: The kept tally summed per key (Store.scores), and over every host per kind, severity and approval
#: (Store.tally_totals): the fleet views fold thousands of rows here instead of tens of thousands in Python.
READ_SCORES = (
    "SELECT key, sum(findings), sum(CASE WHEN approved = 0 THEN findings ELSE 0 END), sum(points) "
    "FROM risk_summary WHERE scope = ? GROUP BY key"
)
READ_TOTALS = (
    "SELECT '', kind, severity, approved, sum(findings), sum(points) FROM risk_summary "
    "WHERE scope = 'host' GROUP BY kind, severity, approved"
)
DELETE_MODEL = "DELETE FROM model_summary WHERE sha256 IN {keys}"
INSERT_MODEL = (
    "INSERT INTO model_summary (sha256, model_format, model_arch, model_params, nbytes, hosts, "
    "unapproved_hosts, copies, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
READ_CENSUS = (
    "SELECT sha256, model_format, model_arch, model_params, nbytes, hosts, unapproved_hosts, copies, "
    "last_seen FROM model_summary ORDER BY unapproved_hosts DESC, hosts DESC, sha256 LIMIT ?"
)
#: The census of some hashes from the findings (MODEL_ARTIFACT only; the first parameter is its kind).
CENSUS_OF = """
SELECT sha256, max(model_format), max(model_arch), max(model_params), max(nbytes), count(DISTINCT host_id),
       count(DISTINCT CASE WHEN approved = 0 THEN host_id END), count(*), max(last_seen)
FROM findings WHERE sha256 <> '' AND kind = ? AND sha256 IN {keys} GROUP BY sha256
"""

#: Holders kept per weights hash: the census reads them instead of a range of every copy's index
#: entries in each day partition (about 750 copies a hash at 10M findings, over 120 partitions).
#: Asked for more, a store reads the findings. The console shows 20, reports 5, the CLI and API 10.
KEPT_HOLDERS = 20
#: The census holders of some hashes: the first KEPT_HOLDERS copies by host, path and approval
#: (the order of the stores' holder reads). The kind is a constant: only a constant proves a
#: partial index's predicate on PostgreSQL.
HOLDERS_OF = """
SELECT sha256, n, host_id, path, approved FROM (
    SELECT sha256, host_id, path, approved,
           row_number() OVER (PARTITION BY sha256 ORDER BY host_id, path, approved) AS n
    FROM findings WHERE sha256 <> '' AND kind = {artifact} AND sha256 IN {keys}
) AS held WHERE n <= ?
"""
DELETE_HOLDERS = "DELETE FROM model_holder_summary WHERE sha256 IN {keys}"
INSERT_HOLDERS = (
    "INSERT INTO model_holder_summary (sha256, n, host_id, path, approved) VALUES (?, ?, ?, ?, ?)"
)
READ_HOLDERS = (
    "SELECT sha256, host_id, path, approved FROM model_holder_summary "
    "WHERE sha256 IN {keys} AND n <= ? ORDER BY sha256, n"
)


#: The rows with moved keys (a partial index keeps this a short range), and the compare-and-clear.
#: last_seen names the one partition a row is in on PostgreSQL (and fails the clear if it moved).
MOVED_ROWS = "SELECT host_id, id, last_seen, moved FROM findings WHERE moved <> ''"
CLEAR_MOVED = "UPDATE findings SET moved = '' WHERE host_id = ? AND id = ? AND last_seen = ? AND moved = ?"
#: Keys that can be left behind by a newer version of a finding: (scope, the old row's column
#: that is the key, condition on a row `r` under which it belongs to that key). "usage" is a host's
#: services and runtimes: a finding leaves it when its newer version names neither.
_MOVABLE = (
    ("user", "user_name", "{r}.user_name <> '' AND {r}.user_name = {o}.user_name"),
    ("model", "sha256", "{r}.kind = {artifact} AND {r}.sha256 <> '' AND {r}.sha256 = {o}.sha256"),
    ("usage", "host_id", "({r}.runtime <> '' OR {r}.service <> '')"),
)


def moved_sql(old: str, new: str, artifact_kind: int) -> str:
    """The upsert's new value of `moved`: the old row's list, plus each key the old row belongs to
    and the newer version (`new`, replacing the body) does not. Entries are "scope length key"
    (length in characters), so any key text reads back unambiguously (see `parse_moved`)."""
    added = []
    for scope, column, condition in _MOVABLE:
        was = condition.format(r=old, o=old, artifact=artifact_kind)
        still = condition.format(r=new, o=old, artifact=artifact_kind)
        added.append(
            f"CASE WHEN {was} AND NOT ({still}) "
            f"THEN '{scope} ' || length({old}.{column}) || ' ' || {old}.{column} ELSE '' END"
        )
    return f"{old}.moved || {' || '.join(added)}"


def parse_moved(text: str) -> list[tuple[str, str]]:
    """The (scope, key) entries of a `moved` value (see `moved_sql`)."""
    out = []
    at = 0
    while at < len(text):
        scope_end = text.index(" ", at)
        length_end = text.index(" ", scope_end + 1)
        start = length_end + 1
        end = start + int(text[scope_end + 1 : length_end])
        out.append((text[at:scope_end], text[start:end]))
        at = end
    return out


def collect_moved(db: SummaryDb) -> int:
    """Mark dirty every key a newer version of a finding left behind, and clear those marks on the
    findings (only where no newer move was added meanwhile); returns how many findings had some."""
    p = db.placeholder
    rows = db.summary_rows(MOVED_ROWS, [])
    if not rows:
        return 0
    keys = sorted({key for *_, moved in rows for key in parse_moved(moved)})
    # Findings' rows first, then keys in order: the order ingest locks them in on PostgreSQL.
    with db.summary_write() as (run, _):
        run(portable(CLEAR_MOVED, p), rows)
        run(portable(MARK_DIRTY, p), keys)
    return len(rows)


def portable(statement: str, placeholder: str) -> str:
    """A statement of this module with the backend's placeholder ("?" here; none appears in a literal)."""
    return statement if placeholder == "?" else statement.replace("?", placeholder)


#: Inside a summary write: run(sql, rows of parameters) -> rows changed; fetch(sql, parameters) -> rows.
Run = Callable[[str, Sequence[Sequence[Any]]], int]
Fetch = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


class SummaryDb(Protocol):
    """What a backend gives the refresh: its placeholder, reads, and one write transaction."""

    placeholder: str
    #: What makes a SELECT lock its rows until commit (" FOR UPDATE"; "" where one writer is alone).
    lock_rows: str

    def summary_rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run a read (any connection that sees committed data) and return its rows."""

    def summary_write(self) -> AbstractContextManager[tuple[Run, Fetch]]:
        """One write transaction; inside it, (run, fetch) on its connection."""


#: A chunk's keys as they are now, locked in key order (see `claim`).
LOCK_KEYS = "SELECT key, dirty FROM summary_keys WHERE scope = ? AND key IN {keys} ORDER BY key"


def claim(
    db: SummaryDb,
    run: Run,
    fetch: Fetch,
    scope: SummaryScope,
    chunk: Sequence[tuple[str, int]],
    windows: Mapping[str, tuple[int, int]] | None = None,
) -> list[str]:
    """Compare-and-clear a chunk's keys in a few statements, not one round trip per key: lock them
    (in key order, the order ingest marks them in), keep those whose counter still holds the value
    read before computing (`chunk`: key, dirty), and clear those with their validity window."""
    p = db.placeholder
    keys = [k for k, _ in chunk]
    sql = portable(LOCK_KEYS.format(keys=in_list(keys)), p) + db.lock_rows
    now: dict[str, int] = dict(fetch(sql, [scope, *keys]))
    claimed = [(k, dirty) for k, dirty in chunk if now.get(k) == dirty]
    every = (_MIN_NS, _MAX_NS)
    run(portable(CLAIM_KEY, p), [(*(windows or {}).get(k, every), scope, k, d) for k, d in claimed])
    return [k for k, _ in claimed]


def dirty_keys(
    host_ids: Iterable[str], users: Iterable[str], hashes: Iterable[str], usage: Iterable[str] = ()
) -> list[tuple[SummaryScope, str]]:
    """The (scope, key) parameters of MARK_DIRTY for what a group commit stored, each key once;
    `usage`: the hosts stored findings with a service or runtime."""
    out: list[tuple[SummaryScope, str]] = [("host", h) for h in dict.fromkeys(host_ids)]
    out += [("usage", h) for h in dict.fromkeys(usage)]
    out += [("user", u) for u in set(users) if u]
    out += [("model", s) for s in set(hashes) if s]
    return out


def batch_keys(batches: Sequence[PreparedBatch], artifact_kind: int) -> list[tuple[SummaryScope, str]]:
    """The MARK_DIRTY parameters of a group commit: its hosts, users and MODEL_ARTIFACT hashes, and
    the hosts of rows that name a runtime or service; sorted, so concurrent commits on a backend
    with row locks take them in one order (no deadlock)."""
    users: set[str] = set()
    hashes: set[str] = set()
    usage: list[str] = []
    for b in batches:
        rows = b.rows
        users.update(r[10] for r in rows)  # FindingRow: user_name
        hashes.update(r[16] for r in rows if r[2] == artifact_kind)  # sha256
        if any(r[12] or r[13] for r in rows):  # runtime, service
            usage.append(b.host_id)
    return sorted(dirty_keys((b.host_id for b in batches), users, hashes, usage))


def kind_clause(kinds: Sequence[int], placeholder: str = "?") -> str:
    """The clause naming every stored kind, so an index led by (kind, host_id) serves a host's rows
    (PostgreSQL's findings_host); none for no kinds, where the key (host_id, id) serves them (SQLite
    from version 12: naming kinds there would lead its planner to the index on kind)."""
    return f" AND kind IN {in_list(kinds, placeholder)}" if kinds else ""


def tally_sql(
    by: GroupBy, spec: ScoreSpec, keys: Sequence[str], kinds: Sequence[int], placeholder: str = "?"
) -> tuple[str, list[Any]]:
    """The tally of some hosts (or users): per key, kind, severity and approval the count and points,
    then per age bound the oldest last_seen at or above it and the newest below it (unapproved only).

    `kinds` (every stored kind) lets an index led by (kind, host_id) serve a host's rows directly
    (a backend whose key leads with host_id passes none: see `kind_clause`).
    A host's rows also sum the bytes and keep the newest last_seen (the activity views read them:
    `read_activity`); a user's have 0 there, so the user index, which has no bytes, still serves
    them alone."""
    p = placeholder
    points, params = spec.points_sql(p)
    edges = []
    for bound, _ in spec.decay:
        edges.append(f"min(CASE WHEN approved = 0 AND last_seen >= {p} THEN last_seen END)")
        edges.append(f"max(CASE WHEN approved = 0 AND last_seen < {p} THEN last_seen END)")
        params += [bound, bound]
    if by == "host":
        column, where = "host_id", f"host_id IN {in_list(keys, p)}{kind_clause(kinds, p)}"
        params += [*keys, *kinds]
        activity = "sum(nbytes), max(last_seen)"
    else:
        column, where = "user_name", f"user_name <> '' AND user_name IN {in_list(keys, p)}"
        params += list(keys)
        activity = "0, 0"
    sql = (
        f"SELECT {column}, kind, severity, approved, count(*), sum({points}), {activity}, {', '.join(edges)} "
        f"FROM findings WHERE {where} GROUP BY kind, {column}, severity, approved"
    )
    return sql, params


def _bigint(value: int) -> int:
    return max(min(value, _MAX_NS), _MIN_NS)


def _window(spec: ScoreSpec, edges: Sequence[Any], window: list[int]) -> None:
    """Narrow a key's (after, until] by one row's per-bound edges (see tally_sql)."""
    for i, (bound, _) in enumerate(spec.decay):
        oldest_in, newest_out = edges[2 * i], edges[2 * i + 1]
        if oldest_in is not None:  # stays in while bound' <= oldest_in
            window[1] = min(window[1], spec.as_of + (oldest_in - bound))
        if newest_out is not None:  # stays out while bound' > newest_out
            window[0] = max(window[0], spec.as_of + (newest_out - bound))


def refresh_tally(db: SummaryDb, by: GroupBy, spec: ScoreSpec, kinds: Sequence[int]) -> int:
    """Recompute the tally rows of every dirty key of `by`, and of every key whose window does not
    hold spec.as_of; returns how many keys were recomputed."""
    p = db.placeholder
    collect_moved(db)
    stale = db.summary_rows(portable(STALE_KEYS, p), [by, spec.as_of, spec.as_of])
    done = 0
    for start in range(0, len(stale), CHUNK):
        chunk = stale[start : start + CHUNK]
        keys = [k for k, _ in chunk]
        sql, params = tally_sql(by, spec, keys, kinds, p)
        rows: dict[str, list[tuple[Any, ...]]] = {k: [] for k in keys}
        windows = {k: [_MIN_NS, _MAX_NS] for k in keys}
        weights = dict(spec.weights)
        for key, kind, severity, approved, n, points, nbytes, last, *edges in db.summary_rows(sql, params):
            row = (by, key, kind, severity, approved, n, float(points or 0.0), int(nbytes or 0), int(last))
            rows[key].append(row)
            if not approved and weights.get(severity, 0.0):
                _window(spec, edges, windows[key])
        bounded = {
            k: (max(min(a, _MAX_NS), _MIN_NS), max(min(u, _MAX_NS), _MIN_NS)) for k, (a, u) in windows.items()
        }
        with db.summary_write() as (run, fetch):
            # A key stored to meanwhile is not claimed: the next refresh takes it.
            claimed = claim(db, run, fetch, by, chunk, bounded)
            if claimed:
                run(portable(DELETE_TALLY.format(keys=in_list(claimed)), p), [(by, *claimed)])
                run(portable(INSERT_TALLY, p), [r for k in claimed for r in rows[k]])
            done += len(claimed)
    return done


def read_tally(db: SummaryDb, by: GroupBy, keys: Sequence[str] | None = None) -> list[tuple[Any, ...]]:
    """(key, kind, severity, approved, findings, points) rows of the kept tally of `by` (of `keys` only)."""
    p = db.placeholder
    if keys is None:
        return db.summary_rows(portable(READ_TALLY, p), [by])
    out: list[tuple[Any, ...]] = []
    for start in range(0, len(keys), CHUNK):
        chunk = list(keys[start : start + CHUNK])
        out += db.summary_rows(portable(f"{READ_TALLY} AND key IN {in_list(chunk)}", p), [by, *chunk])
    return out


def read_scores(db: SummaryDb, by: GroupBy) -> list[tuple[str, int, int, float]]:
    """(key, findings, unapproved, points) of every key of `by`, summed from its kept tally rows."""
    rows = db.summary_rows(portable(READ_SCORES, db.placeholder), [by])
    return [(k, int(n), int(unappr or 0), float(points or 0.0)) for k, n, unappr, points in rows]


def read_totals(db: SummaryDb) -> list[tuple[Any, ...]]:
    """(key "", kind, severity, approved, findings, points): the hosts' kept tally summed over the fleet."""
    return [(k, kind, sev, appr, int(n), p) for k, kind, sev, appr, n, p in db.summary_rows(READ_TOTALS, [])]


def refresh_models(db: SummaryDb, artifact_kind: int) -> int:
    """Recompute the census rows of every dirty weights hash; returns how many were recomputed."""
    p = db.placeholder
    collect_moved(db)
    stale = db.summary_rows(portable(STALE_KEYS, p), ["model", 0, 0])
    done = 0
    for start in range(0, len(stale), CHUNK):
        chunk = stale[start : start + CHUNK]
        keys = [k for k, _ in chunk]
        sql = portable(CENSUS_OF.format(keys=in_list(keys)), p)
        found = {r[0]: r for r in db.summary_rows(sql, [artifact_kind, *keys])}
        sql = portable(HOLDERS_OF.format(keys=in_list(keys), artifact=int(artifact_kind)), p)
        held: dict[str, list[tuple[Any, ...]]] = {}
        for row in db.summary_rows(sql, [*keys, KEPT_HOLDERS]):
            held.setdefault(row[0], []).append(row)
        with db.summary_write() as (run, fetch):
            claimed = claim(db, run, fetch, "model", chunk)
            if claimed:
                run(portable(DELETE_MODEL.format(keys=in_list(claimed)), p), [claimed])
                run(portable(INSERT_MODEL, p), [found[k] for k in claimed if k in found])
                run(portable(DELETE_HOLDERS.format(keys=in_list(claimed)), p), [claimed])
                run(portable(INSERT_HOLDERS, p), [r for k in claimed for r in held.get(k, ())])
            done += len(claimed)
    return done


#: Findings of some kinds per host and kind (Store.activity) from the hosts' kept tally; the first
#: parameter is the scope ("host"), the kinds follow.
READ_ACTIVITY = """
SELECT key, kind, sum(findings), sum(CASE WHEN approved = 0 THEN findings ELSE 0 END), sum(nbytes),
       max(last_seen)
FROM risk_summary WHERE scope = ? AND kind IN {kinds} GROUP BY key, kind
"""


def read_activity(db: SummaryDb, kinds: Sequence[int]) -> list[tuple[str, int, int, int, int, int]]:
    """(host, kind, findings, unapproved, bytes, newest last_seen) of `kinds` from the hosts' kept
    tally (brought up to date by the caller): one row per host, kind, severity and approval to
    fold, never the findings."""
    sql = portable(READ_ACTIVITY.format(kinds=in_list(kinds)), db.placeholder)
    return [
        (host, int(kind), int(n), int(unappr or 0), int(nbytes or 0), int(last))
        for host, kind, n, unappr, nbytes, last in db.summary_rows(sql, ["host", *kinds])
    ]


def read_census(db: SummaryDb, limit: int) -> list[tuple[Any, ...]]:
    """The kept census rows, the ones unapproved on most hosts first, then most hosts, then hash."""
    return db.summary_rows(portable(READ_CENSUS, db.placeholder), [limit])


def read_holders(db: SummaryDb, hashes: Sequence[str], holders: int) -> list[tuple[str, str, str, int]]:
    """(sha256, host, path, approved): the first `holders` (at most KEPT_HOLDERS) kept holders of
    each hash, in CENSUS_HOLDERS' order."""
    out: list[tuple[str, str, str, int]] = []
    for start in range(0, len(hashes), CHUNK):
        chunk = list(hashes[start : start + CHUNK])
        sql = portable(READ_HOLDERS.format(keys=in_list(chunk)), db.placeholder)
        out += [
            (sha, host, path, int(appr)) for sha, host, path, appr in db.summary_rows(sql, [*chunk, holders])
        ]
    return out


# ---- usage: each host's AI services (per service and process name) and runtimes

DELETE_SERVICES = "DELETE FROM service_summary WHERE host_id IN {keys}"
INSERT_SERVICES = (
    "INSERT INTO service_summary (host_id, service, process_name, vendor, nbytes, findings, unapproved, "
    "last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
DELETE_RUNTIMES = "DELETE FROM runtime_summary WHERE host_id IN {keys}"
INSERT_RUNTIMES = (
    "INSERT INTO runtime_summary (host_id, runtime, exposed, findings, unapproved, last_seen) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
#: Some hosts' services and runtimes from their findings; {kinds} is `kind_clause`.
SERVICES_OF = """
SELECT host_id, service, process_name, max(vendor), sum(nbytes), count(*),
       sum(CASE WHEN approved = 0 THEN 1 ELSE 0 END), max(last_seen)
FROM findings WHERE host_id IN {keys}{kinds} AND service <> ''
GROUP BY host_id, service, process_name
"""
RUNTIMES_OF = """
SELECT host_id, runtime, max(CASE WHEN kind = ? THEN 1 ELSE 0 END), count(*),
       sum(CASE WHEN approved = 0 THEN 1 ELSE 0 END), max(last_seen)
FROM findings WHERE host_id IN {keys}{kinds} AND runtime <> ''
GROUP BY host_id, runtime
"""
#: The services some hosts' kept rows name (their old rows, before a refresh replaces them).
SERVICES_HELD = "SELECT DISTINCT service FROM service_summary WHERE host_id IN {keys}"
#: Some services' fleet rows from the hosts' kept rows (one index range per service).
FLEET_SERVICES_OF = """
SELECT service, max(vendor), count(DISTINCT host_id), count(DISTINCT process_name), sum(nbytes),
       sum(findings), sum(unapproved), max(last_seen)
FROM service_summary WHERE service IN {keys} GROUP BY service
"""
DELETE_FLEET_SERVICES = "DELETE FROM fleet_service_summary WHERE service IN {keys}"
INSERT_FLEET_SERVICES = (
    "INSERT INTO fleet_service_summary (service, vendor, hosts, processes, nbytes, findings, unapproved, "
    "last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
#: The fleet's views over the kept rows, in the order of Store.services and Store.runtimes.
READ_SERVICES = """
SELECT service, vendor, hosts, processes, nbytes, findings, unapproved, last_seen
FROM fleet_service_summary ORDER BY unapproved DESC, hosts DESC, service
"""
READ_RUNTIMES = """
SELECT runtime, count(*), sum(exposed), sum(findings), sum(unapproved), max(last_seen)
FROM runtime_summary GROUP BY runtime ORDER BY count(*) DESC, runtime
"""


#: Hosts per usage recompute: a host can hold hundreds of (service, process) rows, and a chunk's
#: rows are held in memory until written (500 hosts took the refresh to 130 MiB at 1M findings).
USAGE_CHUNK = 100


def refresh_usage(db: SummaryDb, kinds: Sequence[int], exposed_kind: int) -> int:
    """Recompute the service and runtime rows of every dirty host, then the fleet row of every
    service they held before or hold now (`refresh_fleet_services`); returns how many hosts and
    services were recomputed."""
    p = db.placeholder
    collect_moved(db)
    stale = db.summary_rows(portable(STALE_KEYS, p), ["usage", 0, 0])
    done = 0
    for start in range(0, len(stale), USAGE_CHUNK):
        chunk = stale[start : start + USAGE_CHUNK]
        keys = [k for k, _ in chunk]
        where = {"keys": in_list(keys), "kinds": kind_clause(kinds)}
        services: dict[str, list[tuple[Any, ...]]] = {k: [] for k in keys}
        for row in db.summary_rows(portable(SERVICES_OF.format(**where), p), [*keys, *kinds]):
            services[row[0]].append(row)
        runtimes: dict[str, list[tuple[Any, ...]]] = {k: [] for k in keys}
        for row in db.summary_rows(portable(RUNTIMES_OF.format(**where), p), [exposed_kind, *keys, *kinds]):
            runtimes[row[0]].append(row)
        with db.summary_write() as (run, fetch):
            claimed = claim(db, run, fetch, "usage", chunk)
            if claimed:
                # The services these hosts held and hold: their fleet rows change (marked in key
                # order, after the hosts' keys, as every refresh takes them: no deadlock).
                held = fetch(portable(SERVICES_HELD.format(keys=in_list(claimed)), p), claimed)
                touched = {s for (s,) in held} | {r[1] for k in claimed for r in services[k]}
                run(portable(MARK_DIRTY, p), [("service", s) for s in sorted(touched)])
                run(portable(DELETE_SERVICES.format(keys=in_list(claimed)), p), [claimed])
                run(portable(DELETE_RUNTIMES.format(keys=in_list(claimed)), p), [claimed])
                run(portable(INSERT_SERVICES, p), [r for k in claimed for r in services[k]])
                run(portable(INSERT_RUNTIMES, p), [r for k in claimed for r in runtimes[k]])
            done += len(claimed)
    return done + refresh_fleet_services(db)


def refresh_fleet_services(db: SummaryDb) -> int:
    """Recompute the fleet row of every dirty service from the hosts' kept rows (scope "service",
    marked by `refresh_usage`); returns how many services. A service's row costs its (host,
    process) rows, never its findings, and the services view reads one row per service."""
    p = db.placeholder
    stale = db.summary_rows(portable(STALE_KEYS, p), ["service", 0, 0])
    done = 0
    for start in range(0, len(stale), CHUNK):
        chunk = stale[start : start + CHUNK]
        keys = [k for k, _ in chunk]
        sql = portable(FLEET_SERVICES_OF.format(keys=in_list(keys)), p)
        found = {r[0]: r for r in db.summary_rows(sql, keys)}
        with db.summary_write() as (run, fetch):
            claimed = claim(db, run, fetch, "service", chunk)
            if claimed:
                run(portable(DELETE_FLEET_SERVICES.format(keys=in_list(claimed)), p), [claimed])
                run(portable(INSERT_FLEET_SERVICES, p), [found[k] for k in claimed if k in found])
            done += len(claimed)
    return done


def read_services(db: SummaryDb) -> list[tuple[Any, ...]]:
    return db.summary_rows(READ_SERVICES, [])


def read_runtimes(db: SummaryDb) -> list[tuple[Any, ...]]:
    return db.summary_rows(READ_RUNTIMES, [])


class KeptTallyReads(Store):
    """The reads both backends answer from the kept tally when `_kept_tally` says it serves the
    spec (brought up to date first), else by the store's full computation."""

    def _kept_tally(self, by: GroupBy, spec: ScoreSpec) -> bool:
        raise NotImplementedError

    def scores(self, by: GroupBy, spec: ScoreSpec) -> list[ScoreRow]:
        if self._kept_tally(by, spec):
            return [ScoreRow(*r) for r in read_scores(self, by)]  # type: ignore[arg-type]
        return super().scores(by, spec)

    def tally_of(self, by: GroupBy, spec: ScoreSpec, keys: Sequence[str]) -> list[TallyRow]:
        if self._kept_tally(by, spec):
            return tally_rows(read_tally(self, by, keys))  # type: ignore[arg-type]
        return super().tally_of(by, spec, keys)

    def tally_totals(self, spec: ScoreSpec) -> list[TallyRow]:
        if self._kept_tally("host", spec):
            return tally_rows(read_totals(self))  # type: ignore[arg-type]
        return super().tally_totals(spec)

"""The read side's contract (contract/query_contract.py) and the console-access contract
(contract/auth_contract.py) on the PostgreSQL backend, on the real server the test set-up starts
(tests/pg_server.py); and what only PostgreSQL's read side has: the evidence facts backfilled by
migration 2, the aggregates' indexes partitioned onto every day, sessions tied to their user."""

from __future__ import annotations

import re
from collections.abc import Iterator

import psycopg
import pytest
from contract.auth_contract import AuthContract
from contract.query_contract import QueryContract, finding
from contract.summary_contract import SummaryContract

from collector.risk import score_spec
from collector.storage import Store, StoreError, open_store
from collector.storage import postgres as backend
from collector.storage.reads import FindingFilter

T0 = 1_750_000_000.0
DAY = 86_400.0
_READ_SIDE_INDEXES = {
    "findings_recent",
    "findings_host",
    "findings_user",
    "findings_service",
    "findings_model",
    "findings_moved",
}


@pytest.fixture
def store(pg_url: str) -> Iterator[Store]:
    s = open_store(pg_url)
    try:
        yield s
    finally:
        s.close()


class TestQueryPostgres(QueryContract):
    pass


class TestSummariesPostgres(SummaryContract):
    pass


class TestAuthPostgres(AuthContract):
    pass


def test_a_session_for_a_removed_user_is_refused(store: Store) -> None:
    # A login racing a `user remove` on another collector: the foreign key refuses the session,
    # so re-adding the name later cannot revive it.
    store.add_user("ann", "admin", "x")
    assert store.remove_user("ann")
    with pytest.raises(StoreError, match="session"):
        store.create_session("s1", "ann", "c", T0 + 3600)
    store.add_user("ann", "viewer", "y")
    assert store.session("s1", T0) is None


def _sql(url: str, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query.encode(), params)
        return cur.fetchall() if cur.description else []


def _indexes(url: str, table: str) -> set[str]:
    rows = _sql(url, "SELECT indexname FROM pg_indexes WHERE tablename = %s", (table,))
    return {str(name) for (name,) in rows}


def test_version_1_findings_get_their_facts_on_migration(pg_url: str) -> None:
    # A database as the first PostgreSQL collector left it: schema 1, findings without fact columns.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(backend._MIGRATIONS[1].encode())
        conn.execute("CREATE TABLE schema_version (version integer PRIMARY KEY, applied_at timestamptz)")
        conn.execute("INSERT INTO schema_version (version) VALUES (1)")
        for f in (
            finding("svc", kind="AI_SERVICE_ACCESS", user="alice", service="api.openai.com", bytes_out=9),
            finding("w", kind="MODEL_ARTIFACT", sha256="ab" * 32, path="/m/w.gguf"),
        ):
            f.host_id = "h1"
            last = f.last_seen.ToNanoseconds()
            row = (f.host_id, f.id, f.kind, f.severity, f.confidence, 0, last, last, 1, f.SerializeToString())
            conn.execute(
                f"INSERT INTO findings ({', '.join(backend._FINDING_COLUMNS.split(', ')[:10])}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                row,
            )
            conn.execute(
                "INSERT INTO finding_keys VALUES (%s, %s, %s, %s, %s)", (f.host_id, f.id, last, last, 1)
            )
        # A body that is not a Finding keeps empty facts instead of failing the migration.
        conn.execute(
            "INSERT INTO findings (host_id, id, kind, severity, confidence, approved, first_seen, "
            "last_seen, count, data) VALUES ('h1', 'junk', 1, 3, 1.0, 0, 1, 1, 1, '\\xff'::bytea)"
        )
    with open_store(pg_url) as s:
        assert [(r.service, r.hosts, r.bytes_out) for r in s.services()] == [("api.openai.com", 1, 9)]
        assert [m.sha256 for m in s.model_census()] == ["ab" * 32]
        assert {r.key for r in s.tally("user", score_spec(T0))} == {"alice"}
        assert [f["id"] for f in s.findings_page(FindingFilter(user="alice"), 10).findings] == ["svc"]
    assert _indexes(pg_url, "findings") >= _READ_SIDE_INDEXES


def test_every_day_partition_carries_the_read_side_indexes(store: Store, pg_url: str) -> None:
    store.store_batch(
        "h", 1, [finding("a", last_seen=T0), finding("b", kind="MODEL_ARTIFACT", sha256="cd" * 32)]
    )
    store.store_batch("h", 2, [finding("c", last_seen=T0 + DAY)])
    for day in (T0, T0 + DAY):
        name = backend.partition_name(int(day * 1e9) // backend.DAY_NS)
        # PostgreSQL names each partition's index after the partition; one per partitioned index.
        assert len(_indexes(pg_url, name)) == len(_READ_SIDE_INDEXES) + 1  # + the primary key


def test_pages_walk_the_keyset_index_not_the_table(store: Store, pg_url: str) -> None:
    store.store_batch("h", 1, [finding(f"f{i}", last_seen=T0 + i % 50) for i in range(2000)])
    _sql(pg_url, "ANALYZE findings")
    page = store.findings_page(FindingFilter(), 10)
    assert page.next is not None
    plan = _sql(
        pg_url,
        "EXPLAIN SELECT host_id, id FROM findings WHERE (last_seen, host_id, id) < (%s, %s, %s) "
        "ORDER BY last_seen DESC, host_id DESC, id DESC LIMIT 11",
        (page.next.last_seen_ns, page.next.host_id, page.next.id),
    )
    text = "\n".join(str(r[0]) for r in plan)
    # The cursor starts an index range on every partition, merged in order: no Sort node (a
    # "Sort Key" line of the Merge Append is not one).
    assert "Index Cond: (ROW(last_seen, host_id, id) <" in text, text
    assert not re.search(r"(^|->)\s*(Incremental )?Sort\s+\(", text, re.MULTILINE), text

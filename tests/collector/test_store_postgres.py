"""The PostgreSQL backend on a real server the test set-up starts (tests/pg_server.py): the storage
contract, and what only PostgreSQL has (versioned migrations under an advisory lock, day partitions
on last_seen, retention by dropping them, a server that goes away and comes back)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from collector_testkit import T0, build_finding
from contract.query_contract import finding
from contract.storage_contract import StorageContract
from pg_server import TEMPLATE, PostgresServer
from umbra.v1 import finding_pb2

from collector.query import activity
from collector.risk import score_spec
from collector.storage import Store, StoreError, open_store
from collector.storage.postgres import DAY_NS, SCHEMA_VERSION, PostgresStore, partition_name

Factory = Callable[..., finding_pb2.Finding]
DAY = 86_400.0


@pytest.fixture
def store(pg_url: str) -> Iterator[Store]:
    s = open_store(pg_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def new_store(pg_server: PostgresServer) -> Iterator[Callable[[], Store]]:
    """Fresh stores, each on a database of its own (dropped at the end of the test)."""
    urls: list[str] = []

    def make() -> Store:
        urls.append(pg_server.create_database(TEMPLATE))
        return open_store(urls[-1])

    yield make
    for url in urls:
        pg_server.drop_database(url)


class TestPostgresStore(StorageContract):
    pass


def sql(url: str, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query.encode(), params)
        return cur.fetchall() if cur.description else []


def where_is(url: str, host_id: str, finding_id: str) -> list[str]:
    """The partitions holding a finding (tableoid names the partition a row lives in)."""
    rows = sql(
        url,
        "SELECT tableoid::regclass::text FROM findings WHERE host_id = %s AND id = %s",
        (host_id, finding_id),
    )
    return [str(r[0]) for r in rows]


def day_of(seconds: float) -> int:
    return int(seconds * 1e9) // DAY_NS


class TestSchema:
    def test_migrations_are_recorded_and_not_rerun(self, pg_url: str) -> None:
        open_store(pg_url).close()
        open_store(pg_url).close()
        assert sql(pg_url, "SELECT version FROM schema_version ORDER BY version") == [
            (v,) for v in range(1, SCHEMA_VERSION + 1)
        ]

    def test_collectors_starting_at_once_migrate_once(self, pg_url: str) -> None:
        errors: list[BaseException] = []
        start = threading.Barrier(6)

        def open_one() -> None:
            start.wait()
            try:
                open_store(pg_url).close()
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=open_one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert sql(pg_url, "SELECT count(*) FROM schema_version") == [(SCHEMA_VERSION,)]

    def test_read_commands_never_create_or_migrate(self, pg_url: str) -> None:
        with pytest.raises(StoreError, match="no Umbra schema"):
            open_store(pg_url, create=False)
        assert sql(pg_url, "SELECT to_regclass('schema_version')") == [(None,)]
        open_store(pg_url).close()
        with open_store(pg_url, create=False) as s:
            assert s.hosts() == []

    def test_newer_schema_is_refused(self, pg_url: str) -> None:
        open_store(pg_url).close()
        sql(pg_url, "INSERT INTO schema_version (version) VALUES (99)")
        with pytest.raises(StoreError, match="newer"):
            open_store(pg_url)
        with pytest.raises(StoreError, match="newer"):
            open_store(pg_url, create=False)

    def test_migration_6_computes_the_new_kept_rows_from_version_5(self, pg_url: str) -> None:
        # A version-5 database with its kept summaries up to date, then migrated: the activity,
        # services and census views answer from the new kept rows as from the findings.
        with open_store(pg_url) as s:
            for h in range(3):
                s.store_batch(
                    f"h{h}",
                    1,
                    [
                        finding("g", kind="GPU_AI_WORKLOAD", runtime="vllm"),
                        finding("x", kind="MODEL_EXFILTRATION", sha256="ab" * 32, transfer=True),
                        finding("s", service="api.openai.com", vendor="OpenAI", bytes_out=100 * h),
                        finding("m", kind="MODEL_ARTIFACT", sha256="cd" * 32, path=f"/m/{h}.gguf"),
                    ],
                )
            s.refresh_summaries(score_spec(T0))
        sql(
            pg_url,
            "DROP TABLE fleet_service_summary, model_holder_summary; "
            "ALTER TABLE risk_summary DROP COLUMN nbytes, DROP COLUMN last_seen; "
            "DELETE FROM summary_keys WHERE scope = 'service'; DELETE FROM schema_version WHERE version = 6",
        )
        with pytest.raises(StoreError, match="older"):
            open_store(pg_url, create=False)
        with open_store(pg_url) as s:
            past = T0 - 1000 * DAY
            for view in (activity.compute, activity.transfers):
                assert view(s) == view(s, since=past) != []
            assert s.services() == s.services(since=past) != []
            (model,) = s.model_census(10, 10)
            assert [h.path for h in model.holders] == ["/m/0.gguf", "/m/1.gguf", "/m/2.gguf"]


class TestPartitions:
    def test_findings_live_in_the_partition_of_their_last_seen_day(self, pg_url: str) -> None:
        with open_store(pg_url) as s:
            s.store_batch("h", 1, [build_finding("a", last_seen=T0), build_finding("b", last_seen=T0 + DAY)])
        assert where_is(pg_url, "h", "a") == [partition_name(day_of(T0))]
        assert where_is(pg_url, "h", "b") == [partition_name(day_of(T0 + DAY))]

    def test_a_finding_seen_on_a_later_day_moves_and_is_never_in_two_partitions(self, pg_url: str) -> None:
        with open_store(pg_url) as s:
            s.store_batch("h", 1, [build_finding("a", last_seen=T0 - 2 * DAY, count=3)])
            assert s.store_batch("h", 2, [build_finding("a", last_seen=T0, count=4)]).updated == 1
            # An older version arriving late widens first_seen in place; it moves nothing back.
            late = build_finding("a", last_seen=T0 - 3 * DAY, first_seen=T0 - 5 * DAY)
            assert s.store_batch("h", 3, [late]).updated == 1
            (row,) = s.findings()
        assert where_is(pg_url, "h", "a") == [partition_name(day_of(T0))]
        assert row["count"] == 4
        assert sql(pg_url, "SELECT count(*) FROM finding_keys") == [(1,)]

    def test_the_key_table_refuses_a_second_copy(self, pg_url: str) -> None:
        """The constraint that keeps (host, id) unique across partitions is real, not a convention."""
        with open_store(pg_url) as s:
            s.store_batch("h", 1, [build_finding("a")])
        with pytest.raises(psycopg.errors.UniqueViolation):
            sql(pg_url, "INSERT INTO finding_keys VALUES ('h', 'a', 0, 1, 1)")

    def test_far_days_use_the_default_partition_until_their_day_comes(self, pg_url: str) -> None:
        now = [T0]
        far = T0 + 30 * DAY  # an agent clock a month ahead
        with PostgresStore(pg_url, clock=lambda: now[0]) as s:
            s.store_batch("h", 1, [build_finding("ahead", last_seen=far)])
            assert where_is(pg_url, "h", "ahead") == ["findings_default"]
            now[0] = far  # a month later, that day gets its partition, and the row moves into it
            s.store_batch("h", 2, [build_finding("today", last_seen=far + 1)])
            assert where_is(pg_url, "h", "ahead") == [partition_name(day_of(far))]
            assert sorted(f["id"] for f in s.findings()) == ["ahead", "today"]

    def test_retention_drops_whole_partitions(self, pg_url: str) -> None:
        with open_store(pg_url) as s:
            assert isinstance(s, PostgresStore)
            s.store_batch("h", 1, [build_finding(f"d{d}", last_seen=T0 - d * DAY) for d in range(5)])
            old = {partition_name(day_of(T0 - d * DAY)) for d in (3, 4)}
            assert old <= set(s.partitions())
            s.drop_before(T0 - 2.5 * DAY)
            assert not old & set(s.partitions()), "the days wholly before the cutoff are dropped"
            assert sorted(f["id"] for f in s.findings()) == ["d0", "d1", "d2"]
        assert sql(pg_url, "SELECT id FROM finding_keys ORDER BY id") == [("d0",), ("d1",), ("d2",)]

    def test_a_collector_with_a_stale_partition_list_still_stores(self, pg_url: str) -> None:
        """Another collector dropped a partition this one still believes in: rows go to the default
        partition, nothing fails and nothing is lost."""
        with open_store(pg_url) as a, open_store(pg_url) as b:
            a.store_batch("h", 1, [build_finding("x", last_seen=T0 - 3 * DAY)])
            b.store_batch("h", 2, [build_finding("y", last_seen=T0 - 3 * DAY + 1)])
            a.drop_before(T0)
            b.store_batch("h", 3, [build_finding("z", last_seen=T0 - 3 * DAY + 2)])
            assert [f["id"] for f in a.findings()] == ["z"]


class TestTransactions:
    def test_batch_is_one_transaction(self, pg_url: str) -> None:
        """A failure in the middle of a group leaves neither its findings nor its sequence."""
        with open_store(pg_url) as s:
            s.store_batch("h", 1, [build_finding("a")])
            sql(
                pg_url,
                "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS "
                "$$BEGIN IF NEW.id = 'c' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END$$",
            )
            sql(
                pg_url,
                "CREATE TRIGGER boom BEFORE INSERT ON finding_keys FOR EACH ROW EXECUTE FUNCTION boom()",
            )
            with pytest.raises(StoreError, match="boom"):
                s.store_batch("h", 2, [build_finding("b"), build_finding("c")])
            assert [r["id"] for r in s.findings()] == ["a"]
            assert s.hosts()[0].last_sequence == 1


@pytest.fixture(scope="module")
def own_server() -> Iterator[PostgresServer]:
    """A server of this module's own, which its tests stop and start (durable: an immediate stop
    must lose no committed transaction, as on a production server)."""
    server = PostgresServer(durable=True).start()
    try:
        yield server
    finally:
        server.destroy()


class TestServerAway:
    def test_store_errors_while_the_server_is_down_and_recovers_after(
        self, own_server: PostgresServer
    ) -> None:
        url = own_server.create_database()
        with open_store(url) as s:
            s.store_batch("h", 1, [build_finding("before")])
            own_server.stop("immediate")
            try:
                with pytest.raises(StoreError):
                    s.store_batch("h", 2, [build_finding("during")])
                with pytest.raises(StoreError):
                    s.hosts()
            finally:
                own_server.start()
            # The pool reconnects in the background with backoff, so the first calls after the
            # restart may still be refused (as StoreError, which agents retry); it must recover soon.
            deadline = time.monotonic() + 60
            while True:
                try:
                    s.store_batch("h", 3, [build_finding("after")])
                    break
                except StoreError:
                    assert time.monotonic() < deadline, "the store did not recover within 60 s"
                    time.sleep(0.5)
            assert sorted(f["id"] for f in s.findings()) == ["after", "before"]
            assert s.hosts()[0].last_sequence == 3

    def test_killed_connections_are_replaced(self, own_server: PostgresServer) -> None:
        url = own_server.create_database()
        with open_store(url) as s:
            s.store_batch("h", 1, [build_finding("a")])
            assert own_server.terminate_connections(url) >= 1
            s.store_batch("h", 2, [build_finding("b")])
            assert sorted(f["id"] for f in s.findings()) == ["a", "b"]


class TestTwoCollectors:
    def test_two_stores_writing_one_host_at_once_count_each_finding_new_once(self, pg_url: str) -> None:
        """Two collectors on one database, the same host's overlapping batches at once (an agent
        failing over mid-batch): no error, each finding new exactly once, one row each."""
        results: list[int] = []
        errors: list[BaseException] = []
        with open_store(pg_url) as a, open_store(pg_url) as b:
            start = threading.Barrier(2)

            def write(store: Store) -> None:
                start.wait()
                try:
                    for seq in range(20):
                        batch = [build_finding(f"f{seq * 50 + i}", last_seen=T0 + seq) for i in range(100)]
                        results.append(store.store_batch("h", seq, batch).new)
                except BaseException as exc:  # reported below
                    errors.append(exc)

            threads = [threading.Thread(target=write, args=(s,)) for s in (a, b)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert errors == []
        distinct = 19 * 50 + 100
        assert sum(results) == distinct
        assert sql(pg_url, "SELECT count(*), count(DISTINCT id) FROM findings") == [(distinct, distinct)]
        assert sql(pg_url, "SELECT count(*) FROM finding_keys") == [(distinct,)]

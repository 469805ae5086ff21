"""The SQLite backend: the storage contract on a file and in memory, and what only SQLite has
(the file itself, WAL, the writer lock, migrations of older files)."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from collector_testkit import T0, build_finding, build_inventory
from contract.query_contract import finding
from contract.storage_contract import StorageContract
from umbra.v1 import finding_pb2

from collector.query import activity
from collector.risk import score_spec
from collector.storage import SQLiteStore, Store, StoreError, open_store
from collector.storage.base import PreparedBatch

Factory = Callable[..., finding_pb2.Finding]

#: The SQLite stores the contract runs on.
URLS: dict[str, Callable[[Path], str]] = {
    "file": lambda tmp: f"sqlite:///{tmp / 'collector.db'}",
    "memory": lambda tmp: "sqlite:///:memory:",
}


@pytest.fixture(params=sorted(URLS))
def sqlite_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return URLS[request.param](tmp_path)


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    s = open_store(sqlite_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def new_store() -> Callable[[], Store]:
    return lambda: open_store("sqlite:///:memory:")


@pytest.fixture
def make_finding() -> Callable[..., finding_pb2.Finding]:
    return build_finding


class TestSQLiteStore(StorageContract):
    pass


class TestSQLiteBackend:
    def test_file_is_wal_with_full_sync(self, tmp_path: Path) -> None:
        path = tmp_path / "c.db"
        with SQLiteStore(str(path)):
            pass
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()

    def test_data_survives_reopen(self, tmp_path: Path, make_finding: Factory) -> None:
        url = f"sqlite:///{tmp_path / 'c.db'}"
        with open_store(url) as s:
            s.store_batch("h", 3, [make_finding("a")])
        with open_store(url, create=False) as s:
            assert [r["id"] for r in s.findings()] == ["a"]
            assert s.hosts()[0].last_sequence == 3

    def test_missing_file_without_create_is_an_error(self, tmp_path: Path) -> None:
        with pytest.raises(StoreError, match="no database"):
            open_store(f"sqlite:///{tmp_path / 'absent.db'}", create=False)
        assert not (tmp_path / "absent.db").exists()

    def test_foreign_files_are_refused(self, tmp_path: Path) -> None:
        junk = tmp_path / "junk.db"
        junk.write_bytes(b"not sqlite at all" * 100)
        with pytest.raises(StoreError):
            open_store(f"sqlite:///{junk}")
        other = tmp_path / "other.db"
        conn = sqlite3.connect(other)
        conn.execute("CREATE TABLE t (x)")
        conn.close()
        with pytest.raises(StoreError, match="not an Umbra"):
            open_store(f"sqlite:///{other}")

    def test_newer_schema_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "c.db"
        SQLiteStore(str(path)).close()
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA user_version = 99")
        conn.close()
        with pytest.raises(StoreError, match="newer"):
            SQLiteStore(str(path))

    def test_parent_directories_are_created(self, tmp_path: Path) -> None:
        with open_store(f"sqlite:///{tmp_path / 'a' / 'b' / 'c.db'}"):
            pass
        assert (tmp_path / "a" / "b" / "c.db").exists()

    def test_batch_is_one_transaction(self, tmp_path: Path, make_finding: Factory) -> None:
        """A failure in the middle of a batch leaves neither its findings nor its sequence."""
        store = SQLiteStore(str(tmp_path / "c.db"))
        store.store_batch("h", 1, [make_finding("a")])
        store._writer.execute(
            "CREATE TRIGGER boom BEFORE INSERT ON findings WHEN NEW.id = 'c' "
            "BEGIN SELECT RAISE(ABORT, 'boom'); END"
        )
        with pytest.raises(StoreError):
            store.store_batch("h", 2, [make_finding("b"), make_finding("c")])
        assert [r["id"] for r in store.findings()] == ["a"]
        assert store.hosts()[0].last_sequence == 1
        store.close()

    def test_a_group_commit_of_uneven_batches_stores_each_row_with_its_own_body(self, tmp_path: Path) -> None:
        # Staging binds rows many to a statement (and the rest one by one): every batch's range must
        # still hold its own rows, whatever the sizes, and the counts stay per batch.
        store = SQLiteStore(str(tmp_path / "c.db"))
        sizes = {"a": 100, "b": 1, "c": 130, "d": 64}

        def batch(host: str, seq: int, n: int, last: float) -> PreparedBatch:
            found = [build_finding(f"{host}-{i}", summary=f"{host} {i}", last_seen=last) for i in range(n)]
            return store.prepare(host, seq, found)

        results = store.store_prepared([batch(h, 1, n, T0) for h, n in sizes.items()])
        assert [r.new for r in results] == list(sizes.values())
        # The same ids again, newer (a) or the same (c), beside new ones: counted per batch.
        again = store.store_prepared([batch("a", 2, 150, T0 + 60), batch("c", 2, 10, T0)])
        assert [(r.new, r.updated, r.unchanged) for r in again] == [(50, 100, 0), (0, 0, 10)]
        for f in store.findings(limit=1000):
            host, n = f["id"].rsplit("-", 1)
            assert f["host_id"] == host and f["summary"] == f"{host} {n}"
        assert len(store.findings(limit=1000)) == 345
        assert store._writer.execute("SELECT count(*) FROM temp.staged").fetchone() == (0,)
        store.close()


def _three_hosts(url: str, findings: Callable[[int], list[finding_pb2.Finding]]) -> Store:
    """A store at `url` holding hosts h0..h2, each with `findings(its number)` (the caller closes it)."""
    store = open_store(url)
    for h in range(3):
        store.store_batch(f"h{h}", 1, findings(h))
    return store


class TestSchemaMigration:
    def test_version_11_computes_the_new_kept_rows_from_version_10(self, tmp_path: Path) -> None:
        # A version-10 file with its kept summaries up to date: read-only it answers from the
        # findings; migrated, the activity, services and census views answer from the new kept rows.
        url = f"sqlite:///{tmp_path / 'v10.db'}"
        with _three_hosts(
            url,
            lambda h: [
                finding("g", kind="GPU_AI_WORKLOAD", runtime="vllm"),
                finding("x", kind="MODEL_EXFILTRATION", sha256="ab" * 32, transfer=True),
                finding("s", service="api.openai.com", vendor="OpenAI", bytes_out=100 * h),
                finding("m", kind="MODEL_ARTIFACT", sha256="cd" * 32, path=f"/m/{h}.gguf"),
            ],
        ) as s:
            s.refresh_summaries(score_spec(T0))
        conn = sqlite3.connect(tmp_path / "v10.db")
        conn.executescript(
            "DROP TABLE fleet_service_summary; DROP TABLE model_holder_summary; "
            "ALTER TABLE risk_summary DROP COLUMN nbytes; ALTER TABLE risk_summary DROP COLUMN last_seen; "
            "DELETE FROM summary_keys WHERE scope = 'service'; PRAGMA user_version = 10;"
        )
        conn.close()
        past = T0 - 1000 * 86400.0

        def check(s: Store) -> None:
            for view in (activity.compute, activity.transfers):
                assert view(s) == view(s, since=past) != []
            assert s.services() == s.services(since=past) != []
            (model,) = s.model_census(10, 10)
            assert [h.path for h in model.holders] == ["/m/0.gguf", "/m/1.gguf", "/m/2.gguf"]

        with open_store(url, create=False) as old:
            check(old)
        with open_store(url) as new:
            check(new)
        from collector.storage import sqlite as backend

        assert sqlite3.connect(tmp_path / "v10.db").execute("PRAGMA user_version").fetchone() == (
            backend.SCHEMA_VERSION,
        )

    def test_version_12_drops_the_wide_host_index_and_keeps_every_view(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        # A version-11 file (findings_host, no findings_of_kind): read-only its refreshes name every
        # kind for findings_host; migrated, they read a host's rows by the key. Same answers.
        from collector.storage import sqlite as backend

        url = f"sqlite:///{tmp_path / 'v11.db'}"
        _three_hosts(
            url,
            lambda h: [
                finding("g", kind="GPU_AI_WORKLOAD", runtime="vllm"),
                finding("s", service="api.openai.com", vendor="OpenAI", bytes_out=100 * h),
                finding("u", kind="AI_DATA_UPLOAD", service="api.openai.com", user=f"u{h}"),
            ],
        ).close()
        conn = sqlite3.connect(tmp_path / "v11.db")
        conn.executescript(
            "DROP INDEX findings_of_kind; CREATE INDEX findings_host ON findings (kind, host_id, severity, "
            "approved, last_seen, confidence, nbytes, runtime, service, process_name, vendor); "
            "UPDATE summary_keys SET dirty = dirty + 1; PRAGMA user_version = 11;"
        )
        conn.close()

        def views(s: Store) -> tuple[object, ...]:
            spec = score_spec(T0)
            return (
                s.tally("host", spec),
                s.tally("user", spec),
                s.services(),
                s.runtimes(),
                activity.compute(s),
                [f["id"] for f in s.findings(kind="AI_DATA_UPLOAD")],
            )

        with open_store(url, create=False) as old:
            before = views(old)
        assert before[0] and before[2] and before[5] == ["u", "u", "u"]
        with caplog.at_level(logging.INFO, logger="collector.storage.sqlite"), open_store(url) as new:
            assert views(new) == before
        assert "migrating schema version 11 -> 12" in caplog.text  # serve says why it waits
        migrated = sqlite3.connect(tmp_path / "v11.db")
        assert migrated.execute("PRAGMA user_version").fetchone() == (backend.SCHEMA_VERSION,)
        names = {n for (n,) in migrated.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "findings_of_kind" in names and "findings_host" not in names
        assert migrated.execute("SELECT count(*) FROM findings").fetchone() == (9,)

    def test_a_host_refresh_reads_the_key_and_a_kind_filter_the_kind_index(self, tmp_path: Path) -> None:
        # The plans ingest's saving rests on (version 12): no refresh or kind count walks the table.
        from collector.storage import summaries
        from collector.storage.reads import rare_kinds_sql

        store = SQLiteStore(str(tmp_path / "c.db"))
        store.store_batch("h", 1, [finding("a", service="api.openai.com")])
        sql, params = summaries.tally_sql("host", score_spec(T0), ["h", "i"], store._host_kinds())
        usage = summaries.SERVICES_OF.format(keys="(?)", kinds=summaries.kind_clause(store._host_kinds()))
        plans = {
            "tally": (sql, params),
            "usage": (usage, ["h"]),
            "kinds": rare_kinds_sql([int(finding_pb2.KIND_AI_DATA_UPLOAD)]),
        }
        for name, (query, args) in plans.items():
            plan = " ".join(r[-1] for r in store._writer.execute(f"EXPLAIN QUERY PLAN {query}", args))
            assert "SCAN findings" not in plan, (name, plan)
            index = "findings_of_kind" if name == "kinds" else "sqlite_autoindex_findings_1"
            assert index in plan, (name, plan)
        store.close()

    def test_a_version_1_file_is_migrated_by_serve_and_readable_before(
        self, tmp_path: Path, make_finding: Factory
    ) -> None:
        from collector.storage import sqlite as backend

        path = tmp_path / "v1.db"
        conn = sqlite3.connect(path)
        conn.executescript(
            f"{backend._SCHEMA}PRAGMA application_id = {backend.APPLICATION_ID};PRAGMA user_version = 1;"
        )
        conn.close()
        with open_store(f"sqlite:///{path}", create=False) as old:  # read commands never rewrite it
            assert old.hosts() == [] and old.tokens() == [] and old.current_policy() is None
            assert old.inventories() == []
            with pytest.raises(StoreError, match="predates enrollment"):
                old.create_token("x", time.time() + 60, 1)
        assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone() == (1,)
        with open_store(f"sqlite:///{path}") as new:
            new.store_batch("h", 1, [make_finding("a")])
            new.create_token("x", time.time() + 60, 1)
            assert new.hosts()[0].silent_since == 0.0
            assert [f["id"] for f in new.findings(kind="LOCAL_MODEL_RUNTIME")] == ["a"]
            assert new.record_inventory("h", build_inventory(T0, "/m/a.gguf"))
        migrated = sqlite3.connect(path)
        assert migrated.execute("PRAGMA user_version").fetchone() == (backend.SCHEMA_VERSION,)
        indexes = migrated.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'findings'"
        )
        # findings_recent from version 3 (findings_kind and findings_last_seen gone), and the read
        # side's covering indexes from version 5, the moved-keys index from version 8, and from
        # version 12 the narrow kind index in place of version 9's findings_host.
        assert {name for (name,) in indexes if not name.startswith("sqlite_autoindex")} == {
            "findings_recent",
            "findings_of_kind",
            "findings_user",
            "findings_service",
            "findings_model",
            "findings_moved",
        }

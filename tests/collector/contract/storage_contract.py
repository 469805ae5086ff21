"""The storage contract: one set of tests every backend must pass (GRR's db_test_mixin pattern).

A backend's test module composes it: `class TestSQLiteStore(StorageContract)` with two fixtures,
`store` (an open, empty store) and `new_store` (a factory of further empty stores of the same
backend, for property tests that need a fresh one per example). Backend-specific tests (files,
partitions, migrations of one engine) live beside it in that module, never here.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest
from collector_testkit import T0, build_finding, build_hello, build_inventory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from umbra import codec
from umbra.v1 import agent_pb2, finding_pb2

from collector.risk import score_spec
from collector.storage import InvalidBatch, Store, StoreError
from collector.storage.base import hello_row

Factory = Callable[..., finding_pb2.Finding]
DAY = 86_400.0


class StorageContract:
    """Mixed into each backend's test class; needs the `store` and `new_store` fixtures."""

    @pytest.fixture
    def make_finding(self) -> Callable[..., finding_pb2.Finding]:
        return build_finding

    @pytest.fixture
    def make_hello(self) -> Callable[..., agent_pb2.Hello]:
        return build_hello

    # ---- batches: idempotency and the merge rule

    def test_new_batch_is_stored_under_the_given_host(self, store: Store, make_finding: Factory) -> None:
        result = store.store_batch(
            "host-a", 1, [make_finding("a"), make_finding("b", host_id="someone-else")]
        )
        assert (result.new, result.updated, result.unchanged) == (2, 0, 0)
        rows = store.findings()
        assert {r["id"] for r in rows} == {"a", "b"}
        assert {r["host_id"] for r in rows} == {"host-a"}

    def test_replaying_a_batch_adds_and_changes_nothing(self, store: Store, make_finding: Factory) -> None:
        batch = [make_finding("a", count=3), make_finding("b")]
        store.store_batch("host-a", 7, batch)
        before = store.findings()
        again = store.store_batch("host-a", 7, [make_finding("a", count=3), make_finding("b")])
        assert (again.new, again.updated, again.unchanged) == (0, 0, 2)
        assert store.findings() == before

    def test_newer_version_updates_and_older_never_regresses(
        self, store: Store, make_finding: Factory
    ) -> None:
        store.store_batch(
            "h", 1, [make_finding("a", severity="low", last_seen=T0, first_seen=T0 - 10, count=2)]
        )
        newer = make_finding("a", severity="critical", last_seen=T0 + 100, first_seen=T0 - 5, count=5)
        assert store.store_batch("h", 2, [newer]).updated == 1
        # An older, late-arriving version may extend first_seen but must not bring back old fields.
        older = make_finding("a", severity="info", last_seen=T0 + 50, first_seen=T0 - 30, count=4)
        assert store.store_batch("h", 3, [older]).updated == 1
        (row,) = store.findings()
        assert row["severity"] == "critical"
        assert row["count"] == 5
        assert row["last_seen"] == codec.iso(codec.timestamp(T0 + 100))
        assert row["first_seen"] == codec.iso(codec.timestamp(T0 - 30))

    def test_duplicates_inside_one_batch_merge(self, store: Store, make_finding: Factory) -> None:
        result = store.store_batch(
            "h", 1, [make_finding("a", count=1, last_seen=T0), make_finding("a", count=9, last_seen=T0 + 1)]
        )
        assert (result.new, result.updated, result.unchanged) == (1, 0, 0)
        (row,) = store.findings()
        assert row["count"] == 9

    def test_same_id_on_two_hosts_stays_two_findings(self, store: Store, make_finding: Factory) -> None:
        store.store_batch("h1", 1, [make_finding("shared", severity="low")])
        store.store_batch("h2", 1, [make_finding("shared", severity="critical", last_seen=T0 + 10)])
        rows = {r["host_id"]: r for r in store.findings()}
        assert rows["h1"]["severity"] == "low"
        assert rows["h2"]["severity"] == "critical"

    def test_new_updated_unchanged_are_exact_in_a_group_with_new_hosts(
        self, store: Store, make_finding: Factory, make_hello: Callable[..., agent_pb2.Hello]
    ) -> None:
        """The counts must not be thrown off by host rows inserted in the same transaction."""
        for i in range(5):
            store.upsert_host(f"h{i}", make_hello(f"h{i}", f"ws-{i}"), "peer")
        results = store.store_batches(
            [
                ("h4", 1, [make_finding("a")]),
                ("brand-new-host", 1, [make_finding("b")]),  # its host row is inserted here
                ("h4", 1, [make_finding("a")]),  # a replay: nothing new
                ("h4", 2, [make_finding("a", last_seen=T0 + 5), make_finding("c")]),
            ]
        )
        counts = [(r.new, r.updated, r.unchanged) for r in results if not isinstance(r, InvalidBatch)]
        assert counts == [(1, 0, 0), (1, 0, 0), (0, 0, 1), (1, 1, 0)]

    def test_highest_sequence_is_recorded(self, store: Store, make_finding: Factory) -> None:
        store.store_batch("h", 5, [make_finding("a")])
        store.store_batch("h", 3, [make_finding("b")])  # a late resend must not move it back
        store.store_batch("h", 6, [])
        (host,) = store.hosts()
        assert host.last_sequence == 6

    def test_one_group_commit_records_each_hosts_highest_sequence(
        self, store: Store, make_finding: Factory
    ) -> None:
        # Several batches of one host in one transaction: the largest sequence wins whatever the
        # order, an empty batch counts, and every host of the commit is registered once, its id as
        # sent (not ASCII only).
        store.store_batches(
            [
                ("h", 5, [make_finding("a")]),
                ("hôte-ü", 2, [make_finding("b")]),
                ("h", 3, [make_finding("c")]),
                ("f", 9, []),
            ]
        )
        assert {h.host_id: h.last_sequence for h in store.hosts()} == {"f": 9, "hôte-ü": 2, "h": 5}
        store.store_batches([("h", 4, [make_finding("d")]), ("h", 7, [])])
        assert {h.host_id: h.last_sequence for h in store.hosts()}["h"] == 7

    @pytest.mark.parametrize(
        "mutate",
        [
            lambda f: setattr(f, "id", ""),
            lambda f: setattr(f, "kind", finding_pb2.KIND_UNSPECIFIED),
            lambda f: setattr(f, "confidence", 1.5),
            lambda f: setattr(f, "confidence", float("nan")),
            lambda f: (f.ClearField("first_seen"), f.ClearField("last_seen")),
            lambda f: setattr(f, "id", "x" * 600),
            # Valid protobuf Timestamps that do not fit the stored int64 nanoseconds (year 9999),
            # and nanos out of range: refused as the agent's mistake, not a storage failure.
            lambda f: setattr(f.last_seen, "seconds", 253_402_300_799),
            lambda f: setattr(f.first_seen, "seconds", -62_135_596_800),
            lambda f: setattr(f.last_seen, "nanos", -1),
        ],
        ids=["no-id", "no-kind", "confidence", "nan", "no-times", "long-id", "year-9999", "year-1", "nanos"],
    )
    def test_invalid_batch_is_refused_whole(
        self, store: Store, make_finding: Factory, mutate: Callable[[finding_pb2.Finding], object]
    ) -> None:
        bad = make_finding("bad")
        mutate(bad)
        with pytest.raises(InvalidBatch):
            store.store_batch("h", 1, [make_finding("good"), bad])
        assert store.findings() == []
        assert store.hosts() == []

    def test_missing_times_and_count_are_normalised(self, store: Store, make_finding: Factory) -> None:
        f = make_finding("a", count=0)
        f.ClearField("first_seen")
        store.store_batch("h", 1, [f])
        (row,) = store.findings()
        assert row["count"] == 1
        assert row["first_seen"] == row["last_seen"] != ""

    def test_hosts_report_facts_sensors_contact_and_counts(
        self, store: Store, make_finding: Factory, make_hello: Callable[..., agent_pb2.Hello]
    ) -> None:
        started = time.time()
        store.upsert_host("host-a", make_hello("claimed-id", "ws-a"), "ipv4:127.0.0.1:5000")
        store.store_batch("host-a", 2, [make_finding("a"), make_finding("b", approved=True, severity="info")])
        store.record_heartbeat(
            "host-a",
            agent_pb2.Heartbeat(
                spool_depth=4,
                rss_bytes=50_000_000,
                capture_drops=1_234,
                sensors=[agent_pb2.SensorStatus(name="process", state=agent_pb2.SENSOR_STATE_DEGRADED)],
            ),
        )
        (host,) = store.hosts()
        assert host.host_id == "host-a"
        assert (host.hostname, host.os, host.agent_version, host.peer) == (
            "ws-a",
            "Linux",
            "0.1.0",
            "ipv4:127.0.0.1:5000",
        )
        assert [(s.name, s.state) for s in host.sensors] == [("process", "degraded")]
        assert host.spool_depth == 4 and host.agent_rss_bytes == 50_000_000
        assert host.capture_drops == 1_234  # packets the agent's network capture lost
        assert host.first_seen >= started - 1 and host.last_seen >= host.first_seen
        assert host.last_heartbeat > 0
        assert (host.findings_total, host.findings_unapproved) == (2, 1)
        assert host.findings_by_severity == {"high": 1, "info": 1}
        assert host.last_sequence == 2

    def test_many_hellos_register_in_one_call_a_hosts_later_hello_winning(
        self, store: Store, make_hello: Callable[..., agent_pb2.Hello]
    ) -> None:
        # The writer stores the Hellos of a reconnecting fleet together (upsert_hosts).
        rows = [hello_row(f"h{i}", make_hello(f"h{i}", f"ws-{i}"), f"ipv4:10.0.0.{i}:1") for i in range(5)]
        rows.append(hello_row("h2", make_hello("h2", "renamed"), "ipv4:10.0.0.99:1"))
        store.upsert_hosts(rows)
        store.upsert_hosts([])
        hosts = {h.host_id: h for h in store.hosts()}
        assert sorted(hosts) == ["h0", "h1", "h2", "h3", "h4"]
        assert (hosts["h2"].hostname, hosts["h2"].peer) == ("renamed", "ipv4:10.0.0.99:1")
        assert hosts["h4"].hostname == "ws-4"
        assert sorted(s.name for s in hosts["h4"].sensors) == ["gpu", "process"]

    def test_heartbeat_without_sensors_keeps_hello_sensors(
        self, store: Store, make_hello: Callable[..., agent_pb2.Hello]
    ) -> None:
        store.upsert_host("h", make_hello("h"), "ipv4:127.0.0.1:1")
        store.record_heartbeat("h", agent_pb2.Heartbeat(cpu_percent=1.5))
        (host,) = store.hosts()
        assert host.sensors_active == 1 and len(host.sensors) == 2
        assert host.agent_cpu_percent == 1.5

    def test_findings_filters_order_and_limit(self, store: Store, make_finding: Factory) -> None:
        store.store_batch(
            "h1",
            1,
            [
                make_finding("old", last_seen=T0),
                make_finding("new", last_seen=T0 + 10, kind="AI_SERVICE_ACCESS"),
            ],
        )
        store.store_batch("h2", 1, [make_finding("mid", last_seen=T0 + 5)])
        assert [r["id"] for r in store.findings()] == ["new", "mid", "old"]
        assert [r["id"] for r in store.findings(host_id="h1")] == ["new", "old"]
        assert [r["id"] for r in store.findings(kind="AI_SERVICE_ACCESS")] == ["new"]
        assert [r["id"] for r in store.findings(kind="ai_service_access", host_id="h2")] == []
        assert len(store.findings(limit=2)) == 2
        assert len(store.findings(limit=None)) == 3
        with pytest.raises(ValueError):
            store.findings(kind="NOT_A_KIND")

    def test_finding_dict_has_the_codec_shape(self, store: Store, make_finding: Factory) -> None:
        f = make_finding("a", summary="Ollama serving on 127.0.0.1:11434")
        store.store_batch("h", 1, [f])
        (row,) = store.findings()
        assert row == codec.finding_to_dict(f)  # f was normalised in place (host_id) by the store

    def test_tally_matches_the_findings(self, store: Store, make_finding: Factory) -> None:
        # The risk facts every view reads (Store.risk_facts before the read side moved into SQL).
        store.store_batch(
            "h", 1, [make_finding("a", severity="low", confidence=0.25), make_finding("b", approved=True)]
        )
        store.store_batch("h", 2, [make_finding("a", severity="critical", last_seen=T0 + 1)])
        expected = Counter(
            (f["host_id"], f["kind"], f["severity"], f["policy"]["approved"]) for f in store.findings()
        )
        rows = store.tally("host", score_spec(T0))
        assert Counter({(r.key, r.kind, r.severity, r.approved): r.findings for r in rows}) == expected
        assert {(r.severity, r.approved) for r in rows} == {("critical", False), ("high", True)}

    def test_closed_store_refuses_work(self, store: Store, make_finding: Factory) -> None:
        store.close()
        with pytest.raises(StoreError):
            store.store_batch("h", 1, [make_finding("a")])
        store.close()  # idempotent

    def test_concurrent_batches_from_threads(self, store: Store, make_finding: Factory) -> None:
        def work(host: str) -> None:
            for seq in range(1, 11):
                store.store_batch(host, seq, [make_finding(f"{host}-{seq}-{i}") for i in range(20)])
                store.findings(host_id=host, limit=5)

        threads = [threading.Thread(target=work, args=(f"h{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(store.findings(limit=None)) == 4 * 10 * 20
        assert {h.last_sequence for h in store.hosts()} == {10}

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        versions=st.lists(
            st.tuples(
                st.integers(0, 1000),  # last_seen offset (distinct: see unique_by)
                st.integers(0, 100),  # first_seen before last_seen
                st.integers(1, 50),  # count
                st.sampled_from(codec.SEVERITY_NAMES),
            ),
            min_size=1,
            max_size=6,
            unique_by=lambda v: v[0],
        ),
        order=st.randoms(use_true_random=False),
    )
    def test_merge_is_order_independent(
        self,
        store: Store,
        new_store: Callable[[], Store],
        versions: list[tuple[int, int, int, str]],
        order: object,
    ) -> None:
        """However versions arrive (and repeat), the row ends as their merge."""
        store.close()
        with new_store() as fresh:
            arrivals = versions + versions[: len(versions) // 2]
            order.shuffle(arrivals)  # type: ignore[attr-defined]
            for seq, (last, back, count, severity) in enumerate(arrivals):
                fresh.store_batch(
                    "h",
                    seq,
                    [
                        build_finding(
                            "x",
                            last_seen=T0 + last,
                            first_seen=T0 + last - back,
                            count=count,
                            severity=severity,
                        )
                    ],
                )
            (row,) = fresh.findings()
            newest = max(versions, key=lambda v: v[0])
            assert row["severity"] == newest[3]
            assert row["count"] == max(v[2] for v in versions)
            assert row["last_seen"] == codec.iso(codec.timestamp(T0 + newest[0]))
            assert row["first_seen"] == codec.iso(codec.timestamp(min(T0 + v[0] - v[1] for v in versions)))

    # ---- retention

    def test_drop_before_forgets_findings_not_seen_since_the_cutoff(
        self, store: Store, make_finding: Factory
    ) -> None:
        store.store_batch(
            "h",
            1,
            [
                make_finding("days-ago", last_seen=T0 - 3 * DAY),
                make_finding("just-before", last_seen=T0 - 1),
                make_finding("at-cutoff", last_seen=T0),
                make_finding("after", last_seen=T0 + 10),
                make_finding("moved-on", last_seen=T0 - 3 * DAY, first_seen=T0 - 4 * DAY),
            ],
        )
        # Seen again since: its last_seen moved past the cutoff, so it stays (once).
        assert store.store_batch("h", 2, [make_finding("moved-on", last_seen=T0 + 5)]).updated == 1
        store.drop_before(T0)
        assert sorted(f["id"] for f in store.findings(limit=None)) == ["after", "at-cutoff", "moved-on"]
        assert [f["first_seen"] for f in store.findings(limit=None) if f["id"] == "moved-on"] == [
            codec.iso(codec.timestamp(T0 - 4 * DAY))
        ]
        (host,) = store.hosts()
        assert host.findings_total == 3 and host.last_sequence == 2, "hosts are kept"
        assert sum(r.findings for r in store.tally("host", score_spec(T0))) == 3, "aggregates forget too"

    def test_a_finding_seen_again_after_retention_is_stored_anew(
        self, store: Store, make_finding: Factory
    ) -> None:
        store.store_batch("h", 1, [make_finding("a", last_seen=T0 - 2 * DAY, count=7)])
        store.drop_before(T0)
        assert store.findings() == []
        again = store.store_batch("h", 2, [make_finding("a", last_seen=T0 + 1, count=2)])
        assert (again.new, again.updated, again.unchanged) == (1, 0, 0)
        (row,) = store.findings()
        assert row["count"] == 2 and row["last_seen"] == codec.iso(codec.timestamp(T0 + 1))
        store.drop_before(T0 - 10 * DAY)  # nothing that old: nothing changes
        assert [f["id"] for f in store.findings()] == ["a"]

    # ---- fleet channel: group commit, health findings, tokens, agents, policy

    def test_group_commit_stores_valid_batches_and_reports_invalid_ones(
        self, store: Store, make_finding: Factory
    ) -> None:
        results = store.store_batches(
            [
                ("h1", 1, [make_finding("a"), make_finding("b")]),
                ("h2", 7, [make_finding("c"), make_finding("")]),  # invalid: nothing of it is stored
                ("h2", 8, [make_finding("d")]),
                ("h1", 2, [make_finding("a")]),  # a replay inside the same group
            ]
        )
        assert isinstance(results[1], InvalidBatch)
        assert [(r.new, r.unchanged) for r in results if not isinstance(r, InvalidBatch)] == [
            (2, 0),
            (1, 0),
            (0, 1),
        ]
        assert sorted((f["host_id"], f["id"]) for f in store.findings()) == [
            ("h1", "a"),
            ("h1", "b"),
            ("h2", "d"),
        ]
        assert {h.host_id: h.last_sequence for h in store.hosts()} == {"h1": 2, "h2": 8}

    def test_health_findings_do_not_count_as_contact(self, store: Store, make_finding: Factory) -> None:
        from collector import health

        store.store_batch("h", 1, [make_finding("a")])
        (before,) = store.host_contacts()
        store.record_health("h", health.silent(before.last_seen, time.time() + 600), time.time() + 600)
        (after,) = store.host_contacts()
        assert after.last_seen == before.last_seen and after.silent_since > 0
        assert store.hosts()[0].silent_since == after.silent_since
        store.record_health("h", health.back(after.silent_since, time.time() + 700), 0.0)
        (cleared,) = store.host_contacts()
        assert cleared.silent_since == 0
        (row,) = store.findings(kind="AGENT_HEALTH")
        assert row["id"] == health.SILENT_ID and row["evidence"][0]["state"] == "active"
        assert row["severity"] == "info"

    def test_tokens_are_single_use_expire_and_count_down(self, store: Store) -> None:
        from collector.storage import TokenRefused

        now = time.time()
        store.create_token("one", now + 60, 1)
        store.create_token("two", now + 60, 2)
        store.create_token("old", now - 1, 5)
        store.consume_token("one", now)
        with pytest.raises(TokenRefused, match="used"):
            store.consume_token("one", now)
        store.consume_token("two", now)
        store.consume_token("two", now)
        with pytest.raises(TokenRefused, match="used"):
            store.consume_token("two", now)
        with pytest.raises(TokenRefused, match="expired"):
            store.consume_token("old", now)
        with pytest.raises(TokenRefused, match="unknown"):
            store.consume_token("nope", now)
        assert {t.token_hash: t.uses_left for t in store.tokens()} == {"one": 0, "two": 0, "old": 5}

    def test_tokens_are_consumed_once_under_concurrency(self, store: Store) -> None:
        from collector.storage import TokenRefused

        store.create_token("race", time.time() + 60, 3)
        won: list[bool] = []

        def attempt() -> None:
            try:
                store.consume_token("race", time.time())
                won.append(True)
            except TokenRefused:
                won.append(False)

        threads = [threading.Thread(target=attempt) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert won.count(True) == 3

    def test_agents_enroll_renew_and_revoke(self, store: Store) -> None:
        store.register_agent("h-1", 0xABC, time.time() + 100, "ws-1", renewal=False)
        store.register_agent("h-2", 0xDEF, time.time() + 100, "ws-2", renewal=False)
        first = store.agent("h-1")
        assert first is not None and first.serial == "abc" and not first.revoked
        store.register_agent("h-1", 0x123, time.time() + 200, "", renewal=True)
        renewed = store.agent("h-1")
        assert renewed is not None and renewed.serial == "123" and renewed.hostname == "ws-1"
        assert renewed.enrolled_at == first.enrolled_at and renewed.not_after > first.not_after
        assert store.revoke_agent("h-1", time.time())
        assert store.revoke_agent("h-1", time.time()), "revoking twice is fine"
        assert not store.revoke_agent("h-unknown", time.time())
        assert store.revoked_hosts() == {"h-1"}
        assert [(a.host_id, a.revoked) for a in store.agents()] == [("h-1", True), ("h-2", False)]
        assert store.agent("h-nobody") is None

    def test_forget_host_deletes_its_data_and_keeps_its_enrollment(
        self, store: Store, make_finding: Factory, make_hello: Callable[..., agent_pb2.Hello]
    ) -> None:
        """`agent remove`: the host, its findings and inventory go, and the aggregates with them; the
        other hosts and the (revoked) enrollment record stay."""
        store.register_agent("h-gone", 0xA, time.time() + 100, "ws-gone", renewal=False)
        for host in ("h-gone", "h-kept"):
            store.upsert_host(host, make_hello(host, f"ws-{host}"), "peer")
            store.store_batch(host, 1, [make_finding("a"), make_finding("b", kind="MODEL_ARTIFACT")])
            store.record_inventory(host, build_inventory(T0, "/m/a.gguf"))
        assert sum(r.findings for r in store.tally("host", score_spec(T0))) == 4
        assert store.forget_host("h-gone") == 2
        assert {f["host_id"] for f in store.findings(limit=None)} == {"h-kept"}
        assert [h.host_id for h in store.hosts()] == ["h-kept"]
        assert [i.host_id for i in store.inventories()] == ["h-kept"]
        assert {r.key for r in store.tally("host", score_spec(T0))} == {"h-kept"}, "aggregates forget too"
        assert store.agent("h-gone") is not None, "the enrollment record stays"
        assert store.forget_host("h-nobody") == 0

    def test_policy_versions_count_up(self, store: Store) -> None:
        assert store.current_policy() is None
        assert store.set_policy({"approved_runtimes": ["ollama"]}) == 1
        assert store.set_policy({"approved_runtimes": []}) == 2
        latest = store.current_policy()
        assert latest is not None and latest.version == 2 and latest.body == {"approved_runtimes": []}

    # ---- inventories

    def test_newest_inventory_per_host_is_kept(self, store: Store) -> None:
        assert store.record_inventory("h1", build_inventory(T0, "/m/a.gguf", "/m/b.gguf"))
        assert store.record_inventory("h2", build_inventory(T0, "/x/c.gguf"))
        assert not store.record_inventory("h1", build_inventory(T0 - 60, "/old.gguf")), "a late resend"
        assert [(i.host_id, [m["path"] for m in i.models]) for i in store.inventories()] == [
            ("h1", ["/m/a.gguf", "/m/b.gguf"]),
            ("h2", ["/x/c.gguf"]),
        ]
        assert store.record_inventory("h1", build_inventory(T0 + 60, "/m/b.gguf"))
        (h1,) = store.inventories("h1")
        assert h1.taken_at == T0 + 60 and h1.received_at > 0
        (model,) = h1.models
        assert model["path"] == "/m/b.gguf" and model["parameter_count"] == 7_241_732_096
        assert model["size_bytes"] == 4_100_000_000, "64-bit counts are numbers, not JSON strings"
        assert store.inventories("nobody") == []

    @pytest.mark.parametrize(
        "mutate",
        [
            lambda inv: inv.ClearField("taken_at"),
            lambda inv: setattr(inv.taken_at, "seconds", 253_402_300_799),
        ],
        ids=["no-time", "year-9999"],
    )
    def test_bad_inventory_time_is_refused(
        self, store: Store, mutate: Callable[[agent_pb2.Inventory], object]
    ) -> None:
        inventory = build_inventory(T0, "/m/a.gguf")
        mutate(inventory)
        with pytest.raises(InvalidBatch, match="taken_at"):
            store.record_inventory("h1", inventory)
        assert store.inventories() == []

"""Scale-out on PostgreSQL, with real processes: two `umbra-collector serve --db postgresql://...`
on one database behind a TCP load balancer, enrolled agents (the real spool and stream client over
mutual TLS, tests/fleet/loadgen.py) spread across them.

- one collector SIGKILLed mid-stream: its agents reconnect through the balancer to the other, and
  every finding is stored exactly once;
- the database away mid-stream: the collector refuses batches with a gRPC status (UNAVAILABLE),
  the agents keep them in their spools, and all arrive once the database is back;
- `serve --retention` drops what was last seen before its cutoff, on PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from balancer import Balancer
from collector_proc import CollectorProc, wait_for
from fleetkit import LoadAgent, build_finding, enroll
from pg_server import PostgresServer

from collector.storage import open_store


def stored(collector: CollectorProc) -> int:
    return int(collector.query("SELECT count(*) FROM findings WHERE kind <> 10")[0][0])


def assert_exactly_once(collector: CollectorProc, agents: list[LoadAgent]) -> None:
    for agent in agents:
        ids = [
            r[0]
            for r in collector.query(
                "SELECT id FROM findings WHERE host_id = ? AND kind <> 10 ORDER BY id", (agent.host_id,)
            )
        ]
        assert ids == [f"f-{i:07d}" for i in range(agent.count)], agent.host_id
    total = sum(a.count for a in agents)
    rows = collector.query(
        "SELECT count(*), count(DISTINCT host_id || '/' || id), max(count) FROM findings WHERE kind <> 10"
    )
    assert rows == [(total, total, 1)], "each finding stored exactly once, never counted twice"
    assert collector.query("SELECT count(*) FROM finding_keys") == collector.query(
        "SELECT count(*) FROM findings"
    )


def load_agents(
    collector: CollectorProc, tmp_path: Path, address: str, n: int, count: int, *extra: str
) -> list[LoadAgent]:
    token = collector.token(uses=n)
    agents = []
    for i in range(n):
        state = tmp_path / f"agent-{i}"
        enroll(collector, state, token)
        agents.append(LoadAgent(state, count, "--address", address, "--exit-when-drained", *extra))
    return agents


@pytest.mark.timeout(600)
def test_a_collector_killed_mid_stream_its_agents_move_to_the_other(tmp_path: Path, pg_url: str) -> None:
    # Both collectors share one CA and server key (one --pki-dir), as replicas behind a balancer do.
    first = CollectorProc(tmp_path / "c", "--monitor-interval", "500ms", db_url=pg_url)
    second = CollectorProc(tmp_path / "c", "--monitor-interval", "500ms", db_url=pg_url)
    agents: list[LoadAgent] = []
    balancer: Balancer | None = None
    try:  # whatever fails, from the first start on, stops what started
        first.start()
        second.start()
        balancer = Balancer([first.grpc, second.grpc])
        agents = load_agents(
            first,
            tmp_path,
            balancer.address,
            4,
            20_000,
            "--chunk",
            "250",
            "--interval",
            "0.25",
            "--batch-size",
            "250",
        )
        for agent in agents:
            agent.start()
        wait_for("agents on both collectors", lambda: len(balancer.connections) == 2, timeout=60)
        wait_for("findings streaming", lambda: stored(first) > 10_000, timeout=120, every=0.1)
        first.kill()
        at_kill = stored(second)
        for agent in agents:
            assert agent.wait(timeout=300) == 0
            assert agent.said("drained")
        assert at_kill < 80_000, f"the kill must land while findings stream ({at_kill} stored)"
        assert balancer.connections[second.grpc] >= 3, (
            "the killed collector's agents reconnected to the other"
        )
        assert_exactly_once(second, agents)
        assert all(a.spool_depth() == 0 for a in agents)
    finally:
        for agent in agents:
            agent.stop()
        if balancer is not None:
            balancer.close()
        second.stop()
        first.stop()


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A durable server of this test's own, which it stops and starts again on the same port."""
    server = PostgresServer(durable=True).start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.mark.timeout(600)
def test_the_database_away_mid_stream_batches_are_refused_kept_and_delivered_later(
    tmp_path: Path, own_server: PostgresServer
) -> None:
    url = own_server.create_database()
    collector = CollectorProc(tmp_path / "c", "--monitor-interval", "500ms", db_url=url)
    agents: list[LoadAgent] = []
    try:
        collector.start()
        agents = load_agents(
            collector,
            tmp_path,
            collector.grpc,
            2,
            6_000,
            "--chunk",
            "100",
            "--interval",
            "0.1",
            "--backoff-initial",
            "0.5",
            "--backoff-max",
            "2.0",
        )
        for agent in agents:
            agent.start()
        wait_for("findings streaming", lambda: stored(collector) > 500, timeout=120, every=0.1)
        own_server.stop("fast")
        depths = [a.spool_depth() for a in agents]
        wait_for(
            "batches refused with a status",
            lambda: (
                "collector storage unavailable" in collector.log_text()
                or "not stored" in collector.log_text()
            ),
            timeout=60,
        )
        time.sleep(3)
        # The agents keep what the collector could not store, and keep producing into their spools.
        assert all(a.spool_depth() > d for a, d in zip(agents, depths, strict=True))
        assert collector.proc is not None and collector.proc.poll() is None, "the collector lives on"
        own_server.start()
        for agent in agents:
            assert agent.wait(timeout=300) == 0
        assert_exactly_once(collector, agents)
        assert all(a.spool_depth() == 0 for a in agents)
    finally:
        for agent in agents:
            agent.stop()
        collector.stop()


@pytest.mark.timeout(300)
def test_serve_retention_drops_what_was_last_seen_before_the_cutoff(tmp_path: Path, pg_url: str) -> None:
    now = time.time()
    with open_store(pg_url) as store:
        store.store_batch(
            "h",
            1,
            [
                build_finding("old", last_seen=now - 40 * 86_400),
                build_finding("recent", last_seen=now - 86_400),
            ],
        )
    collector = CollectorProc(tmp_path / "c", "--retention", "30d", db_url=pg_url)
    try:
        collector.start()
        wait_for(
            "the old finding dropped", lambda: collector.query("SELECT id FROM findings") == [("recent",)]
        )
        assert collector.query("SELECT id FROM finding_keys") == [("recent",)]
    finally:
        collector.stop()

"""Zero-loss delivery under faults, with real processes: a TLS collector and enrolled agents
(tests/fleet/loadgen.py: the real spool and stream client over mutual TLS, synthetic findings).

- the collector SIGKILLed ten times while several agents stream 100,000 findings: each is stored once;
- the collector away for a while (UMBRA_FLEET_OUTAGE_SECONDS, default 20) while agents keep
  producing: all arrive afterwards, and the waiting agents do not spin;
- an agent SIGKILLed mid-batch and restarted: nothing lost, nothing doubled;
- a spool filled past its bound: the lowest-severity oldest findings are dropped, and the drops are
  reported exactly, in the Heartbeat (the host's dropped_total) and as an AGENT_HEALTH finding.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from collector_proc import CollectorProc, wait_for
from fleetkit import LoadAgent, enroll

OUTAGE_SECONDS = float(os.environ.get("UMBRA_FLEET_OUTAGE_SECONDS", "20"))


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProc]:
    c = CollectorProc(tmp_path, "--monitor-interval", "500ms")
    c.start()
    yield c
    c.stop()


def stored_ids(collector: CollectorProc, host_id: str) -> list[str]:
    return [
        r[0]
        for r in collector.query(
            "SELECT id FROM findings WHERE host_id = ? AND kind != 10 ORDER BY id", (host_id,)
        )
    ]


def expected_ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i:07d}" for i in range(count)]


def assert_exactly_once(collector: CollectorProc, agents: list[LoadAgent], prefix: str = "f") -> None:
    for agent in agents:
        assert stored_ids(collector, agent.host_id) == expected_ids(prefix, agent.count), agent.host_id
    total = sum(a.count for a in agents)
    rows = collector.query("SELECT COUNT(*), COUNT(DISTINCT host_id || '/' || id), MAX(count) FROM findings")
    assert rows == [(total, total, 1)], "each finding stored exactly once, never counted twice"


@pytest.mark.timeout(600)
def test_collector_sigkilled_ten_times_during_100k_findings(tmp_path: Path, collector: CollectorProc) -> None:
    """Slow (about a minute here): 4 agents x 25,000 findings, 10 SIGKILLs of the collector."""
    agents = []
    token = collector.token(uses=4)
    # Production lasts well beyond the ten kill-and-restart rounds, however long a restart takes on
    # this machine (at least 25 s): every kill lands while findings stream.
    rounds = 10 * (collector.start_seconds + 1.5)
    interval = max(25.0, 1.5 * rounds) / 50  # 50 chunks of 500 per agent
    for n in range(4):
        state = tmp_path / f"agent-{n}"
        enroll(collector, state, token)
        agents.append(
            LoadAgent(state, 25_000, "--chunk", "500", "--interval", f"{interval:.2f}", "--exit-when-drained")
        )
    try:
        for agent in agents:
            agent.start()
        at_kills: list[int] = []  # findings stored when each kill happened
        for _kill in range(10):
            # Let some batches through, then kill the collector mid-stream and bring it back.
            before = collector.query("SELECT COUNT(*) FROM findings")[0][0]
            wait_for(
                "progress before the next kill",
                lambda b=before: collector.query("SELECT COUNT(*) FROM findings")[0][0] > b,
                timeout=120,
                every=0.05,
            )
            time.sleep(0.5)
            collector.kill()
            at_kills.append(collector.query("SELECT COUNT(*) FROM findings")[0][0])
            time.sleep(0.3)
            collector.start()
        for agent in agents:
            assert agent.wait(timeout=300) == 0
            assert agent.said("drained")
        assert collector.starts == 11
        assert at_kills[-1] < 100_000, f"the kills must land while findings stream: {at_kills}"
        assert_exactly_once(collector, agents)
        assert all(a.spool_depth() == 0 for a in agents)
    finally:
        for agent in agents:
            agent.stop()


@pytest.mark.timeout(600)
def test_collector_away_for_a_while_then_everything_arrives(tmp_path: Path, collector: CollectorProc) -> None:
    agents = []
    token = collector.token(uses=2)
    for n in range(2):
        state = tmp_path / f"agent-{n}"
        enroll(collector, state, token)
        # Production spans the outage: findings are made before, during and after it.
        per_second = 200
        count = int(per_second * (OUTAGE_SECONDS + 10))
        agents.append(
            LoadAgent(
                state,
                count,
                "--chunk",
                "100",
                "--interval",
                str(100 / per_second),
                "--backoff-initial",
                "1.0",
                "--backoff-max",
                "3.0",
                "--exit-when-drained",
            )
        )
    try:
        for agent in agents:
            agent.start()
        wait_for("first findings stored", lambda: collector.query("SELECT COUNT(*) FROM findings")[0][0] > 0)
        collector.kill()
        outage_started = time.monotonic()
        processes = [psutil.Process(a.proc.pid) for a in agents if a.proc is not None]
        cpu_before = [p.cpu_times() for p in processes]
        depth_at_start = [a.spool_depth() for a in agents]
        time.sleep(OUTAGE_SECONDS)
        cpu_after = [p.cpu_times() for p in processes]
        # The agents kept producing into their spools while the collector was away...
        assert all(a.spool_depth() > d for a, d in zip(agents, depth_at_start, strict=True))
        # ...and did not spin: reconnects with backoff cost little CPU (spooling costs some).
        for before, after in zip(cpu_before, cpu_after, strict=True):
            used = (after.user + after.system) - (before.user + before.system)
            assert used < 0.25 * OUTAGE_SECONDS, (
                f"agent used {used:.1f} s CPU in a {OUTAGE_SECONDS:.0f} s outage"
            )
        collector.start()
        for agent in agents:
            assert agent.wait(timeout=120 + OUTAGE_SECONDS) == 0
        assert time.monotonic() - outage_started >= OUTAGE_SECONDS
        assert_exactly_once(collector, agents)
    finally:
        for agent in agents:
            agent.stop()


@pytest.mark.timeout(300)
def test_agent_sigkilled_mid_batch_and_restarted(tmp_path: Path, collector: CollectorProc) -> None:
    state = tmp_path / "agent"
    enroll(collector, state)
    # Production (2,000 findings every 0.1 s, for 2 s) outruns delivery, so the spool holds a backlog.
    agent = LoadAgent(state, 40_000, "--chunk", "2000", "--interval", "0.1", "--batch-size", "1000")
    try:
        agent.start()
        host = agent.host_id
        # Kill it while batches are in flight: some stored, more sent and spooled but not
        # acknowledged. The collector is paused (SIGSTOP) for that moment, so no Ack can drain
        # the backlog between the check and the kill, however fast delivery is; what it had
        # received before the pause it stores on resuming, and those Acks never arrive.
        wait_for(
            "some batches stored", lambda: len(stored_ids(collector, host)) >= 2000, timeout=120, every=0.05
        )
        collector.pause()
        try:
            wait_for("a backlog spooled", lambda: agent.spool_depth() >= 1000, timeout=60, every=0.05)
            agent.kill()
        finally:
            collector.resume()
        assert agent.spool_depth() > 0, "the kill must leave unacknowledged findings in the spool"
        stored_at_kill = len(stored_ids(collector, host))
        assert stored_at_kill < 40_000
        agent.start("--exit-when-drained")  # same spool, same identity
        assert agent.host_id == host
        assert agent.wait(timeout=180) == 0
        assert_exactly_once(collector, [agent])
        seq = collector.query("SELECT last_sequence FROM hosts WHERE host_id = ?", (host,))[0][0]
        assert seq > 0
    finally:
        agent.stop()


@pytest.mark.timeout(300)
def test_spool_past_its_bound_drops_low_severity_first_and_reports_exactly(
    tmp_path: Path, collector: CollectorProc
) -> None:
    state = tmp_path / "agent"
    enroll(collector, state)
    collector.kill()  # the collector is away while the spool overflows
    # 3,000 findings cycling info, low, medium, high into a 1,000-finding spool.
    spool_only = LoadAgent(
        state,
        3000,
        "--chunk",
        "250",
        "--interval",
        "0",
        "--severities",
        "info,low,medium,high",
        "--max-findings",
        "1000",
        "--no-stream",
    )
    spool_only.start()
    assert spool_only.wait(timeout=120) == 0
    assert spool_only.spool_depth() == 1000
    collector.start()
    agent = LoadAgent(
        state, 3000, "--severities", "info,low,medium,high", "--max-findings", "1000", "--exit-when-drained"
    )
    try:
        agent.start()
        assert agent.wait(timeout=120) == 0
    finally:
        agent.stop()
    host = agent.host_id
    # Bound 1,000, 3,000 made: exactly 2,000 dropped, the lowest severities first (all 750 info,
    # all 750 low, then the 500 oldest medium), so every high and the 250 newest medium arrive.
    ids = stored_ids(collector, host)
    severities = {"info": 0, "low": 1, "medium": 2, "high": 3}
    high = [f"f-{i:07d}" for i in range(3000) if i % 4 == severities["high"]]
    medium = [f"f-{i:07d}" for i in range(3000) if i % 4 == severities["medium"]]
    assert ids == sorted(high + medium[500:])
    (dropped,) = collector.query("SELECT dropped_total FROM hosts WHERE host_id = ?", (host,))[0]
    assert dropped == 2000, "the Heartbeat reports every drop"
    health = collector.query(
        "SELECT count, severity FROM findings WHERE host_id = ? AND id = 'agent-health:spool-drops'", (host,)
    )
    assert health == [(2000, 3)], "and an AGENT_HEALTH finding says how many"


def test_spool_drop_bound_unit(tmp_path: Path) -> None:
    """The spool alone: the bound holds under repeated appends and the counter is exact."""
    from umbra.v1 import finding_pb2 as fpb

    from agent.delivery.spool import Spool

    spool = Spool(tmp_path / "spool.db", max_findings=10)
    total_dropped = 0
    for round_ in range(5):
        batch = [
            fpb.Finding(id=f"r{round_}-{i}", kind=fpb.KIND_LOCAL_MODEL_RUNTIME, severity=fpb.SEVERITY_LOW)
            for i in range(7)
        ]
        total_dropped += spool.append(batch)
        assert spool.depth() <= 10
    assert total_dropped == 25 == spool.dropped()
    spool.close()


def test_a_collector_that_never_acks_is_dropped_and_the_batch_resent(tmp_path: Path) -> None:
    """The agent's session deadline: a hung collector (connection open, no Ack) does not hold the
    spool forever; the agent reconnects and sends the same batch again."""
    import asyncio

    import grpc
    from umbra.v1 import agent_pb2, finding_pb2

    from agent.delivery.spool import Spool
    from agent.delivery.stream import Backoff, StreamClient

    seen: list[int] = []

    async def hung(requests: object, context: object) -> object:
        async for raw in requests:  # type: ignore[attr-defined]
            message = agent_pb2.AgentMessage.FromString(raw)
            if message.HasField("batch"):
                seen.append(message.batch.sequence)
        if False:
            yield b""

    async def scenario() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "umbra.v1.StreamService",
                    {"Stream": grpc.stream_stream_rpc_method_handler(hung, response_serializer=bytes)},
                ),
            )
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        spool = Spool(tmp_path / "spool.db")
        spool.append(
            [
                finding_pb2.Finding(
                    id="x", kind=finding_pb2.KIND_LOCAL_MODEL_RUNTIME, severity=finding_pb2.SEVERITY_HIGH
                )
            ]
        )
        client = StreamClient(
            f"127.0.0.1:{port}",
            spool,
            lambda: agent_pb2.Hello(host=agent_pb2.HostFacts(host_id="h")),
            agent_pb2.Heartbeat,
            backoff=Backoff(initial=0.1, maximum=0.2),
            heartbeat_interval=30,
        )
        client.session_deadline = 0.5
        stop = asyncio.Event()
        task = asyncio.create_task(client.run(stop))
        for _ in range(200):
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await task
        await server.stop(0)
        assert len(seen) >= 2 and len(set(seen)) == 1, seen  # the same batch, resent
        assert "no Ack" in client.stats.last_error
        assert spool.depth() == 1, "never acknowledged, so still spooled"
        spool.close()

    asyncio.run(scenario())

"""The gRPC service over real loopback sockets, with a real SQLite file behind it."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from email.message import Message
from pathlib import Path
from typing import Any

import grpc
import pytest
from collector_testkit import T0, build_finding, build_hello, build_inventory
from grpc import aio
from umbra.v1 import agent_pb2, agent_pb2_grpc, finding_pb2

from collector.console.credentials import new_api_key, secret_hash
from collector.identity import IdentityError, certificate_common_name, is_loopback_peer, peer_host_id
from collector.ingest import MAX_MESSAGE_BYTES, CollectorServer
from collector.storage import SQLiteStore, StoreError, open_store

pytestmark = pytest.mark.timeout(60)


def run(coro_fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
    asyncio.run(coro_fn(*args))


@asynccontextmanager
async def collector(db: Path, http: bool = False) -> AsyncIterator[CollectorServer]:
    store = open_store(f"sqlite:///{db}")
    server = CollectorServer(store, "127.0.0.1:0", "127.0.0.1:0" if http else None, grace=0.5)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        store.close()


@asynccontextmanager
async def stream(server: CollectorServer) -> AsyncIterator[Any]:
    async with aio.insecure_channel(server.grpc_address) as channel:
        stub = agent_pb2_grpc.StreamServiceStub(channel)
        yield stub.Stream()


def hello_msg(host_id: str = "host-a") -> agent_pb2.AgentMessage:
    return agent_pb2.AgentMessage(hello=build_hello(host_id))


def batch_msg(sequence: int, findings: list[finding_pb2.Finding]) -> agent_pb2.AgentMessage:
    return agent_pb2.AgentMessage(batch=agent_pb2.FindingBatch(sequence=sequence, findings=findings))


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_batches_are_acked_after_storing_and_replays_add_nothing(tmp_path: Path) -> None:
    db = tmp_path / "c.db"

    async def scenario() -> None:
        async with collector(db) as server, stream(server) as call:
            await call.write(hello_msg("host-a"))
            await call.write(batch_msg(1, [build_finding("a"), build_finding("b")]))
            ack = await call.read()
            assert ack.WhichOneof("body") == "ack" and ack.ack.sequence == 1
            # The row is in the file by the time the Ack arrives (another connection sees it).
            assert rows(db, "SELECT count(*) FROM findings") == [(2,)]
            await call.write(batch_msg(2, [build_finding("c", last_seen=T0 + 5, count=3)]))
            await call.write(batch_msg(1, [build_finding("a"), build_finding("b")]))  # a resend
            await call.write(agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat(spool_depth=7)))
            await call.write(agent_pb2.AgentMessage(inventory=build_inventory(T0, "/m/a.gguf")))
            assert [(await call.read()).ack.sequence for _ in range(2)] == [2, 1]
            await call.done_writing()
            assert await call.read() == aio.EOF
            assert await call.code() == grpc.StatusCode.OK
            assert server.stats.batches_stored == 3 and server.stats.findings_new == 3
            assert server.stats.findings_unchanged == 2

    run(scenario)
    assert rows(db, "SELECT id, host_id, count FROM findings ORDER BY id") == [
        ("a", "host-a", 1), ("b", "host-a", 1), ("c", "host-a", 3)
    ]  # fmt: skip
    assert rows(db, "SELECT host_id, hostname, last_sequence, spool_depth FROM hosts") == [
        ("host-a", "ws-a", 2, 7)
    ]


def test_a_reconnecting_agent_resends_without_duplicates(tmp_path: Path) -> None:
    db = tmp_path / "c.db"

    async def scenario() -> None:
        async with collector(db) as server:
            for _ in range(2):  # the agent crashed before deleting its spool and sends it all again
                async with stream(server) as call:
                    await call.write(hello_msg())
                    for seq in (1, 2):
                        await call.write(batch_msg(seq, [build_finding(f"f{seq}-{i}") for i in range(50)]))
                    assert [(await call.read()).ack.sequence for _ in range(2)] == [1, 2]
                    await call.done_writing()
                    assert await call.code() == grpc.StatusCode.OK

    run(scenario)
    assert rows(db, "SELECT count(*), count(DISTINCT id) FROM findings") == [(100, 100)]


def test_host_id_comes_from_the_stream_not_the_body(tmp_path: Path) -> None:
    db = tmp_path / "c.db"

    async def scenario() -> None:
        async with collector(db) as server, stream(server) as call:
            await call.write(hello_msg("host-a"))
            await call.write(batch_msg(1, [build_finding("x", host_id="host-victim")]))
            assert (await call.read()).ack.sequence == 1
            await call.done_writing()

    run(scenario)
    assert rows(db, "SELECT host_id FROM findings") == [("host-a",)]
    assert rows(db, "SELECT host_id FROM hosts") == [("host-a",)]
    data = rows(db, "SELECT data FROM findings")[0][0]
    assert finding_pb2.Finding.FromString(data).host_id == "host-a"


@pytest.mark.parametrize(
    "first",
    [
        batch_msg(1, [build_finding("a")]),
        agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat()),
    ],
    ids=["batch", "heartbeat"],
)
def test_stream_must_start_with_hello(tmp_path: Path, first: agent_pb2.AgentMessage) -> None:
    async def scenario() -> None:
        async with collector(tmp_path / "c.db") as server, stream(server) as call:
            await call.write(first)
            with pytest.raises(aio.AioRpcError) as err:
                await call.read()
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "Hello" in (err.value.details() or "")
            assert server.stats.streams_refused == 1

    run(scenario)
    assert rows(tmp_path / "c.db", "SELECT count(*) FROM findings") == [(0,)]


def test_hello_without_host_id_is_unauthenticated(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with collector(tmp_path / "c.db") as server, stream(server) as call:
            await call.write(hello_msg(""))
            with pytest.raises(aio.AioRpcError) as err:
                await call.read()
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED

    run(scenario)


def test_invalid_batch_gets_invalid_argument_and_the_server_lives_on(tmp_path: Path) -> None:
    db = tmp_path / "c.db"

    async def scenario() -> None:
        async with collector(db) as server:
            async with stream(server) as call:
                await call.write(hello_msg())
                await call.write(batch_msg(1, [build_finding("ok")]))
                assert (await call.read()).ack.sequence == 1
                await call.write(batch_msg(2, [build_finding("fine"), build_finding("")]))
                with pytest.raises(aio.AioRpcError) as err:
                    await call.read()
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "no id" in (err.value.details() or "")
            assert server.stats.batches_invalid == 1
            async with stream(server) as call:  # the next stream is served normally
                await call.write(hello_msg())
                await call.write(batch_msg(3, [build_finding("later")]))
                assert (await call.read()).ack.sequence == 3
                await call.done_writing()

    run(scenario)
    assert rows(db, "SELECT id FROM findings ORDER BY id") == [("later",), ("ok",)]
    assert rows(db, "SELECT last_sequence FROM hosts") == [(3,)]


def test_oversized_message_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with collector(tmp_path / "c.db") as server, stream(server) as call:
            await call.write(hello_msg())
            big = build_finding("big", summary="x" * (MAX_MESSAGE_BYTES + 1))
            await call.write(batch_msg(1, [big]))
            with pytest.raises(aio.AioRpcError) as err:
                await call.read()
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    run(scenario)


def test_enroll_is_refused_in_insecure_mode(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with collector(tmp_path / "c.db") as server, aio.insecure_channel(server.grpc_address) as ch:
            with pytest.raises(aio.AioRpcError) as err:
                await agent_pb2_grpc.EnrollServiceStub(ch).Enroll(agent_pb2.EnrollRequest(token="t"))
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "without TLS" in (err.value.details() or "")

    run(scenario)


def test_stop_waits_for_a_batch_being_written(tmp_path: Path) -> None:
    """Shutdown mid-write: the batch commits and the store is closed only afterwards."""
    db = tmp_path / "c.db"

    class SlowStore(SQLiteStore):
        def store_prepared(self, *args: Any) -> Any:
            import time

            time.sleep(0.5)
            return super().store_prepared(*args)

    async def scenario() -> None:
        store = SlowStore(str(db))
        server = CollectorServer(store, "127.0.0.1:0", grace=0.0)
        await server.start()
        async with stream(server) as call:
            await call.write(hello_msg())
            await call.write(batch_msg(1, [build_finding("slow")]))
            await asyncio.sleep(0.2)  # the write is now running in a thread
            await server.stop()
            store.close()

    run(scenario)
    assert rows(db, "SELECT id FROM findings") == [("slow",)]


def test_storage_failure_is_unavailable_and_never_acked(tmp_path: Path) -> None:
    class BrokenStore(SQLiteStore):
        def store_prepared(self, *args: Any) -> Any:
            raise StoreError("disk full")

    async def scenario() -> None:
        store = BrokenStore(str(tmp_path / "c.db"))
        server = CollectorServer(store, "127.0.0.1:0", grace=0.5)
        await server.start()
        try:
            async with stream(server) as call:
                await call.write(hello_msg())
                await call.write(batch_msg(1, [build_finding("a")]))
                with pytest.raises(aio.AioRpcError) as err:
                    await call.read()
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert server.stats.store_errors == 1 and server.stats.batches_stored == 0
        finally:
            await server.stop()
            store.close()

    run(scenario)


def test_inventory_is_kept_per_host_and_a_bad_one_refused(tmp_path: Path) -> None:
    db = tmp_path / "c.db"

    async def scenario() -> None:
        async with collector(db) as server:
            async with stream(server) as call:
                await call.write(hello_msg("host-a"))
                await call.write(
                    agent_pb2.AgentMessage(inventory=build_inventory(T0, "/m/a.gguf", "/m/b.gguf"))
                )
                await call.write(batch_msg(1, [build_finding("a")]))  # after the inventory, in order
                assert (await call.read()).ack.sequence == 1
                await call.done_writing()
                assert await call.code() == grpc.StatusCode.OK
            async with stream(server) as call:
                await call.write(hello_msg("host-b"))
                bad = build_inventory(T0, "/m/c.gguf")
                bad.ClearField("taken_at")
                await call.write(agent_pb2.AgentMessage(inventory=bad))
                assert await call.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "inventory refused" in (await call.details())
            assert server.stats.inventories == 1

    run(scenario)
    with open_store(f"sqlite:///{db}", create=False) as store:
        assert [(i.host_id, len(i.models)) for i in store.inventories()] == [("host-a", 2)]


def test_heartbeat_with_a_time_the_store_cannot_keep_is_refused(tmp_path: Path) -> None:
    """A valid Timestamp past int64 nanoseconds (year 9999) is the agent's error, not a broken stream."""
    db = tmp_path / "c.db"

    async def scenario() -> None:
        async with collector(db) as server, stream(server) as call:
            await call.write(hello_msg("host-a"))
            heartbeat = agent_pb2.Heartbeat(spool_depth=3)
            heartbeat.sent_at.seconds = 253_402_300_799
            await call.write(agent_pb2.AgentMessage(heartbeat=heartbeat))
            assert await call.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "heartbeat refused: heartbeat sent_at" in (await call.details())
            assert server.stats.heartbeats == 0 and server.stats.streams_broken == 0

    run(scenario)
    assert rows(db, "SELECT spool_depth FROM hosts") == [(0,)]


def viewer_key(server: CollectorServer) -> dict[str, str]:
    """A bearer key for the JSON API (every /api/* route needs one), as `apikey create` makes it."""
    key_id, key = new_api_key()
    server.store.add_api_key(key_id, secret_hash(key), "viewer")
    return {"Authorization": f"Bearer {key}"}


def test_http_api(tmp_path: Path) -> None:
    auth: dict[str, str] = {}

    def get(base: str, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(urllib.request.Request(base + path, headers=auth), timeout=5) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    async def scenario() -> None:
        async with collector(tmp_path / "c.db", http=True) as server, stream(server) as call:
            await call.write(hello_msg("host-a"))
            await call.write(
                batch_msg(
                    1, [build_finding("a", severity="critical"), build_finding("b", kind="AI_SERVICE_ACCESS")]
                )
            )
            assert (await call.read()).ack.sequence == 1
            base = f"http://{server.http_address}"
            auth.update(viewer_key(server))
            status, health = await asyncio.to_thread(get, base, "/healthz")
            assert status == 200 and health["status"] == "ok" and health["batches_stored"] == 1
            status, fleet = await asyncio.to_thread(get, base, "/api/fleet")
            assert status == 200
            assert fleet["fleet"]["hosts"] == 1 and fleet["fleet"]["max_score"] == 55.0
            assert fleet["hosts"][0]["host_id"] == "host-a" and fleet["hosts"][0]["risk"]["level"] == "high"
            status, hosts = await asyncio.to_thread(get, base, "/api/hosts")
            assert status == 200 and [h["sensors_active"] for h in hosts] == [1]
            status, found = await asyncio.to_thread(
                get, base, "/api/findings?host=host-a&kind=AI_SERVICE_ACCESS"
            )
            assert status == 200 and [f["id"] for f in found] == ["b"]
            status, by_name = await asyncio.to_thread(
                get, base, "/api/findings?host=ws-a&kind=AI_SERVICE_ACCESS"
            )
            assert status == 200 and by_name == found, "a host name works where its id does"
            status, found = await asyncio.to_thread(get, base, "/api/findings?limit=1")
            assert status == 200 and len(found) == 1
            assert (await asyncio.to_thread(get, base, "/api/findings?kind=NOPE"))[0] == 400
            assert (await asyncio.to_thread(get, base, "/api/findings?limit=-1"))[0] == 400
            await call.write(agent_pb2.AgentMessage(inventory=build_inventory(T0, "/m/a.gguf")))
            await call.write(batch_msg(2, [build_finding("c")]))
            assert (await call.read()).ack.sequence == 2  # the inventory before it is stored too
            status, inventory = await asyncio.to_thread(get, base, "/api/inventory?host=host-a")
            assert status == 200
            assert [m["path"] for i in inventory["inventories"] for m in i["models"]] == ["/m/a.gguf"]
            status, inventory = await asyncio.to_thread(get, base, "/api/inventory?host=host-z")
            assert status == 400 and "no host 'host-z'" in inventory["error"], "an unknown host is an error"
            status, _ = await asyncio.to_thread(get, base, "/api/findings?host=host-z")
            assert status == 400
            assert (await asyncio.to_thread(get, base, "/nope"))[0] == 404
            await call.done_writing()

    run(scenario)


class FakeContext:
    def __init__(self, peer: str, auth: dict[str, list[bytes]] | None = None) -> None:
        self._peer, self._auth = peer, auth or {}

    def peer(self) -> str:
        return self._peer

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth


class TestIdentity:
    def test_certificate_common_name_wins_over_the_body(self) -> None:
        ctx = FakeContext("ipv4:10.0.0.5:4000", {"x509_common_name": [b"host-from-cert"]})
        assert peer_host_id(ctx, build_hello("host-claimed")) == "host-from-cert"

    def test_loopback_without_certificate_uses_the_claim(self) -> None:
        assert peer_host_id(FakeContext("ipv4:127.0.0.1:4000"), build_hello("host-a")) == "host-a"
        assert peer_host_id(FakeContext("ipv6:[::1]:4000"), build_hello("host-a")) == "host-a"

    def test_remote_without_certificate_is_refused_unless_allowed(self) -> None:
        ctx = FakeContext("ipv4:10.0.0.5:4000")
        with pytest.raises(IdentityError, match="loopback"):
            peer_host_id(ctx, build_hello("host-a"))
        assert peer_host_id(ctx, build_hello("host-a"), allow_insecure_remote=True) == "host-a"

    @pytest.mark.parametrize(
        ("peer", "loopback"),
        [
            ("ipv4:127.0.0.1:1", True),
            ("ipv4:127.8.0.1:1", True),
            ("ipv6:[::1]:1", True),
            ("unix:/tmp/s", True),
            ("ipv4:192.168.1.2:1", False),
            ("ipv6:[2001:db8::1]:1", False),
            ("ipv6:[::ffff:10.0.0.1]:1", False),
            ("garbage", False),
        ],
    )
    def test_loopback_peers(self, peer: str, loopback: bool) -> None:
        assert is_loopback_peer(peer) is loopback

    def test_empty_common_name_is_no_identity(self) -> None:
        assert certificate_common_name({"x509_common_name": [b""]}) is None
        assert certificate_common_name({}) is None


def test_pending_budget_is_fifo_and_bounded() -> None:
    from collector.ingest import Budget

    async def scenario() -> None:
        budget = Budget(100)
        assert await budget.acquire(60) == 60
        order: list[str] = []

        async def want(name: str, n: int) -> None:
            await budget.acquire(n)
            order.append(name)

        big = asyncio.create_task(want("big", 50))
        small = asyncio.create_task(want("small", 10))
        await asyncio.sleep(0.01)
        assert order == [] and budget.used == 60, "the small one waits behind the big one (FIFO)"
        budget.release(60)
        await asyncio.sleep(0.01)
        assert order == ["big", "small"] and budget.used == 60
        budget.release(50)
        budget.release(10)
        assert await budget.acquire(1000) == 100, "a message larger than the budget goes alone"
        budget.release(100)
        cancelled = asyncio.create_task(want("never", 100))
        await asyncio.sleep(0.01)
        cancelled.cancel()
        await asyncio.sleep(0.01)
        budget.release(100)
        assert budget.used == 0 and not budget._waiters
        await asyncio.gather(big, small)

    asyncio.run(scenario())


def test_metrics_and_the_read_side_routes(tmp_path: Path) -> None:
    auth: dict[str, str] = {}

    def fetch(base: str, path: str) -> tuple[int, Message, bytes]:
        """Status, headers (case-insensitive, as HTTP's are) and body."""
        try:
            with urllib.request.urlopen(urllib.request.Request(base + path, headers=auth), timeout=5) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    def sample(text: str, name: str) -> float:
        (line,) = [ln for ln in text.splitlines() if ln.startswith(name + " ") or ln.startswith(name + "{")]
        return float(line.rsplit(" ", 1)[1])

    async def scenario() -> None:
        async with collector(tmp_path / "c.db", http=True) as server, stream(server) as call:
            await call.write(hello_msg("host-a"))
            findings = [build_finding(f"f{i}", last_seen=T0 + i) for i in range(5)]
            await call.write(batch_msg(1, findings))
            assert (await call.read()).ack.sequence == 1
            await call.write(batch_msg(2, [build_finding("f0", last_seen=T0)]))  # a replay: unchanged
            assert (await call.read()).ack.sequence == 2
            base = f"http://{server.http_address}"
            auth.update(viewer_key(server))
            status, headers, body = await asyncio.to_thread(fetch, base, "/metrics")
            assert status == 200 and headers["Content-Type"].startswith("text/plain")
            text = body.decode()
            assert sample(text, 'umbra_findings_ingested_total{result="new"}') == 5
            assert sample(text, 'umbra_findings_ingested_total{result="unchanged"}') == 1
            assert sample(text, "umbra_streams_open") == 1
            assert sample(text, 'umbra_hosts{state="reporting"}') == 1
            assert sample(text, "umbra_store_commit_seconds_count") == server.stats.commits >= 1
            assert sample(text, 'umbra_store_commit_seconds_bucket{le="+Inf"}') == server.stats.commits
            # The findings list pages with a cursor in a header; the body stays a list.
            status, headers, body = await asyncio.to_thread(fetch, base, "/api/findings?limit=2")
            assert status == 200 and [f["id"] for f in json.loads(body)] == ["f4", "f3"]
            cursor = headers["X-Next-Cursor"]
            page_2 = f"/api/findings?limit=5&cursor={cursor}"
            status, headers, body = await asyncio.to_thread(fetch, base, page_2)
            assert [f["id"] for f in json.loads(body)] == ["f2", "f1", "f0"]
            assert "X-Next-Cursor" not in headers
            assert (await asyncio.to_thread(fetch, base, "/api/findings?cursor=junk"))[0] == 400
            assert (await asyncio.to_thread(fetch, base, "/api/findings?approved=maybe"))[0] == 400
            unapproved_high = "/api/findings?approved=false&severity=high"
            status, _, body = await asyncio.to_thread(fetch, base, unapproved_high)
            assert status == 200 and len(json.loads(body)) == 5
            status, _, body = await asyncio.to_thread(fetch, base, "/api/risk")
            assert status == 200 and [h["host_id"] for h in json.loads(body)["hosts"]] == ["host-a"]
            status, _, body = await asyncio.to_thread(fetch, base, "/api/runtimes")
            assert status == 200 and json.loads(body)[0]["runtime"] == "ollama"
            for path in ("/api/services", "/api/models", "/api/compute", "/api/transfers", "/api/silent"):
                status, _, body = await asyncio.to_thread(fetch, base, path)
                assert status == 200 and json.loads(body) == [], path
            assert (await asyncio.to_thread(fetch, base, "/api/trend?scope=nobody"))[0] == 400
            await call.done_writing()

    run(scenario)

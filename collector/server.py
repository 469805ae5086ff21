"""The collector's gRPC service: enrollment, and one bidirectional stream per agent, acked batch by batch.

Listeners. With TLS (the default) the collector listens twice on one gRPC server: the stream port
requires a client certificate signed by the collector's CA (mutual TLS), and the enrollment port
is server-authenticated TLS only, where an agent trades a token for its certificate. Python's
gRPC cannot ask for an optional client certificate, hence two ports. The stream port also serves
Enroll for renewal (authenticated by the current certificate). Both serve the gRPC health service.
Without TLS (`--insecure`, development) one plain port serves everything and only loopback agents
are accepted (identity.peer_host_id).

A stream starts with Hello (anything else: FAILED_PRECONDITION). The identity is the certificate's
common name; the agent must be enrolled and not revoked (PERMISSION_DENIED), and may hold at most
`max_streams_per_host` streams at once (RESOURCE_EXHAUSTED). Batches go to one writer thread that
commits every batch waiting at that moment in one transaction (group commit: one disk sync for
many agents), and each batch is acked only after its commit, in order, so an Ack means "durable".
Malformed bytes get INVALID_ARGUMENT, a batch that can never be stored INVALID_ARGUMENT, storage
trouble UNAVAILABLE (the agent retries later); every refusal is counted.

The monitor task (every `monitor_interval`) reloads revocations and the policy from the store
(another process, `umbra-collector agent revoke` / `policy set`, may have changed them), ends
revoked agents' streams, pushes a newer policy to every stream, and marks hosts silent.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import json
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import grpc
from google.protobuf.message import DecodeError
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_health.v1._async import HealthServicer  # type: ignore[import-untyped]
from umbra.v1 import agent_pb2

from . import health
from .addr import format_addr, is_loopback_host, parse_addr
from .http_api import HttpApi
from .identity import IdentityError, certificate_common_name, peer_host_id
from .pki import CSRError, ServerIdentity, split_token, token_hash
from .policy import to_wire
from .storage.base import InvalidBatch, PreparedBatch, Store, StoreError, StoreResult, TokenRefused

log = logging.getLogger(__name__)

PROTOCOL_VERSION = "umbra.v1"
STREAM_SERVICE = "umbra.v1.StreamService"
ENROLL_SERVICE = "umbra.v1.EnrollService"
#: Largest AgentMessage accepted; agents must keep batches below it.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
#: Agents may send keepalive pings no more often than this (gRPC closes abusive connections).
MIN_CLIENT_PING_INTERVAL_MS = 10_000
DEFAULT_GRACE_SECONDS = 5.0
DEFAULT_SILENT_AFTER = 300.0
DEFAULT_MONITOR_INTERVAL = 5.0
DEFAULT_MAX_STREAMS_PER_HOST = 2
DEFAULT_HELLO_TIMEOUT = 30.0
DEFAULT_AGENT_CERT_VALIDITY = dt.timedelta(days=30)
#: Enroll requests are small (a CSR); anything bigger is refused early.
MAX_ENROLL_BYTES = 64 * 1024
#: Batches of one stream received but not yet acked; beyond it HTTP/2 flow control holds the agent.
MAX_PENDING_BATCHES_PER_STREAM = 8
#: Findings committed in one transaction at most (a group of batches).
MAX_FINDINGS_PER_COMMIT = 50_000
#: Bytes of batches received and not yet stored, over all streams (a memory bound).
MAX_PENDING_BYTES = 16 * 1024 * 1024  # ~125,000 findings; parsed and prepared, ~4 KiB per KiB
#: All RPCs at once; beyond it gRPC answers RESOURCE_EXHAUSTED.
MAX_CONCURRENT_RPCS = 20_000

P = ParamSpec("P")
T = TypeVar("T")

_Context = aio.ServicerContext[bytes, agent_pb2.CollectorMessage]


class BindError(OSError):
    """A listener could not bind its address."""


def server_options(
    max_message_bytes: int = MAX_MESSAGE_BYTES, reuse_port: bool = False
) -> list[tuple[str, int]]:
    """gRPC server options; the agent's channel options (agent/delivery/stream.py) agree with these.

    `reuse_port`: several collector processes of one `serve --workers N` share the ports.
    """
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_metadata_size", 16 * 1024),
        # One agent needs one stream (plus a renewal now and then) per connection.
        ("grpc.max_concurrent_streams", 16),
        # No window growth by bandwidth probing: each agent's stream keeps HTTP/2's 64 KiB window,
        # so a thousand agents sending at once cannot park gigabytes in the transport's buffers
        # (an agent's few findings a second need no more).
        ("grpc.http2.bdp_probe", 0),
        # Ping idle agents so half-open connections (laptop asleep, NAT dropped) are noticed.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
        ("grpc.http2.max_pings_without_data", 0),
        # Without this, Linux lets a second collector bind the same port and steal half the agents;
        # `serve --workers N` sets it on purpose, so the kernel spreads connections over its processes.
        ("grpc.so_reuseport", int(reuse_port)),
    ]


@dataclass
class ServerStats:
    """Counters since start, reported by /healthz and logged at shutdown."""

    streams_opened: int = 0
    streams_active: int = 0
    streams_refused: int = 0
    batches_stored: int = 0
    batches_invalid: int = 0
    findings_new: int = 0
    findings_updated: int = 0
    findings_unchanged: int = 0
    heartbeats: int = 0
    inventories: int = 0
    store_errors: int = 0
    commits: int = 0  # transactions the batch writer made (batches_stored / commits = grouping)
    malformed_messages: int = 0
    streams_broken: int = 0  # ended by the transport: cancelled, oversized message, reset
    enrollments: int = 0
    renewals: int = 0
    enrollments_refused: int = 0
    policy_pushes: int = 0
    hosts_marked_silent: int = 0
    hosts_back: int = 0
    refused_by_status: dict[str, int] = field(default_factory=dict)

    def refused(self, code: grpc.StatusCode) -> None:
        self.refused_by_status[code.name] = self.refused_by_status.get(code.name, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ServerTLS:
    """Mutual TLS: the PKI, the enrollment listener, and what the CA issues to agents."""

    identity: ServerIdentity
    enroll_addr: str
    agent_validity: dt.timedelta = DEFAULT_AGENT_CERT_VALIDITY
    #: What EnrollResponse.stream_address says; None: ":<stream port>" (the host the agent enrolled at).
    advertise: str | None = None


class _Offloader:
    """Runs blocking store calls in threads and remembers them, so shutdown can wait for them.

    A cancelled RPC cannot stop a thread mid-transaction; shielding keeps the write running to
    its commit, and `drain()` lets the server close the store only after the last one.
    """

    def __init__(self) -> None:
        self._pending: set[asyncio.Future[Any]] = set()

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        fut: asyncio.Future[T] = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
        self._pending.add(fut)
        fut.add_done_callback(self._done)
        return await asyncio.shield(fut)

    def _done(self, fut: asyncio.Future[Any]) -> None:
        self._pending.discard(fut)
        if not fut.cancelled():
            fut.exception()  # retrieved here, so an abandoned failure is not reported twice

    async def drain(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


# ---- group commit


_Outcome = StoreResult | InvalidBatch | StoreError


@dataclass
class _Job:
    batch: PreparedBatch
    future: asyncio.Future[_Outcome]
    loop: asyncio.AbstractEventLoop


def _settle(fut: asyncio.Future[_Outcome], outcome: _Outcome) -> None:
    if not fut.done():
        fut.set_result(outcome)


class BatchWriter:
    """One thread that stores batches, grouping all batches waiting at once into one transaction.

    Futures resolve to the outcome (never raise), so an abandoned stream leaves no unretrieved
    exception behind.
    """

    def __init__(self, store: Store, stats: ServerStats, max_findings: int = MAX_FINDINGS_PER_COMMIT) -> None:
        self._store = store
        self._stats = stats
        self._max_findings = max_findings
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="umbra-batch-writer", daemon=True)
        self._started = False

    def start(self) -> None:
        self._thread.start()
        self._started = True

    def submit(self, batch: PreparedBatch) -> asyncio.Future[_Outcome]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[_Outcome] = loop.create_future()
        self._queue.put(_Job(batch, fut, loop))
        return fut

    async def close(self) -> None:
        """Store everything already submitted, then stop the thread."""
        if self._started:
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join)
            self._started = False

    def _run(self) -> None:
        stopping = False
        while not stopping:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            size = job.batch.size
            while size < self._max_findings:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                jobs.append(more)
                size += more.batch.size
            outcomes: Sequence[_Outcome]
            try:
                outcomes = self._store.store_prepared([j.batch for j in jobs])
                self._stats.commits += 1
            except StoreError as exc:
                outcomes = [exc] * len(jobs)
            except Exception as exc:  # a backend bug: fail these batches, keep the writer alive
                log.exception("batch writer failed")
                outcomes = [StoreError(f"{type(exc).__name__}: {exc}")] * len(jobs)
            for j, outcome in zip(jobs, outcomes, strict=True):
                with contextlib.suppress(RuntimeError):  # the loop is gone (shutdown)
                    j.loop.call_soon_threadsafe(_settle, j.future, outcome)


# ---- fleet state shared by all streams


@dataclass(eq=False)
class _StreamState:
    host_id: str
    out: asyncio.Queue[Any]
    policy_version: int
    sensors: dict[str, str] = field(default_factory=dict)  # name -> last state reported as health
    dropped_reported: int = 0
    held: int = 0  # bytes of the global Budget this stream holds
    #: Batches received and not yet acked; the reader waits for a slot (back-pressure).
    window: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(MAX_PENDING_BATCHES_PER_STREAM)
    )


@dataclass(frozen=True)
class _Abort:
    code: grpc.StatusCode
    message: str


class _Pending:
    __slots__ = ("cost", "future", "sequence")

    def __init__(self, sequence: int, cost: int, future: asyncio.Future[_Outcome]) -> None:
        self.sequence, self.cost, self.future = sequence, cost, future


class Budget:
    """Bytes of batches received and not yet stored, over all streams. A stream that would go
    past it waits (and HTTP/2 flow control holds its agent), so memory stays bounded however
    many agents send at once. FIFO, so no stream starves."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    async def acquire(self, n: int) -> int:
        n = min(n, self.limit)  # one message larger than the budget still goes, alone
        if not self._waiters and self.used + n <= self.limit:
            self.used += n
            return n
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(n)  # granted in the same instant
            raise
        return n

    def release(self, n: int) -> None:
        self.used -= n
        while self._waiters:
            k, fut = self._waiters[0]
            if fut.cancelled():
                self._waiters.popleft()
                continue
            if self.used + k > self.limit and self.used > 0:
                break
            self._waiters.popleft()
            self.used += k
            fut.set_result(None)


_END = object()


class Fleet:
    """What the streams share: open streams per host, revocations, the policy, silent hosts."""

    def __init__(self) -> None:
        self.streams: dict[str, set[_StreamState]] = {}
        self.revoked: frozenset[str] = frozenset()
        self.enrolled: set[str] = set()
        self.policy: agent_pb2.Policy | None = None
        self.silent: dict[str, float] = {}  # host -> silent since

    def policy_for(self, version: int) -> agent_pb2.CollectorMessage | None:
        if self.policy is None or self.policy.version <= version:
            return None
        return agent_pb2.CollectorMessage(policy=self.policy)


# ---- services


class StreamServicer:
    def __init__(
        self,
        store: Store,
        stats: ServerStats,
        offload: _Offloader,
        writer: BatchWriter,
        fleet: Fleet,
        *,
        tls: bool,
        allow_insecure_remote: bool = False,
        max_streams_per_host: int = DEFAULT_MAX_STREAMS_PER_HOST,
        hello_timeout: float = DEFAULT_HELLO_TIMEOUT,
        pending_bytes: int = MAX_PENDING_BYTES,
    ) -> None:
        self._budget = Budget(pending_bytes)
        self._store = store
        self._stats = stats
        self._offload = offload
        self._writer = writer
        self._fleet = fleet
        self._tls = tls
        self._allow_insecure_remote = allow_insecure_remote
        self._max_streams_per_host = max_streams_per_host
        self._hello_timeout = hello_timeout

    def handler(self) -> grpc.GenericRpcHandler:
        # Requests arrive as bytes and are parsed here, so malformed ones get INVALID_ARGUMENT
        # (gRPC's own deserializer would answer INTERNAL).
        return grpc.method_handlers_generic_handler(
            STREAM_SERVICE,
            {
                "Stream": grpc.stream_stream_rpc_method_handler(
                    self.Stream,
                    request_deserializer=None,
                    response_serializer=agent_pb2.CollectorMessage.SerializeToString,
                )
            },
        )

    async def _refuse(self, context: _Context, code: grpc.StatusCode, message: str) -> None:
        self._stats.streams_refused += 1
        self._stats.refused(code)
        log.warning("stream from %s refused: %s: %s", context.peer(), code.name, message)
        await context.abort(code, message)

    def _parse(self, raw: bytes) -> agent_pb2.AgentMessage | None:
        try:
            return agent_pb2.AgentMessage.FromString(raw)
        except DecodeError:
            self._stats.malformed_messages += 1
            return None

    async def Stream(
        self, request_iterator: AsyncIterator[bytes], context: _Context
    ) -> AsyncIterator[agent_pb2.CollectorMessage]:
        peer = context.peer()
        try:
            raw = await asyncio.wait_for(anext(request_iterator), self._hello_timeout)
        except StopAsyncIteration:  # closed before any message, or its first was over the size limit
            self._stats.streams_broken += 1
            return
        except TimeoutError:
            await self._refuse(context, grpc.StatusCode.DEADLINE_EXCEEDED, "no Hello in time")
            return
        first = self._parse(raw)
        if first is None:
            await self._refuse(
                context, grpc.StatusCode.INVALID_ARGUMENT, "malformed message (not an AgentMessage)"
            )
            return
        if first.WhichOneof("body") != "hello":
            await self._refuse(
                context, grpc.StatusCode.FAILED_PRECONDITION, "the first message of a stream must be Hello"
            )
        hello = first.hello
        if hello.protocol_version not in ("", PROTOCOL_VERSION):
            await self._refuse(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"protocol {hello.protocol_version!r} not supported; "
                f"this collector speaks {PROTOCOL_VERSION}",
            )
        try:
            host_id = peer_host_id(
                context,
                hello,
                allow_insecure_remote=self._allow_insecure_remote,
                require_certificate=self._tls,
            )
        except IdentityError as exc:
            await self._refuse(context, grpc.StatusCode.UNAUTHENTICATED, str(exc))
            return
        if host_id in self._fleet.revoked:
            await self._refuse(context, grpc.StatusCode.PERMISSION_DENIED, f"agent {host_id} is revoked")
            return
        if self._tls and host_id not in self._fleet.enrolled:
            record = await self._offload.run(self._store.agent, host_id)
            if record is None or record.revoked:
                await self._refuse(
                    context,
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"agent {host_id} is {'revoked' if record else 'not enrolled here'}",
                )
                return
            self._fleet.enrolled.add(host_id)
        open_streams = self._fleet.streams.setdefault(host_id, set())
        if len(open_streams) >= self._max_streams_per_host:
            await self._refuse(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"host {host_id} already has {len(open_streams)} open streams "
                f"(limit {self._max_streams_per_host})",
            )
            return

        state = _StreamState(host_id, asyncio.Queue(), hello.policy_version)
        open_streams.add(state)
        self._stats.streams_opened += 1
        self._stats.streams_active += 1
        stored = 0
        reader: asyncio.Task[None] | None = None
        try:
            await self._call(context, self._store.upsert_host, host_id, hello, peer)
            log.info(
                "stream open: host %s (%s, %s) from %s, agent %s, policy %d",
                host_id,
                hello.host.hostname or "?",
                hello.host.os or "?",
                peer,
                hello.agent_version or "?",
                hello.policy_version,
            )
            await self._contact(state)
            await self._sensor_health(state, hello.sensors)
            self._push_policy(state)
            reader = asyncio.create_task(self._read(request_iterator, state, peer))
            while True:
                item = await state.out.get()
                if item is _END:
                    break
                if isinstance(item, _Pending):
                    outcome = await item.future
                    state.window.release()
                    self._budget.release(item.cost)
                    state.held -= item.cost
                    if isinstance(outcome, InvalidBatch):
                        self._stats.batches_invalid += 1
                        log.warning("host %s: batch %d refused: %s", host_id, item.sequence, outcome)
                        await self._refuse(
                            context,
                            grpc.StatusCode.INVALID_ARGUMENT,
                            f"batch {item.sequence} refused: {outcome}",
                        )
                        return
                    if isinstance(outcome, StoreError):
                        self._stats.store_errors += 1
                        log.error("host %s: batch %d not stored: %s", host_id, item.sequence, outcome)
                        await context.abort(
                            grpc.StatusCode.UNAVAILABLE, "collector storage unavailable; retry later"
                        )
                        return
                    self._stats.batches_stored += 1
                    self._stats.findings_new += outcome.new
                    self._stats.findings_updated += outcome.updated
                    self._stats.findings_unchanged += outcome.unchanged
                    stored += 1
                    yield agent_pb2.CollectorMessage(ack=agent_pb2.Ack(sequence=item.sequence))
                elif isinstance(item, _Abort):
                    if item.code == grpc.StatusCode.UNAVAILABLE:
                        await context.abort(item.code, item.message)
                    await self._refuse(context, item.code, item.message)
                    return
                else:
                    yield item
        except asyncio.CancelledError:
            # The transport ended the call: the agent went away or reset it, or gRPC refused a
            # message over the size limit (RESOURCE_EXHAUSTED, answered before this code sees it).
            self._stats.streams_broken += 1
            raise
        finally:
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
            if state.held:  # batches this stream will never ack
                self._budget.release(state.held)
                state.held = 0
            open_streams.discard(state)
            if not open_streams:
                self._fleet.streams.pop(host_id, None)
            self._stats.streams_active -= 1
            log.info("stream closed: host %s, %d batches stored", host_id, stored)

    async def _read(self, request_iterator: AsyncIterator[bytes], state: _StreamState, peer: str) -> None:
        """Incoming messages -> batches submitted in order, heartbeats recorded; ends with _END or _Abort."""
        try:
            async for raw in request_iterator:
                cost = await self._budget.acquire(len(raw))
                state.held += cost
                going_on = await self._handle(raw, cost, state, peer)
                # Nothing of a message outlives its handling here (the writer holds a batch's rows
                # until its commit): an idle stream holds no memory outside the Budget.
                del raw
                if not going_on:
                    return
        except StoreError as exc:
            self._stats.store_errors += 1
            log.error("store failed: %s", exc)
            state.out.put_nowait(
                _Abort(grpc.StatusCode.UNAVAILABLE, "collector storage unavailable; retry later")
            )
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the transport ended the call: cancelled, oversized, reset
            self._stats.streams_broken += 1
            log.info("stream of %s ended by the transport: %s", state.host_id, exc)
        state.out.put_nowait(_END)

    async def _handle(self, raw: bytes, cost: int, state: _StreamState, peer: str) -> bool:
        """One incoming message; False when the stream must end (an _Abort is queued then)."""
        host_id, out = state.host_id, state.out
        message = self._parse(raw)
        if message is None or message.WhichOneof("body") != "batch":
            self._budget.release(cost)  # only batches wait for the writer
            state.held -= cost
        if message is None:
            malformed = "malformed message (not an AgentMessage)"
            out.put_nowait(_Abort(grpc.StatusCode.INVALID_ARGUMENT, malformed))
            return False
        which = message.WhichOneof("body")
        try:
            if which == "batch":
                await state.window.acquire()
                batch = message.batch
                try:
                    # Validation and row building here, on the event loop's thread; the writer
                    # thread is left with SQLite alone (which runs without the GIL).
                    prepared = self._store.prepare(host_id, batch.sequence, batch.findings)
                except InvalidBatch as exc:
                    fut: asyncio.Future[_Outcome] = asyncio.get_running_loop().create_future()
                    fut.set_result(exc)
                else:
                    fut = self._writer.submit(prepared)
                out.put_nowait(_Pending(batch.sequence, cost, fut))
                if host_id in self._fleet.silent:
                    await self._contact(state)
            elif which == "heartbeat":
                hb = message.heartbeat
                await self._offload.run(self._store.record_heartbeat, host_id, hb)
                self._stats.heartbeats += 1
                await self._contact(state)
                if hb.dropped_total > state.dropped_reported:
                    await self._offload.run(
                        self._store.record_health, host_id, health.spool_drops(hb.dropped_total), None
                    )
                    state.dropped_reported = hb.dropped_total
                await self._sensor_health(state, hb.sensors)
            elif which == "hello":  # re-announced (sensors or policy changed); identity stays
                await self._offload.run(self._store.upsert_host, host_id, message.hello, peer)
                state.policy_version = max(state.policy_version, message.hello.policy_version)
                await self._sensor_health(state, message.hello.sensors)
                self._push_policy(state)
            elif which == "inventory":
                await self._offload.run(self._store.record_inventory, host_id, message.inventory)
                self._stats.inventories += 1
            else:
                out.put_nowait(_Abort(grpc.StatusCode.INVALID_ARGUMENT, "empty AgentMessage"))
                return False
        except (
            InvalidBatch
        ) as exc:  # a heartbeat or inventory the store can never keep (a batch's is acked so)
            out.put_nowait(_Abort(grpc.StatusCode.INVALID_ARGUMENT, f"{which} refused: {exc}"))
            return False
        return True

    async def _contact(self, state: _StreamState) -> None:
        """A host marked silent makes contact: record that it is back."""
        since = self._fleet.silent.pop(state.host_id, None)
        if since is None:
            return
        await self._offload.run(self._store.record_health, state.host_id, health.back(since), 0.0)
        self._stats.hosts_back += 1
        log.info("host %s is back (silent since %s)", state.host_id, time.ctime(since))

    async def _sensor_health(self, state: _StreamState, sensors: Sequence[agent_pb2.SensorStatus]) -> None:
        for s in sensors:
            name = s.name[:64]
            degraded = s.state == agent_pb2.SENSOR_STATE_DEGRADED
            was = state.sensors.get(name)
            if degraded and was != "degraded":
                state.sensors[name] = "degraded"
                await self._offload.run(
                    self._store.record_health,
                    state.host_id,
                    health.sensor(name, "degraded", s.reason[:500]),
                    None,
                )
            elif not degraded and was == "degraded" and s.state == agent_pb2.SENSOR_STATE_ACTIVE:
                state.sensors[name] = "active"
                await self._offload.run(
                    self._store.record_health, state.host_id, health.sensor(name, "active", ""), None
                )

    def _push_policy(self, state: _StreamState) -> None:
        message = self._fleet.policy_for(state.policy_version)
        if message is not None:
            state.policy_version = message.policy.version
            state.out.put_nowait(message)
            self._stats.policy_pushes += 1

    async def _call(
        self, context: _Context, fn: Callable[P, None], *args: P.args, **kwargs: P.kwargs
    ) -> None:
        try:
            await self._offload.run(fn, *args, **kwargs)
        except StoreError as exc:
            self._stats.store_errors += 1
            log.error("store failed: %s", exc)
        else:
            return
        await context.abort(grpc.StatusCode.UNAVAILABLE, "collector storage unavailable; retry later")


_EnrollContext = aio.ServicerContext[bytes, agent_pb2.EnrollResponse]


class EnrollServicer:
    """Enroll: a token buys a certificate (enrollment port); a certificate buys its successor (renewal)."""

    def __init__(
        self,
        store: Store,
        stats: ServerStats,
        offload: _Offloader,
        fleet: Fleet,
        tls: ServerTLS | None,
        stream_port: Callable[[], int],
    ) -> None:
        self._store = store
        self._stats = stats
        self._offload = offload
        self._fleet = fleet
        self._tls = tls
        self._stream_port = stream_port

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            ENROLL_SERVICE,
            {
                "Enroll": grpc.unary_unary_rpc_method_handler(
                    self.Enroll,
                    request_deserializer=None,
                    response_serializer=agent_pb2.EnrollResponse.SerializeToString,
                )
            },
        )

    async def _refuse(
        self, context: _EnrollContext, code: grpc.StatusCode, message: str, why: str = ""
    ) -> None:
        self._stats.enrollments_refused += 1
        self._stats.refused(code)
        log.warning("enrollment from %s refused: %s: %s", context.peer(), code.name, why or message)
        await context.abort(code, message)

    async def Enroll(self, raw: bytes, context: _EnrollContext) -> agent_pb2.EnrollResponse:
        if self._tls is None:
            await self._refuse(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                "this collector runs without TLS (serve --insecure, development): "
                "there is nothing to enroll for",
            )
            raise AssertionError("unreachable: abort raises")
        tls = self._tls
        if len(raw) > MAX_ENROLL_BYTES:
            await self._refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "enroll request too large")
        try:
            request = agent_pb2.EnrollRequest.FromString(raw)
        except DecodeError:
            self._stats.malformed_messages += 1
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "malformed EnrollRequest")
            raise AssertionError("unreachable: abort raises") from None
        renewing_as = certificate_common_name(context.auth_context())
        if renewing_as is not None:
            record = await self._offload.run(self._store.agent, renewing_as)
            if record is None or record.revoked or renewing_as in self._fleet.revoked:
                await self._refuse(
                    context,
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"agent {renewing_as} is {'revoked' if record else 'not enrolled here'}",
                )
        else:
            secret, _ = split_token(request.token)
            if not secret:
                await self._refuse(
                    context, grpc.StatusCode.UNAUTHENTICATED, "an enrollment token is required"
                )
        try:
            issued = await asyncio.to_thread(
                tls.identity.ca.sign_agent_csr, request.csr_pem, tls.agent_validity, renewing_as
            )
        except CSRError as exc:
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, f"bad CSR: {exc}")
            raise AssertionError("unreachable: abort raises") from exc
        hostname = request.hostname.strip()[:255] if request.hostname.isprintable() else ""
        try:
            if renewing_as is None:
                try:
                    await self._offload.run(self._store.consume_token, token_hash(secret), time.time())
                except TokenRefused as exc:
                    await self._refuse(
                        context,
                        grpc.StatusCode.UNAUTHENTICATED,
                        "enrollment token refused: unknown, expired or already used",
                        why=str(exc),
                    )
                known = await self._offload.run(self._store.agent, issued.host_id)
                if known is not None and known.revoked:
                    await self._refuse(
                        context, grpc.StatusCode.PERMISSION_DENIED, f"agent {issued.host_id} is revoked"
                    )
            await self._offload.run(
                self._store.register_agent,
                issued.host_id,
                issued.serial,
                issued.not_after,
                hostname,
                renewal=renewing_as is not None,
            )
        except StoreError as exc:
            self._stats.store_errors += 1
            log.error("enrollment not stored: %s", exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "collector storage unavailable; retry later")
        self._fleet.enrolled.add(issued.host_id)
        if renewing_as is None:
            self._stats.enrollments += 1
            log.info("enrolled %s (%s) from %s", issued.host_id, hostname or "?", context.peer())
        else:
            self._stats.renewals += 1
            log.info("renewed the certificate of %s", issued.host_id)
        return agent_pb2.EnrollResponse(
            certificate_pem=issued.certificate_pem,
            ca_certificate_pem=tls.identity.ca_pem,
            host_id=issued.host_id,
            stream_address=tls.advertise or f":{self._stream_port()}",
        )


def _check_bindable(host: str, addr: str) -> None:
    """Fail with one clear line when a port is taken, before gRPC core logs its own noise."""
    _, port = parse_addr(addr)
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"cannot listen for gRPC on {addr}: {exc.strerror}") from None
    for family, kind, proto, _, sockaddr in infos[:1]:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                raise BindError(f"cannot listen for gRPC on {addr}: {exc.strerror or exc}") from None


class CollectorServer:
    """The gRPC service (and optional HTTP API) over one store; the caller owns and closes the store.

    `await start()` binds (port 0 picks a free port; read `grpc_port` / `grpc_address` after),
    `await stop()` stops accepting, gives open streams `grace` seconds, then waits for every
    store write already running. `tls=None` is the insecure development mode.
    """

    def __init__(
        self,
        store: Store,
        grpc_addr: str = "127.0.0.1:50051",
        http_addr: str | None = None,
        *,
        tls: ServerTLS | None = None,
        allow_insecure_remote: bool = False,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        grace: float = DEFAULT_GRACE_SECONDS,
        silent_after: float = DEFAULT_SILENT_AFTER,
        monitor_interval: float = DEFAULT_MONITOR_INTERVAL,
        max_streams_per_host: int = DEFAULT_MAX_STREAMS_PER_HOST,
        hello_timeout: float = DEFAULT_HELLO_TIMEOUT,
        reuse_port: bool = False,
        primary: bool = True,
        stats_dir: Path | None = None,
        worker_name: str = "0",
    ) -> None:
        self.store = store
        self.stats = ServerStats()
        self._reuse_port = reuse_port
        #: Only the primary process of a `serve --workers N` marks hosts silent (the others only read
        #: the marks, to notice hosts coming back), so a silence is recorded once.
        self._primary = primary
        self._stats_dir = stats_dir
        self._worker_name = worker_name
        self.fleet = Fleet()
        self._grpc_host, _ = parse_addr(grpc_addr)
        self._grpc_addr = grpc_addr
        self._http_addr = http_addr
        if http_addr is not None:
            parse_addr(http_addr)
        self._tls = tls
        self._enroll_host = parse_addr(tls.enroll_addr)[0] if tls is not None else ""
        self._allow_insecure_remote = allow_insecure_remote
        self._max_message_bytes = max_message_bytes
        self._grace = grace
        self._silent_after = silent_after
        self._monitor_interval = monitor_interval
        self._max_streams_per_host = max_streams_per_host
        self._hello_timeout = hello_timeout
        self._offload = _Offloader()
        self._writer = BatchWriter(store, self.stats)
        self._health = HealthServicer()
        self._server: aio.Server | None = None
        self._http: HttpApi | None = None
        self._monitor: asyncio.Task[None] | None = None
        self.grpc_port = 0
        self.enroll_port = 0

    @property
    def grpc_address(self) -> str:
        return format_addr(self._grpc_host, self.grpc_port)

    @property
    def enroll_address(self) -> str | None:
        return format_addr(self._enroll_host, self.enroll_port) if self._tls is not None else None

    @property
    def http_address(self) -> str | None:
        return self._http.address if self._http is not None else None

    def health(self) -> dict[str, Any]:
        counters = self.stats.to_dict()
        workers = 1
        if self._stats_dir is not None:  # `serve --workers N`: add the other processes' counters
            for path in sorted(self._stats_dir.glob("worker-*.json")):
                if path.name == f"worker-{self._worker_name}.json":
                    continue
                try:
                    other = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue
                workers += 1
                for key, value in other.items():
                    if isinstance(value, int) and isinstance(counters.get(key), int):
                        counters[key] += value
                    elif isinstance(value, dict) and isinstance(counters.get(key), dict):
                        for k, v in value.items():
                            counters[key][k] = counters[key].get(k, 0) + v
        return {
            "status": "ok",
            "grpc": self.grpc_address,
            "enroll": self.enroll_address,
            "tls": self._tls is not None,
            "workers": workers,
            **counters,
        }

    def _write_stats(self) -> None:
        if self._stats_dir is None:
            return
        path = self._stats_dir / f"worker-{self._worker_name}.json"
        tmp = path.with_name(path.name + ".tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(self.stats.to_dict()))
            os.replace(tmp, path)

    async def start(self) -> None:
        tls = self._tls
        if tls is None and not is_loopback_host(self._grpc_host):
            if self._allow_insecure_remote:
                log.warning(
                    "insecure gRPC on %s: remote agents' claimed host ids are trusted", self._grpc_addr
                )
            else:
                log.info("gRPC on %s without TLS: only loopback agents will be accepted", self._grpc_addr)
        await self.refresh()
        server = aio.server(
            options=server_options(self._max_message_bytes, self._reuse_port),
            maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
        )
        stream = StreamServicer(
            self.store,
            self.stats,
            self._offload,
            self._writer,
            self.fleet,
            tls=tls is not None,
            allow_insecure_remote=self._allow_insecure_remote,
            max_streams_per_host=self._max_streams_per_host,
            hello_timeout=self._hello_timeout,
        )
        enroll = EnrollServicer(
            self.store, self.stats, self._offload, self.fleet, tls, lambda: self.grpc_port
        )
        server.add_generic_rpc_handlers((stream.handler(), enroll.handler()))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        for service in ("", STREAM_SERVICE, ENROLL_SERVICE):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        if not self._reuse_port:  # with shared ports the other workers hold them already
            _check_bindable(self._grpc_host, self._grpc_addr)
            if tls is not None:
                _check_bindable(self._enroll_host, tls.enroll_addr)
        try:
            if tls is None:
                port = server.add_insecure_port(self._grpc_addr)
            else:
                pair = [(tls.identity.key_pem, tls.identity.chain_pem)]
                port = server.add_secure_port(
                    self._grpc_addr,
                    grpc.ssl_server_credentials(
                        pair, root_certificates=tls.identity.ca_pem, require_client_auth=True
                    ),
                )
        except RuntimeError as exc:
            raise BindError(f"cannot listen for gRPC on {self._grpc_addr}: {exc}") from None
        if port == 0:
            raise BindError(f"cannot listen for gRPC on {self._grpc_addr}")
        self.grpc_port = port
        if tls is not None:
            try:
                eport = server.add_secure_port(
                    tls.enroll_addr,
                    grpc.ssl_server_credentials([(tls.identity.key_pem, tls.identity.chain_pem)]),
                )
            except RuntimeError as exc:
                raise BindError(f"cannot listen for enrollment on {tls.enroll_addr}: {exc}") from None
            if eport == 0:
                raise BindError(f"cannot listen for enrollment on {tls.enroll_addr}")
            self.enroll_port = eport
        self._writer.start()
        await server.start()
        self._server = server
        self._monitor = asyncio.create_task(self._monitor_loop())
        if self._http_addr is not None:
            try:
                self._http = HttpApi(self.store, self._http_addr, health=self.health)
            except OSError as exc:
                await self.stop(0)
                raise BindError(
                    f"cannot listen for HTTP on {self._http_addr}: {exc.strerror or exc}"
                ) from None

    # ---- the monitor: revocations, policy, silent hosts

    async def refresh(self) -> None:
        """Reload revocations and the policy from the store; end revoked agents' streams; push a
        newer policy to every open stream."""
        fleet = self.fleet
        revoked = await self._offload.run(self.store.revoked_hosts)
        for host_id in revoked - fleet.revoked:
            fleet.enrolled.discard(host_id)
            for state in fleet.streams.get(host_id, ()):
                state.out.put_nowait(_Abort(grpc.StatusCode.PERMISSION_DENIED, f"agent {host_id} is revoked"))
        fleet.revoked = revoked
        record = await self._offload.run(self.store.current_policy)
        if record is not None and (fleet.policy is None or record.version > fleet.policy.version):
            fleet.policy = to_wire(record.version, record.body)
            pushed = 0
            for states in fleet.streams.values():
                for state in states:
                    message = fleet.policy_for(state.policy_version)
                    if message is not None:
                        state.policy_version = record.version
                        state.out.put_nowait(message)
                        pushed += 1
            self.stats.policy_pushes += pushed
            if pushed:
                log.info("policy version %d pushed to %d streams", record.version, pushed)

    async def check_silence(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        contacts = await self._offload.run(self.store.host_contacts)
        for c in contacts:
            if c.silent_since > 0:
                self.fleet.silent.setdefault(c.host_id, c.silent_since)
                continue
            if now - c.last_seen < self._silent_after or c.host_id in self.fleet.silent or not self._primary:
                continue
            await self._offload.run(self.store.record_health, c.host_id, health.silent(c.last_seen, now), now)
            self.fleet.silent[c.host_id] = now
            self.stats.hosts_marked_silent += 1
            log.warning("host %s is silent: no contact for %.0f s", c.host_id, now - c.last_seen)

    async def _monitor_loop(self) -> None:
        while True:
            await asyncio.sleep(self._monitor_interval)
            try:
                await self.refresh()
                await self.check_silence()
                await asyncio.to_thread(self._write_stats)
            except StoreError as exc:
                log.error("monitor: %s", exc)
            except Exception:
                log.exception("monitor failed")

    async def stop(self, grace: float | None = None) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._health.enter_graceful_shutdown()
            await self._server.stop(self._grace if grace is None else grace)
            self._server = None
        await self._writer.close()
        await self._offload.drain()
        self._write_stats()
        if self._http is not None:
            await asyncio.to_thread(self._http.close)
            self._http = None
        log.info("collector stopped: %s", self.stats.to_dict())

    async def __aenter__(self) -> CollectorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def serve(
    store: Store,
    grpc_addr: str,
    http_addr: str | None = None,
    *,
    stop: asyncio.Event | None = None,
    on_listening: Callable[[CollectorServer], Awaitable[None] | None] | None = None,
    **options: Any,
) -> ServerStats:
    """Run the collector until `stop` is set (forever without one), then stop gracefully.

    `on_listening` is called once every listener is bound (ports known). The store is not closed.
    `options` are CollectorServer's keyword options (tls, grace, silent_after...).
    """
    server = CollectorServer(store, grpc_addr, http_addr, **options)
    await server.start()
    try:
        if on_listening is not None:
            maybe = on_listening(server)
            if maybe is not None:
                await maybe
        await (stop or asyncio.Event()).wait()
    finally:
        await server.stop()
    return server.stats

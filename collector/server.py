"""The collector's gRPC service: one bidirectional stream per agent, acked batch by batch.

A stream starts with Hello (anything else: FAILED_PRECONDITION), which registers the host
under the identity of the channel (identity.peer_host_id). Each FindingBatch is stored in one
transaction off the event loop and acked only after the commit, so an Ack means "durable" and
the agent may drop the batch from its spool. A batch that can never be stored ends the stream
with INVALID_ARGUMENT; storage trouble ends it with UNAVAILABLE so the agent retries later.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, ParamSpec, TypeVar

import grpc
from grpc import aio
from umbra.v1 import agent_pb2, agent_pb2_grpc

from .addr import format_addr, is_loopback_host, parse_addr
from .http_api import HttpApi
from .identity import IdentityError, peer_host_id
from .storage.base import InvalidBatch, Store, StoreError

log = logging.getLogger(__name__)

PROTOCOL_VERSION = "umbra.v1"
#: Largest AgentMessage accepted; agents must keep batches below it.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
#: Agents may send keepalive pings no more often than this (gRPC closes abusive connections).
MIN_CLIENT_PING_INTERVAL_MS = 10_000
DEFAULT_GRACE_SECONDS = 5.0

P = ParamSpec("P")
T = TypeVar("T")

_Context = aio.ServicerContext[agent_pb2.AgentMessage, agent_pb2.CollectorMessage]


class BindError(OSError):
    """A listener could not bind its address."""


def server_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        # Ping idle agents so half-open connections (laptop asleep, NAT dropped) are noticed.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
        ("grpc.http2.max_pings_without_data", 0),
        # Without this, Linux lets a second collector bind the same port and steal half the agents.
        ("grpc.so_reuseport", 0),
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

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


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


def _check_bindable(host: str, addr: str) -> None:
    """Fail with one clear line when the gRPC port is taken, before gRPC core logs its own noise."""
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


class StreamServicer(agent_pb2_grpc.StreamServiceServicer):
    def __init__(
        self, store: Store, stats: ServerStats, offload: _Offloader, *, allow_insecure_remote: bool = False
    ) -> None:
        self._store = store
        self._stats = stats
        self._offload = offload
        self._allow_insecure_remote = allow_insecure_remote

    async def _refuse(self, context: _Context, code: grpc.StatusCode, message: str) -> None:
        self._stats.streams_refused += 1
        log.warning("stream from %s refused: %s", context.peer(), message)
        await context.abort(code, message)

    async def Stream(
        self, request_iterator: AsyncIterator[agent_pb2.AgentMessage], context: _Context
    ) -> AsyncIterator[agent_pb2.CollectorMessage]:
        peer = context.peer()
        try:
            first = await anext(request_iterator)
        except StopAsyncIteration:
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
                f"protocol {hello.protocol_version!r} not supported; this collector speaks "
                f"{PROTOCOL_VERSION}",
            )
        try:
            host_id = peer_host_id(context, hello, allow_insecure_remote=self._allow_insecure_remote)
        except IdentityError as exc:
            await self._refuse(context, grpc.StatusCode.UNAUTHENTICATED, str(exc))
            raise AssertionError("unreachable: abort raises") from exc

        self._stats.streams_opened += 1
        self._stats.streams_active += 1
        stored = 0
        try:
            await self._call(context, self._store.upsert_host, host_id, hello, peer)
            log.info(
                "stream open: host %s (%s, %s) from %s, agent %s",
                host_id,
                hello.host.hostname or "?",
                hello.host.os or "?",
                peer,
                hello.agent_version or "?",
            )
            async for message in request_iterator:
                which = message.WhichOneof("body")
                if which == "batch":
                    batch = message.batch
                    await self._store_batch(context, host_id, batch)
                    stored += 1
                    yield agent_pb2.CollectorMessage(ack=agent_pb2.Ack(sequence=batch.sequence))
                elif which == "heartbeat":
                    await self._call(context, self._store.record_heartbeat, host_id, message.heartbeat)
                    self._stats.heartbeats += 1
                elif which == "hello":  # an agent may re-announce itself (sensors changed); identity stays
                    await self._call(context, self._store.upsert_host, host_id, message.hello, peer)
                elif which == "inventory":
                    self._stats.inventories += 1
                    log.debug("inventory from %s ignored (not stored yet)", host_id)
                else:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty AgentMessage")
        finally:
            self._stats.streams_active -= 1
            log.info("stream closed: host %s, %d batches stored", host_id, stored)

    async def _store_batch(self, context: _Context, host_id: str, batch: agent_pb2.FindingBatch) -> None:
        started = time.perf_counter()
        try:
            result = await self._offload.run(self._store.store_batch, host_id, batch.sequence, batch.findings)
        except InvalidBatch as exc:
            self._stats.batches_invalid += 1
            log.warning("host %s: batch %d refused: %s", host_id, batch.sequence, exc)
            message = f"batch {batch.sequence} refused: {exc}"
        except StoreError as exc:
            self._stats.store_errors += 1
            log.error("host %s: batch %d not stored: %s", host_id, batch.sequence, exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "collector storage unavailable; retry later")
            return
        else:
            self._stats.batches_stored += 1
            self._stats.findings_new += result.new
            self._stats.findings_updated += result.updated
            self._stats.findings_unchanged += result.unchanged
            log.debug(
                "host %s: batch %d stored in %.1f ms: %d new, %d updated, %d unchanged",
                host_id,
                batch.sequence,
                (time.perf_counter() - started) * 1e3,
                result.new,
                result.updated,
                result.unchanged,
            )
            return
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)

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


class EnrollServicer(agent_pb2_grpc.EnrollServiceServicer):
    async def Enroll(
        self,
        request: agent_pb2.EnrollRequest,
        context: aio.ServicerContext[agent_pb2.EnrollRequest, agent_pb2.EnrollResponse],
    ) -> agent_pb2.EnrollResponse:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "enrollment is not implemented in this collector yet; agents connect without TLS on loopback",
        )
        raise AssertionError("unreachable: abort raises")


class CollectorServer:
    """The gRPC service (and optional HTTP API) over one store; the caller owns and closes the store.

    `await start()` binds (port 0 picks a free port; read `grpc_port` / `grpc_address` after),
    `await stop()` stops accepting, gives open streams `grace` seconds, then waits for every
    store write already running.
    """

    def __init__(
        self,
        store: Store,
        grpc_addr: str = "127.0.0.1:50051",
        http_addr: str | None = None,
        *,
        allow_insecure_remote: bool = False,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        grace: float = DEFAULT_GRACE_SECONDS,
    ) -> None:
        self.store = store
        self.stats = ServerStats()
        self._grpc_host, _ = parse_addr(grpc_addr)
        self._grpc_addr = grpc_addr
        self._http_addr = http_addr
        if http_addr is not None:
            parse_addr(http_addr)
        self._allow_insecure_remote = allow_insecure_remote
        self._max_message_bytes = max_message_bytes
        self._grace = grace
        self._offload = _Offloader()
        self._server: aio.Server | None = None
        self._http: HttpApi | None = None
        self.grpc_port = 0

    @property
    def grpc_address(self) -> str:
        return format_addr(self._grpc_host, self.grpc_port)

    @property
    def http_address(self) -> str | None:
        return self._http.address if self._http is not None else None

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "grpc": self.grpc_address, **self.stats.to_dict()}

    async def start(self) -> None:
        if not is_loopback_host(self._grpc_host):
            if self._allow_insecure_remote:
                log.warning(
                    "insecure gRPC on %s: remote agents' claimed host ids are trusted", self._grpc_addr
                )
            else:
                log.info("gRPC on %s without TLS: only loopback agents will be accepted", self._grpc_addr)
        server = aio.server(options=server_options(self._max_message_bytes))
        agent_pb2_grpc.add_StreamServiceServicer_to_server(
            StreamServicer(
                self.store, self.stats, self._offload, allow_insecure_remote=self._allow_insecure_remote
            ),
            server,
        )
        agent_pb2_grpc.add_EnrollServiceServicer_to_server(EnrollServicer(), server)
        _check_bindable(self._grpc_host, self._grpc_addr)
        try:
            port = server.add_insecure_port(self._grpc_addr)
        except RuntimeError as exc:
            raise BindError(f"cannot listen for gRPC on {self._grpc_addr}: {exc}") from None
        if port == 0:
            raise BindError(f"cannot listen for gRPC on {self._grpc_addr}")
        self.grpc_port = port
        await server.start()
        self._server = server
        if self._http_addr is not None:
            try:
                self._http = HttpApi(self.store, self._http_addr, health=self.health)
            except OSError as exc:
                await server.stop(None)
                self._server = None
                raise BindError(
                    f"cannot listen for HTTP on {self._http_addr}: {exc.strerror or exc}"
                ) from None

    async def stop(self, grace: float | None = None) -> None:
        if self._server is not None:
            await self._server.stop(self._grace if grace is None else grace)
            self._server = None
        await self._offload.drain()
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
    allow_insecure_remote: bool = False,
    grace: float = DEFAULT_GRACE_SECONDS,
) -> ServerStats:
    """Run the collector until `stop` is set (forever without one), then stop gracefully.

    `on_listening` is called once both listeners are bound (ports known). The store is not closed.
    """
    server = CollectorServer(
        store, grpc_addr, http_addr, allow_insecure_remote=allow_insecure_remote, grace=grace
    )
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

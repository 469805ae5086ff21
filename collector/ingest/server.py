"""The collector server: the gRPC listeners, the stream and enrollment services, the batch writer,
the fleet monitor and the optional HTTP API, put together and started and stopped as one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_health.v1._async import HealthServicer  # type: ignore[import-untyped]

from ..addr import format_addr, is_loopback_host, parse_addr
from ..console.server import ConsoleServer
from ..query import risk, snapshots
from ..query.activity import host_states
from ..storage.base import Store
from .enroll import EnrollServicer
from .fleet import Fleet
from .limits import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_HELLO_TIMEOUT,
    DEFAULT_MAX_STREAMS_PER_HOST,
    DEFAULT_MONITOR_INTERVAL,
    DEFAULT_SILENT_AFTER,
    ENROLL_SERVICE,
    MAX_CONCURRENT_RPCS,
    MAX_MESSAGE_BYTES,
    STREAM_SERVICE,
)
from .listeners import BindError, ServerTLS, bind, server_options
from .metrics import metrics_endpoint
from .monitor import Monitor
from .offload import Offloader
from .stats import ServerStats, merged_stats, write_worker_stats
from .stream import StreamServicer
from .writer import BatchWriter

log = logging.getLogger(__name__)


class CollectorServer:
    """The gRPC service (and optional console and JSON API) over one store; the caller owns and
    closes the store.

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
        metrics_public: bool = False,
        http_cert: tuple[Path, Path] | None = None,
    ) -> None:
        self.store = store
        self.stats = ServerStats()
        self._reuse_port = reuse_port
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
        self._max_streams_per_host = max_streams_per_host
        self._hello_timeout = hello_timeout
        self._offload = Offloader()
        self._writer = BatchWriter(store, self.stats)
        self._health = HealthServicer()
        self._server: aio.Server | None = None
        self._http: ConsoleServer | None = None
        self._metrics_public = metrics_public
        self._http_cert = http_cert
        self._silent_after = silent_after
        self._primary = primary
        self._next_refresh = 0.0  # monotonic time of the next summary refresh (see _periodic)
        self._monitor = Monitor(
            store,
            self.fleet,
            self.stats,
            self._offload,
            silent_after=silent_after,
            interval=monitor_interval,
            primary=primary,
            periodic=self._periodic,
        )
        self._monitor_task: asyncio.Task[None] | None = None
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
        counters, workers = merged_stats(self.stats, self._stats_dir, self._worker_name)
        return {
            "status": "ok",
            "grpc": self.grpc_address,
            "enroll": self.enroll_address,
            "tls": self._tls is not None,
            "workers": workers,
            **counters,
        }

    def _write_stats(self) -> None:
        write_worker_stats(self.stats, self._stats_dir, self._worker_name)

    def _periodic(self) -> None:
        """The monitor's thread work: publish counters; the primary also refreshes the kept summaries
        and keeps the daily risk snapshot."""
        self._write_stats()
        if not self._primary:
            return
        # While every host streams, every host is dirty: a refresh then costs a grouped pass over
        # their findings. Waiting ten times its last cost between two keeps it to a tenth of a core.
        now = time.monotonic()
        if now >= self._next_refresh:
            risk.refresh(self.store)
            self._next_refresh = time.monotonic() + 10 * (time.monotonic() - now)
        if snapshots.ensure_daily(self.store):
            log.info("daily risk snapshot kept")

    def _host_states(self) -> dict[str, int]:
        return host_states(self.store, self._silent_after)

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
        self.grpc_port, self.enroll_port = bind(server, self._grpc_addr, tls, probe=not self._reuse_port)
        self._writer.start()
        await server.start()
        self._server = server
        self._monitor_task = asyncio.create_task(self._monitor.run())
        if self._http_addr is not None:
            try:
                self._http = ConsoleServer(
                    self.store,
                    self._http_addr,
                    health=self.health,
                    metrics=metrics_endpoint(lambda: self.health(), self._host_states),
                    silent_after=self._silent_after,
                    metrics_public=self._metrics_public,
                    cert=self._http_cert,
                    token_pin=tls.identity.ca.pin if tls is not None else None,
                )
            except (OSError, ValueError) as exc:
                await self.stop(0)
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise BindError(f"cannot serve the console on {self._http_addr}: {reason}") from None

    async def refresh(self) -> None:
        """Reload revocations and the policy now (the monitor does it every interval)."""
        await self._monitor.refresh()

    async def check_silence(self, now: float | None = None) -> None:
        """Mark hosts silent now (the monitor does it every interval)."""
        await self._monitor.check_silence(now)

    async def stop(self, grace: float | None = None) -> None:
        if self._monitor_task is not None:
            self._monitor_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor_task
            self._monitor_task = None
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

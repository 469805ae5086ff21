"""The stream servicer: one bidirectional stream per agent, acked batch by batch.

A stream starts with Hello (anything else: FAILED_PRECONDITION). The identity is the certificate's
common name; the agent must be enrolled and not revoked (PERMISSION_DENIED), and may hold at most
`max_streams_per_host` streams at once (RESOURCE_EXHAUSTED). Batches go to the batch writer, and
each batch is acked only after its commit, in order, so an Ack means "durable". Malformed bytes get
INVALID_ARGUMENT, a batch that can never be stored INVALID_ARGUMENT, storage trouble UNAVAILABLE
(the agent retries later); every refusal is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence

import grpc
from google.protobuf.message import DecodeError
from grpc import aio
from umbra.contract import PROTOCOL_VERSION, STREAM_ACCEPTED
from umbra.v1 import agent_pb2

from .. import health
from ..identity import IdentityError, peer_host_id
from ..storage.base import InvalidBatch, Store, StoreError, hello_row
from .budget import Budget
from .fleet import END, Abort, Fleet, Pending, StreamState
from .limits import (
    DEFAULT_HELLO_TIMEOUT,
    DEFAULT_MAX_STREAMS_PER_HOST,
    MAX_PENDING_BYTES,
    STREAM_SERVICE,
)
from .offload import Offloader
from .stats import ServerStats
from .writer import BatchWriter, Outcome

log = logging.getLogger(__name__)


_Context = aio.ServicerContext[bytes, agent_pb2.CollectorMessage]


class StreamServicer:
    def __init__(
        self,
        store: Store,
        stats: ServerStats,
        offload: Offloader,
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

        state = StreamState(host_id, asyncio.Queue(), hello.policy_version)
        open_streams.add(state)
        self._stats.streams_opened += 1
        self._stats.streams_active += 1
        stored = 0
        reader: asyncio.Task[None] | None = None
        try:
            await self._register(context, host_id, hello, peer)
            log.info(
                "stream open: host %s (%s, %s) from %s, agent %s, policy %d",
                host_id,
                hello.host.hostname or "?",
                hello.host.os or "?",
                peer,
                hello.agent_version or "?",
                hello.policy_version,
            )
            await context.send_initial_metadata((STREAM_ACCEPTED,))  # the agent now knows it is in
            await self._contact(state)
            await self._sensor_health(state, hello.sensors)
            self._push_policy(state)
            reader = asyncio.create_task(self._read(request_iterator, state, peer))
            while True:
                item = await state.out.get()
                if item is END:
                    break
                if isinstance(item, Pending):
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
                elif isinstance(item, Abort):
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

    async def _read(self, request_iterator: AsyncIterator[bytes], state: StreamState, peer: str) -> None:
        """Incoming messages -> batches submitted in order, heartbeats recorded; ends with END or Abort."""
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
                Abort(grpc.StatusCode.UNAVAILABLE, "collector storage unavailable; retry later")
            )
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the transport ended the call: cancelled, oversized, reset
            self._stats.streams_broken += 1
            log.info("stream of %s ended by the transport: %s", state.host_id, exc)
        state.out.put_nowait(END)

    async def _handle(self, raw: bytes, cost: int, state: StreamState, peer: str) -> bool:
        """One incoming message; False when the stream must end (an Abort is queued then)."""
        host_id, out = state.host_id, state.out
        message = self._parse(raw)
        if message is None or message.WhichOneof("body") != "batch":
            self._budget.release(cost)  # only batches wait for the writer
            state.held -= cost
        if message is None:
            malformed = "malformed message (not an AgentMessage)"
            out.put_nowait(Abort(grpc.StatusCode.INVALID_ARGUMENT, malformed))
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
                    fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
                    fut.set_result(exc)
                else:
                    fut = self._writer.submit(prepared)
                out.put_nowait(Pending(batch.sequence, cost, fut))
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
                error = await self._writer.submit_hello(hello_row(host_id, message.hello, peer))
                if error is not None:
                    raise error
                state.policy_version = max(state.policy_version, message.hello.policy_version)
                await self._sensor_health(state, message.hello.sensors)
                self._push_policy(state)
            elif which == "inventory":
                await self._offload.run(self._store.record_inventory, host_id, message.inventory)
                self._stats.inventories += 1
            else:
                out.put_nowait(Abort(grpc.StatusCode.INVALID_ARGUMENT, "empty AgentMessage"))
                return False
        except (
            InvalidBatch
        ) as exc:  # a heartbeat or inventory the store can never keep (a batch's is acked so)
            out.put_nowait(Abort(grpc.StatusCode.INVALID_ARGUMENT, f"{which} refused: {exc}"))
            return False
        return True

    async def _contact(self, state: StreamState) -> None:
        """A host marked silent makes contact: record that it is back."""
        since = self._fleet.silent.pop(state.host_id, None)
        if since is None:
            return
        await self._offload.run(self._store.record_health, state.host_id, health.back(since), 0.0)
        self._stats.hosts_back += 1
        log.info("host %s is back (silent since %s)", state.host_id, time.ctime(since))

    async def _sensor_health(self, state: StreamState, sensors: Sequence[agent_pb2.SensorStatus]) -> None:
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

    def _push_policy(self, state: StreamState) -> None:
        message = self._fleet.policy_for(state.policy_version)
        if message is not None:
            state.policy_version = message.policy.version
            state.out.put_nowait(message)
            self._stats.policy_pushes += 1

    async def _register(self, context: _Context, host_id: str, hello: agent_pb2.Hello, peer: str) -> None:
        """Store the stream's Hello with the writer's next group of Hellos (a reconnecting fleet
        takes one write for many hosts); UNAVAILABLE when the store fails."""
        error = await self._writer.submit_hello(hello_row(host_id, hello, peer))
        if error is None:
            return
        self._stats.store_errors += 1
        log.error("store failed: %s", error)
        await context.abort(grpc.StatusCode.UNAVAILABLE, "collector storage unavailable; retry later")

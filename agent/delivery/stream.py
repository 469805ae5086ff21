"""The gRPC stream to the collector: batches from the spool out, Acks in.

At-least-once by construction: the spool keeps a batch until the collector's Ack (sent
after its commit) and the collector stores by finding id, so a resend after a crash or a
broken stream adds nothing twice. On any failure the stream is dropped, the send cursor
falls back to the last Ack, and the client reconnects after an exponential backoff with
jitter; it never busy-loops while the collector is away.

The channel is mutual TLS when the agent is enrolled (`credentials` gives the identity's
credentials, read again for every session so a renewed certificate is used on the next
connect), plain gRPC otherwise (the collector's loopback development mode). A Policy from
the collector goes to `on_policy`; when that applies it, a fresh Hello tells the collector the
version now in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import grpc
from umbra import contract
from umbra.v1 import agent_pb2 as apb
from umbra.v1 import agent_pb2_grpc as apb_grpc

from agent.delivery.spool import Spool
from agent.identity.credentials import TLS_CHANNEL_OPTIONS

log = logging.getLogger(__name__)

# The collector's initial metadata once it has accepted a stream's Hello (collector/ingest/stream.py).
ACCEPTED_KEY, ACCEPTED_VALUE = contract.STREAM_ACCEPTED

# Both ends must agree on these (the collector's server options say the same).
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # 60 s is above the collector's minimum ping interval (10 s), so it never answers
    # "too many pings"; the collector pings idle agents at the same period.
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 2),
    # gRPC's own reconnect backoff stays below ours: the session loop decides when to retry.
    ("grpc.initial_reconnect_backoff_ms", 1_000),
    ("grpc.max_reconnect_backoff_ms", 5_000),
]
#: Batches in flight and no Ack within this: the session is dead (a collector that accepts the
#: connection but hangs); it is dropped and the batches are resent on the next one.
SESSION_DEADLINE = 60.0


@dataclass(frozen=True)
class Backoff:
    initial: float = 5.0
    multiplier: float = 1.5
    maximum: float = 30.0
    jitter: float = 0.5

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Delay before reconnect attempt `attempt` (0-based), jittered by +/- jitter/2."""
        base = min(self.maximum, self.initial * self.multiplier**attempt)
        return base * (1 + self.jitter * (rng.random() - 0.5))


@dataclass
class StreamStats:
    connected: bool = False
    batches_sent: int = 0
    batches_acked: int = 0
    last_ack_sequence: int = 0
    last_ack_at: float = 0.0  # wall-clock time of the last Ack (0: none yet)
    last_error: str = ""
    reconnects: int = 0
    inventories_sent: int = 0


def _content(inventory: apb.Inventory) -> bytes:
    """What an Inventory says, without when it was taken: models, runtimes and AI tooling alike
    make a change worth sending."""
    bare = apb.Inventory()
    bare.CopyFrom(inventory)
    bare.ClearField("taken_at")
    return bare.SerializeToString(deterministic=True)


class StreamClient:
    def __init__(
        self,
        address: str,
        spool: Spool,
        hello: Callable[[], apb.Hello],
        heartbeat: Callable[[], apb.Heartbeat],
        *,
        batch_size: int = 500,
        max_in_flight: int = 4,
        heartbeat_interval: float = 30.0,
        backoff: Backoff | None = None,
        credentials: Callable[[], grpc.ChannelCredentials | None] | None = None,
        on_policy: Callable[[apb.Policy], bool] | None = None,
        inventory: Callable[[], apb.Inventory | None] | None = None,
    ) -> None:
        self.address = address
        self.spool = spool
        self._hello = hello
        self._heartbeat = heartbeat
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.heartbeat_interval = heartbeat_interval
        self.backoff = backoff or Backoff()
        self._credentials = credentials
        self._on_policy = on_policy
        self._inventory = inventory
        self.stats = StreamStats()
        self._wakeup = asyncio.Event()
        self._rng = random.Random()
        self._cursor = 0
        self._progress = 0.0  # monotonic time of the session's start or its last Ack
        self._sent_inventory: bytes | None = None  # what this session last sent (None: nothing yet)
        self._lost = False  # the collector is away: say so once, not at every retry
        self._acked_once = False
        self._tls = False  # whether the current session's channel is mutual TLS
        self._inventory_logged = False
        self._inventory_models = 0
        self.session_deadline = SESSION_DEADLINE

    def notify(self) -> None:
        """New findings are in the spool."""
        self._wakeup.set()

    @property
    def send_cursor(self) -> int:
        """Spool rows after this sequence are not in flight (the spool may replace them)."""
        return self._cursor

    async def run(self, stop: asyncio.Event) -> None:
        """Stream until `stop` is set, reconnecting with backoff."""
        attempt = 0
        while not stop.is_set():
            acked_before = self.stats.batches_acked
            try:
                await self._session(stop)
            except (grpc.aio.AioRpcError, ConnectionError, OSError) as exc:
                self.stats.last_error = _describe(exc)
                if stop.is_set():
                    pass
                elif not self._lost:
                    self._lost = True
                    verb = "lost the collector" if self.stats.connected else "cannot reach the collector"
                    log.warning(
                        "%s %s: %s; retrying with backoff, findings wait in the spool",
                        verb,
                        self.address,
                        self.stats.last_error,
                    )
                else:
                    log.debug("collector %s still away: %s", self.address, self.stats.last_error)
            finally:
                self.stats.connected = False
                self._cursor = 0  # resend everything not yet acknowledged
            if stop.is_set():
                break
            # A session that got acks was healthy: start the backoff again from the beginning.
            attempt = 0 if self.stats.batches_acked > acked_before else attempt + 1
            delay = self.backoff.delay(max(attempt - 1, 0), self._rng)
            self.stats.reconnects += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    def _channel(self) -> grpc.aio.Channel:
        try:
            creds = self._credentials() if self._credentials is not None else None
        except Exception as exc:  # a damaged identity file: say so, and retry with backoff
            raise ConnectionError(f"cannot load this agent's certificate: {exc}") from exc
        self._tls = creds is not None
        if creds is None:
            return grpc.aio.insecure_channel(self.address, options=CHANNEL_OPTIONS)
        return grpc.aio.secure_channel(self.address, creds, options=[*CHANNEL_OPTIONS, *TLS_CHANNEL_OPTIONS])

    async def _session(self, stop: asyncio.Event) -> None:
        async with self._channel() as channel:
            stub = apb_grpc.StreamServiceStub(channel)
            # Unbounded, but holds at most max_in_flight batches plus a heartbeat or two.
            outbox: asyncio.Queue[apb.AgentMessage | None] = asyncio.Queue()
            call = stub.Stream(_drain(outbox))
            outbox.put_nowait(apb.AgentMessage(hello=self._hello()))
            in_flight = asyncio.Semaphore(self.max_in_flight)
            sent: list[int] = []  # sequences sent and not yet acknowledged, ascending
            reader = asyncio.create_task(self._read_acks(call, in_flight, sent, outbox))
            stopper = asyncio.create_task(stop.wait())
            self._cursor = 0
            last_heartbeat = self._progress = time.monotonic()
            self._sent_inventory = None  # a new session gets the inventory again
            self._send_inventory(outbox)
            try:
                while not stop.is_set():
                    if reader.done():
                        reader.result()  # raises the stream's error
                        return
                    if sent and time.monotonic() - self._progress > self.session_deadline:
                        raise ConnectionError(f"no Ack from the collector in {self.session_deadline:.0f} s")
                    if not await _first(in_flight.acquire(), reader, stopper, timeout=self.session_deadline):
                        continue
                    self._wakeup.clear()  # before leasing, so a notify after it is not lost
                    if self._sent_inventory is None:  # as soon as the first full scan is done
                        self._send_inventory(outbox)
                    batch = self.spool.lease(self._cursor, self.batch_size)
                    if batch:
                        sequence = batch[-1].seq
                        if not sent:  # the deadline counts from the oldest unacknowledged batch
                            self._progress = time.monotonic()
                        sent.append(sequence)
                        self._cursor = sequence
                        outbox.put_nowait(
                            apb.AgentMessage(
                                batch=apb.FindingBatch(sequence=sequence, findings=[b.finding for b in batch])
                            )
                        )
                        self.stats.batches_sent += 1
                    else:
                        in_flight.release()
                    now = time.monotonic()
                    if now - last_heartbeat >= self.heartbeat_interval:
                        outbox.put_nowait(apb.AgentMessage(heartbeat=self._heartbeat()))
                        self._send_inventory(outbox)
                        last_heartbeat = now
                    if not batch:
                        timeout = max(0.05, self.heartbeat_interval - (now - last_heartbeat))
                        if sent:  # wake up in time to notice a collector that stopped acking
                            timeout = min(timeout, max(0.05, self._progress + self.session_deadline - now))
                        await _first(self._wakeup.wait(), reader, stopper, timeout=timeout)
            finally:
                stopper.cancel()
                outbox.put_nowait(None)
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError, ConnectionError):
                    await reader
                call.cancel()

    def _log_inventory(self) -> None:
        """Say once that the inventory went, when it went over an accepted stream."""
        if self._sent_inventory is not None and self.stats.connected and not self._inventory_logged:
            self._inventory_logged = True
            log.info("inventory sent: %d model files on this host", self._inventory_models)

    def _accepted(self) -> None:
        """The collector took our Hello: this session is connected."""
        self.stats.connected = True
        log.info(
            "connected to the collector %s (%s)%s",
            self.address,
            "mutual TLS" if self._tls else "plain gRPC",
            " again; sending what waited in the spool" if self._lost else "",
        )
        self._lost = False
        self._log_inventory()

    def _send_inventory(self, outbox: asyncio.Queue[apb.AgentMessage | None]) -> None:
        """What is on the host now, when it differs from what this session last sent."""
        current = self._inventory() if self._inventory is not None else None
        if current is None:
            return
        content = _content(current)
        if content != self._sent_inventory:
            outbox.put_nowait(apb.AgentMessage(inventory=current))
            self._sent_inventory = content
            self._inventory_models = len(current.models)
            self.stats.inventories_sent += 1
            self._log_inventory()

    async def _read_acks(
        self,
        call: grpc.aio.StreamStreamCall[apb.AgentMessage, apb.CollectorMessage],
        in_flight: asyncio.Semaphore,
        sent: list[int],
        outbox: asyncio.Queue[apb.AgentMessage | None],
    ) -> None:
        metadata = await call.initial_metadata()
        if metadata is not None and (ACCEPTED_KEY, ACCEPTED_VALUE) in tuple(metadata):
            self._accepted()
        async for message in call:
            if message.HasField("ack"):
                if not self.stats.connected:  # a collector that sends no initial metadata
                    self._accepted()
                sequence = message.ack.sequence
                self._progress = time.monotonic()
                removed = await asyncio.to_thread(self.spool.commit, sequence)
                self.stats.last_ack_sequence = sequence
                self.stats.last_ack_at = time.time()
                while sent and sent[0] <= sequence:
                    sent.pop(0)
                    in_flight.release()
                    self.stats.batches_acked += 1
                log.debug("ack %d: %d findings committed", sequence, removed)
                if not self._acked_once:
                    self._acked_once = True
                    log.info(
                        "collector %s acknowledged the first batch (sequence %d): findings are stored",
                        self.address,
                        sequence,
                    )
                self._wakeup.set()
            elif message.HasField("policy"):
                applied = False
                if self._on_policy is not None:
                    applied = await asyncio.to_thread(self._on_policy, message.policy)
                else:
                    log.info(
                        "policy version %d received; this agent does not apply policies",
                        message.policy.version,
                    )
                if applied:  # tell the collector which version is now in force
                    outbox.put_nowait(apb.AgentMessage(hello=self._hello()))
        raise ConnectionError("collector closed the stream")


async def _drain(queue: asyncio.Queue[apb.AgentMessage | None]) -> AsyncIterator[apb.AgentMessage]:
    while (message := await queue.get()) is not None:
        yield message


async def _first(
    aw: Coroutine[Any, Any, Any], *watch: asyncio.Task[Any], timeout: float | None = None
) -> bool:
    """Await `aw` unless a watched task finishes (or the timeout passes) first.

    Returns True when `aw` completed, even in the instant it was being cancelled (so a
    semaphore acquired then is not leaked); False when it was cancelled first.
    """
    task = asyncio.ensure_future(aw)
    await asyncio.wait({task, *watch}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        return not task.cancelled()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return task.done() and not task.cancelled()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__

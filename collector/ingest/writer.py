"""The batch writer: one thread that stores batches, many agents' batches per transaction (group
commit), and the Hellos waiting beside them in one transaction before those."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from ..storage.base import HelloRow, InvalidBatch, PreparedBatch, Store, StoreError, StoreResult
from .limits import MAX_FINDINGS_PER_COMMIT
from .stats import ServerStats

log = logging.getLogger(__name__)

Outcome = StoreResult | InvalidBatch | StoreError
T = TypeVar("T")


@dataclass
class _Job:
    batch: PreparedBatch
    future: asyncio.Future[Outcome]
    loop: asyncio.AbstractEventLoop


@dataclass
class _HelloJob:
    row: HelloRow
    future: asyncio.Future[StoreError | None]
    loop: asyncio.AbstractEventLoop


def _settle(fut: asyncio.Future[T], outcome: T) -> None:
    if not fut.done():
        fut.set_result(outcome)


class BatchWriter:
    """One thread that stores batches, grouping all batches waiting at once into one transaction,
    and the Hellos waiting with them into one more (a fleet reconnecting at once: one disk sync
    for many hosts, not one each).

    Futures resolve to the outcome (never raise), so an abandoned stream leaves no unretrieved
    exception behind.
    """

    def __init__(self, store: Store, stats: ServerStats, max_findings: int = MAX_FINDINGS_PER_COMMIT) -> None:
        self._store = store
        self._stats = stats
        self._max_findings = max_findings
        self._queue: queue.SimpleQueue[_Job | _HelloJob | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="umbra-batch-writer", daemon=True)
        self._started = False

    def start(self) -> None:
        self._thread.start()
        self._started = True

    def submit(self, batch: PreparedBatch) -> asyncio.Future[Outcome]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Outcome] = loop.create_future()
        self._queue.put(_Job(batch, fut, loop))
        return fut

    def submit_hello(self, row: HelloRow) -> asyncio.Future[StoreError | None]:
        """Register a host from its Hello in the writer's next group; None once stored."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[StoreError | None] = loop.create_future()
        self._queue.put(_HelloJob(row, fut, loop))
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
            jobs: list[_Job] = []
            hellos: list[_HelloJob] = []
            size = 0
            while True:
                if isinstance(job, _HelloJob):
                    hellos.append(job)
                else:
                    jobs.append(job)
                    size += job.batch.size
                if size >= self._max_findings:
                    break
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                job = more
            if hellos:
                self._store_hellos(hellos)
            if jobs:
                self._store_batches(jobs)

    def _store_hellos(self, hellos: list[_HelloJob]) -> None:
        outcome: StoreError | None = None
        try:
            self._store.upsert_hosts([h.row for h in hellos])
        except StoreError as exc:
            outcome = exc
        except Exception as exc:  # a backend bug: fail these Hellos, keep the writer alive
            log.exception("batch writer failed")
            outcome = StoreError(f"{type(exc).__name__}: {exc}")
        for h in hellos:
            with contextlib.suppress(RuntimeError):  # the loop is gone (shutdown)
                h.loop.call_soon_threadsafe(_settle, h.future, outcome)

    def _store_batches(self, jobs: list[_Job]) -> None:
        outcomes: Sequence[Outcome]
        try:
            started = time.perf_counter()
            outcomes = self._store.store_prepared([j.batch for j in jobs])
            self._stats.store_latency(time.perf_counter() - started)
            self._stats.commits += 1
        except StoreError as exc:
            outcomes = [exc] * len(jobs)
        except Exception as exc:  # a backend bug: fail these batches, keep the writer alive
            log.exception("batch writer failed")
            outcomes = [StoreError(f"{type(exc).__name__}: {exc}")] * len(jobs)
        for j, outcome in zip(jobs, outcomes, strict=True):
            with contextlib.suppress(RuntimeError):  # the loop is gone (shutdown)
                j.loop.call_soon_threadsafe(_settle, j.future, outcome)

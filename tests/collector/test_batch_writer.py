"""The batch writer's grouping (collector/ingest/writer.py) over a real SQLite store: the Hellos
that wait while it writes are stored together, in one transaction, before its next batches."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

from collector_testkit import build_finding, build_hello

from collector.ingest.stats import ServerStats
from collector.ingest.writer import BatchWriter
from collector.storage.base import HelloRow, hello_row
from collector.storage.sqlite import SQLiteStore


class GatedStore(SQLiteStore):
    """Records each upsert_hosts call's size; the first call waits until the test opens the gate,
    so everything submitted meanwhile queues behind it."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.gate = threading.Event()

    def upsert_hosts(self, rows: Sequence[HelloRow]) -> None:
        self.calls.append([r.host_id for r in rows])
        if len(self.calls) == 1:
            self.entered.set()
            assert self.gate.wait(10), "the test never opened the gate"
        super().upsert_hosts(rows)


def test_hellos_waiting_while_the_writer_works_are_stored_in_one_group(tmp_path: Path) -> None:
    store = GatedStore(str(tmp_path / "c.db"))

    async def main() -> list[object]:
        writer = BatchWriter(store, ServerStats())
        writer.start()
        first = writer.submit_hello(hello_row("h0", build_hello("h0", "ws-0"), "p"))
        assert await asyncio.to_thread(store.entered.wait, 10)
        rest = [
            writer.submit_hello(hello_row(f"h{i}", build_hello(f"h{i}", f"ws-{i}"), "p"))
            for i in range(1, 51)
        ]
        batch = writer.submit(store.prepare("h7", 1, [build_finding("a")]))
        store.gate.set()
        outcomes = await asyncio.gather(first, *rest, batch)
        await writer.close()
        return outcomes

    outcomes = asyncio.run(main())
    assert outcomes[:-1] == [None] * 51  # every Hello stored
    assert store.calls == [["h0"], [f"h{i}" for i in range(1, 51)]]  # two transactions, not 51
    assert len(store.hosts()) == 51
    hosts = {h.host_id: h for h in store.hosts()}
    assert store.findings()[0]["host_id"] == "h7" and hosts["h7"].last_sequence == 1
    store.close()


def test_a_failed_group_of_hellos_reports_the_error_to_each(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "c.db"))
    store.close()  # every write now fails with StoreError

    async def main() -> list[object]:
        writer = BatchWriter(store, ServerStats())
        writer.start()
        futures = [writer.submit_hello(hello_row(f"h{i}", build_hello(f"h{i}"), "p")) for i in range(3)]
        outcomes = await asyncio.gather(*futures)
        await writer.close()
        return outcomes

    outcomes = asyncio.run(main())
    assert len(outcomes) == 3 and all("closed" in str(o) for o in outcomes)

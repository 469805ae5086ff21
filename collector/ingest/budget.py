"""The global memory bound of ingest: bytes of batches received and not yet stored."""

from __future__ import annotations

import asyncio
import collections


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

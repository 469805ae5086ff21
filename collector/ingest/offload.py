"""Blocking store calls run in threads, remembered so shutdown can wait for them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class Offloader:
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

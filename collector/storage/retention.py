"""Retention: `serve --retention 90d` forgets findings not seen for that long, periodically.

Each backend does the dropping (`Store.drop_before`: PostgreSQL drops day partitions, SQLite
deletes rows); this loop only decides when. It runs once at start, then every `every` seconds.
Several collectors on one database may all run it: a pass that finds nothing to drop is cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from .base import Store, StoreError

log = logging.getLogger(__name__)

#: How often a pass runs: at most hourly, so a day partition goes within the hour it expires.
DEFAULT_EVERY = 3600.0


async def retention_loop(
    store: Store,
    keep: float,
    stop: asyncio.Event,
    *,
    every: float = DEFAULT_EVERY,
    clock: Callable[[], float] = time.time,
) -> None:
    """Until `stop` is set: drop what was last seen more than `keep` seconds ago, then wait."""
    while not stop.is_set():
        cutoff = clock() - keep
        try:
            await asyncio.to_thread(store.drop_before, cutoff)
            log.info(
                "retention: findings last seen before %s dropped", time.strftime("%F %T", time.gmtime(cutoff))
            )
        except StoreError as exc:  # the database is away: try again at the next pass
            log.error("retention: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)

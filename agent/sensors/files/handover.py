"""A bounded hand-over of items from one thread to another: when full, an item is dropped and
counted, so a flood costs memory up to the limit and a number in the sensor's status."""

from __future__ import annotations

import collections
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class Handover(Generic[T]):
    def __init__(self, limit: int) -> None:
        self._lock = threading.Lock()
        self._items: collections.deque[T] = collections.deque()
        self._limit = limit
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Queue `item`; False when it was redundant or dropped."""
        with self._lock:
            if self._items and self._repeats(self._items[-1], item):
                return False
            if len(self._items) >= self._limit:
                self.dropped += 1
                return False
            self._items.append(item)
            return True

    def take(self) -> list[T]:
        """Everything queued, oldest first; the queue is empty after."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
        return items

    def _repeats(self, last: T, item: T) -> bool:
        """Whether `item` adds nothing after `last` (called under the lock)."""
        return False

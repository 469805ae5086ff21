"""The bytes a parser may look at: a head, maybe a tail, maybe a few more bounded reads.

Parsers never open files. They ask a `Window` for bytes at an offset; the window answers from
the head or tail it holds, or reads more through its reader while its byte and call budgets
last, or raises `Unavailable`. Asking past the end of the file raises `Malformed` (the header
points beyond the file, so the file is truncated or lies). `identify_header` builds a window
from the caller's bytes only; `identify_file` gives it a positioned reader (os.pread), so the
zip family can reach its central directory and ONNX the fields after the graph.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

from agent.modelfiles.model import Malformed, Unavailable

__all__ = ["Reader", "Window"]

Reader = Callable[[int, int], bytes]
"""(offset, length) -> exactly the bytes there (fewer only at end of file)."""

#: Reads a window makes beyond its head and tail, at most.
MAX_READS: Final = 64


class Window:
    """Bounded random access to one file's bytes (see the module docstring)."""

    __slots__ = ("_budget", "_reads", "head", "reader", "size", "tail", "tail_start", "total_read")

    def __init__(
        self,
        size: int,
        head: bytes,
        tail: bytes = b"",
        reader: Reader | None = None,
        budget: int = 0,
    ) -> None:
        self.size = max(size, len(head))
        self.head = head
        self.tail = tail if len(tail) <= self.size else tail[-self.size :]
        self.tail_start = self.size - len(self.tail)
        self.reader = reader
        self._budget = budget if reader is not None else 0
        self._reads = 0
        self.total_read = len(head) + len(self.tail)

    @property
    def complete(self) -> bool:
        """True when the head holds the whole file."""
        return len(self.head) >= self.size

    def can_read(self, n: int) -> bool:
        return self.reader is not None and n <= self._budget and self._reads < MAX_READS

    def at(self, offset: int, n: int) -> bytes:
        """Exactly `n` bytes at `offset`."""
        if offset < 0 or n < 0:
            raise Malformed(f"negative offset or length ({offset}, {n})")
        if offset + n > self.size:
            raise Malformed(f"{n} bytes at offset {offset} run past the end of the {self.size}-byte file")
        if offset + n <= len(self.head):
            return self.head[offset : offset + n]
        if offset >= self.tail_start:
            return self.tail[offset - self.tail_start : offset - self.tail_start + n]
        if not self.can_read(n):
            raise Unavailable(f"{n} bytes at offset {offset} are beyond what this call may read")
        assert self.reader is not None
        self._budget -= n
        self._reads += 1
        data = self.reader(offset, n)
        self.total_read += len(data)
        if len(data) != n:
            raise Malformed(f"file ended at {offset + len(data)} while reading (changed under us?)")
        return data

    def up_to(self, offset: int, n: int) -> bytes:
        """Up to `n` bytes at `offset`, fewer at the end of the file (never past it)."""
        return self.at(offset, max(0, min(n, self.size - offset)))

    def grow_head(self, n: int) -> bool:
        """Make the head the first min(n, size) bytes, reading what is missing. False when the
        budget does not allow it (the head stays as it was)."""
        want = min(n, self.size)
        have = len(self.head)
        if want <= have:
            return True
        if not self.can_read(want - have):
            return False
        self.head = self.head + self.at(have, want - have)
        return True

    def u32(self, offset: int) -> int:
        return int(struct.unpack("<I", self.at(offset, 4))[0])

    def u64(self, offset: int) -> int:
        return int(struct.unpack("<Q", self.at(offset, 8))[0])

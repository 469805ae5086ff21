"""The first bytes of a file, read without blocking on a FIFO or taking a terminal, and never
from anything but a regular file ("" when it cannot be read)."""

from __future__ import annotations

import os
import stat


def peek(path: str, n: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError:
        return b""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        return os.pread(fd, n, 0)
    except OSError:
        return b""
    finally:
        os.close(fd)

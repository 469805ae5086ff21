"""Which process holds a file open for writing: a bounded walk of /proc/*/fd (Linux only)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Final

from agent.system import procfs

MAX_WRITER_PIDS: Final = 512
WRITER_BUDGET_S: Final = 0.05


def find_writer(
    dev: int,
    ino: int,
    *,
    first: Iterable[int] = (),
    max_pids: int = MAX_WRITER_PIDS,
    budget_s: float = WRITER_BUDGET_S,
) -> int | None:
    """The process holding (dev, ino) open for writing: hinted PIDs first, then the newest PIDs
    (highest numbers), at most `max_pids` processes and `budget_s` seconds."""
    me = os.getpid()
    deadline = time.monotonic() + budget_s
    try:
        pids = sorted((int(p) for p in os.listdir("/proc") if p.isdigit()), reverse=True)
    except OSError:
        return None
    ordered = list(dict.fromkeys([*first, *pids]))[:max_pids]
    for pid in ordered:
        if pid == me:
            continue
        if time.monotonic() > deadline:
            return None
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds[: procfs.MAX_FDS]:
            try:
                st = os.stat(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if st.st_ino == ino and st.st_dev == dev and _writable(pid, fd):
                return pid
    return None


def _writable(pid: int, fd: str) -> bool:
    flags = procfs.fd_flags(pid, fd)
    return flags is not None and flags & procfs.WRITE_FLAGS != 0

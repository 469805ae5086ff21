"""The TCP listening sockets of followed processes, read again only when they may have changed.

Asking psutil for a process's connections reads all of its descriptors and the whole socket tables
of its network namespace: on a workstation with dozens of Python processes (language servers,
notebooks, test runs), doing that for each of them every poll was most of the agent's steady CPU.
A process's listening sockets can only change when the host's set of listening sockets changes,
so each poll reads that set once (the LISTEN rows of /proc/net/tcp and tcp6: their inodes) and
asks psutil again only for a process that is new, lives in another network namespace (whose
listeners that set does not show), was last asked longer than `max_age` ago (a listener handed to
another process keeps its inode), or when the set changed. Elsewhere than Linux, every poll asks.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Final

import psutil

from agent.observations import ListeningSocket

__all__ = ["ListeningSockets", "listening_sockets"]

_LINUX: Final = platform.system() == "Linux"
_GONE: Final = (psutil.NoSuchProcess, psutil.ZombieProcess)
_TCP_LISTEN: Final = "0A"  # include/net/tcp_states.h, as /proc/net/tcp prints it


def listening_sockets(pid: int) -> tuple[ListeningSocket, ...] | None:
    """TCP listening sockets of a process; () when hidden from us, None when it is gone."""
    try:
        conns = psutil.Process(pid).net_connections(kind="inet")
    except _GONE:
        return None
    except psutil.AccessDenied:
        return ()
    found = {
        ListeningSocket(c.laddr.ip, c.laddr.port, "tcp")
        for c in conns
        if c.status == psutil.CONN_LISTEN and c.laddr
    }
    return tuple(sorted(found, key=lambda s: (s.port, s.address)))


def _listen_inodes(proc: str) -> frozenset[int] | None:
    """Inodes of the listening TCP sockets in the agent's network namespace; None when unreadable."""
    inodes: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"{proc}/net/{table}", encoding="ascii", errors="replace") as f:
                next(f, None)  # the header
                for line in f:
                    fields = line.split()
                    if len(fields) > 9 and fields[3] == _TCP_LISTEN:
                        inodes.add(int(fields[9]))
        except FileNotFoundError:  # no IPv6 here
            continue
        except (OSError, ValueError):
            return None
    return frozenset(inodes)


def _netns(proc: str, pid: int | str) -> str:
    try:
        return os.readlink(f"{proc}/{pid}/ns/net")
    except OSError:
        return ""


class ListeningSockets:
    def __init__(self, max_age: float = 15.0, proc: str = "/proc") -> None:
        self._max_age = max_age
        self._proc = proc
        self._own_netns = _netns(proc, "self") if _LINUX else ""
        self._listen: frozenset[int] | None = None
        self._known: dict[int, tuple[float, tuple[ListeningSocket, ...]]] = {}  # pid -> (when, sockets)

    def begin_poll(self) -> None:
        """Read the host's listening set; when it changed, every process is asked again."""
        listen = _listen_inodes(self._proc) if _LINUX and self._own_netns else None
        if listen is None or listen != self._listen:
            self._known.clear()
        self._listen = listen

    def of(self, pid: int, now: float | None = None) -> tuple[ListeningSocket, ...] | None:
        now = time.monotonic() if now is None else now
        known = self._known.get(pid)
        if (
            known is not None
            and now - known[0] < self._max_age
            and _netns(self._proc, pid) == self._own_netns
        ):
            return known[1]
        sockets = listening_sockets(pid)
        if sockets is None:
            self._known.pop(pid, None)
        elif self._listen is not None:
            self._known[pid] = (now, sockets)
        return sockets

    def forget(self, pid: int) -> None:
        self._known.pop(pid, None)

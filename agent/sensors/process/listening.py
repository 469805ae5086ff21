"""The TCP listening sockets of followed processes, read again only when they may have changed.

Asking psutil for a process's connections reads all of its descriptors and the whole socket tables
of its network namespace: on a workstation with dozens of Python processes (language servers,
notebooks, test runs), doing that for each of them every poll was most of the agent's steady CPU,
and on a host with many sockets the tables' parsing stayed the largest part of it even when only
the processes a change concerned were asked. So each poll reads the host's set of listening
sockets once (inode, address and port of each listener: from the kernel's socket diagnostics,
filtered to the LISTEN state, else the LISTEN rows of /proc/net/tcp and tcp6), and a process's
listeners are the ones among its descriptors (`socket:[inode]` links), with no socket table read.
The answer is kept, and read again only for a process that is new, was last read longer than
`max_age` ago (a listener handed to another process keeps its inode), listened on a port whose
socket closed, or holds a socket that started listening. A process in another network namespace
(whose listeners that set does not show) is asked through psutil, as is every process elsewhere
than Linux.
"""

from __future__ import annotations

import os
import platform
import socket
import struct
import time
from typing import Final

import psutil

from agent.observations import ListeningSocket
from agent.system.sockdiag import tcp_listeners

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


def _listeners(proc: str) -> dict[int, tuple[str, int]] | None:
    """Inode -> (address, port) of the listening TCP sockets in the agent's network namespace;
    None when unreadable."""
    found: dict[int, tuple[str, int]] = {}
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            with open(f"{proc}/net/{table}", encoding="ascii", errors="replace") as f:
                next(f, None)  # the header
                for line in f:
                    fields = line.split()
                    if len(fields) > 9 and fields[3] == _TCP_LISTEN:
                        address, _, port = fields[1].partition(":")
                        found[int(fields[9])] = (_table_address(family, address), int(port, 16))
        except FileNotFoundError:  # no IPv6 here
            continue
        except (OSError, ValueError):
            return None
    return found


def _table_address(family: int, printed: str) -> str:
    """An address as /proc/net/tcp prints it: each 32-bit word of the network-order address as the
    host's integer, in hex."""
    words = [int(printed[i : i + 8], 16) for i in range(0, len(printed), 8)]
    return socket.inet_ntop(family, struct.pack(f"={len(words)}I", *words))


def _held(proc: str, pid: int, listen: dict[int, tuple[str, int]]) -> tuple[ListeningSocket, ...] | None:
    """The listening sockets among `pid`'s descriptors (by inode, in the host's listening set);
    None when it is gone, () when its descriptors are hidden from us."""
    fd_dir = f"{proc}/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except FileNotFoundError:
        return None
    except OSError:
        return ()
    found = set()
    for fd in fds:
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            listener = listen.get(int(target[8:-1]))
            if listener is not None:
                found.add(ListeningSocket(listener[0], listener[1], "tcp"))
    if not fds and not os.path.exists(f"{proc}/{pid}/exe"):  # a zombie: as good as gone
        return None
    return tuple(sorted(found, key=lambda s: (s.port, s.address)))


def _holds_any(proc: str, pid: int, inodes: set[int]) -> bool:
    """Whether `pid` has a descriptor on one of `inodes` (True when that cannot be read)."""
    wanted = {f"socket:[{i}]" for i in inodes}
    try:
        for fd in os.listdir(f"{proc}/{pid}/fd"):
            try:
                if os.readlink(f"{proc}/{pid}/fd/{fd}") in wanted:
                    return True
            except OSError:
                continue
    except OSError:
        return True
    return False


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
        self._listen: dict[int, tuple[str, int]] | None = None  # inode -> (address, port)
        self._known: dict[int, tuple[float, tuple[ListeningSocket, ...]]] = {}  # pid -> (when, sockets)

    def begin_poll(self) -> None:
        """Read the host's listening set; forget the answers it may have made wrong: processes
        listening on a port that closed, processes that hold a socket that started listening."""
        listen = None
        if _LINUX and self._own_netns:
            listen = tcp_listeners() if self._proc == "/proc" else None
            if listen is None:  # no sock_diag (or another /proc): the text tables
                listen = _listeners(self._proc)
        before = self._listen
        self._listen = listen
        if listen is None or before is None:
            self._known.clear()
            return
        closed = {port for inode, (_, port) in before.items() if inode not in listen}
        opened = {inode for inode in listen if inode not in before}
        for pid, (_, sockets) in list(self._known.items()):
            if any(s.port in closed for s in sockets) or (opened and _holds_any(self._proc, pid, opened)):
                del self._known[pid]

    def of(self, pid: int, now: float | None = None) -> tuple[ListeningSocket, ...] | None:
        now = time.monotonic() if now is None else now
        here = _netns(self._proc, pid) == self._own_netns  # else the listening set says nothing
        known = self._known.get(pid)
        if known is not None and here and now - known[0] < self._max_age:
            return known[1]
        if here and self._listen is not None:  # its descriptors against the listening set
            sockets = _held(self._proc, pid, self._listen)
        else:
            sockets = listening_sockets(pid)
        if sockets is None or not here or self._listen is None:
            self._known.pop(pid, None)
        else:
            self._known[pid] = (now, sockets)
        return sockets

    def forget(self, pid: int) -> None:
        self._known.pop(pid, None)

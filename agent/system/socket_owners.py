"""Which process holds a socket: socket inode -> pid, from /proc/PID/fd, kept warm cheaply.

The kernel has no reverse index from a socket to the processes holding it; `ss -p`, lsof and
psutil read every descriptor of every process (tens of milliseconds on a workstation, far too
slow to run while a 20 ms connection is still open). This map reads as little as it can:

1. an inode seen before answers at once (every scan records every socket a process holds);
2. else processes that appeared since the last look are read first, newest first (a short
   client is a new process: `curl`, a script, a forked worker);
3. then processes that held sockets before, the most recent owner first (a browser or an SDK
   server opens connection after connection);
4. then the rest, those of the socket's own uid first.

It stops at the first process that holds the inode. A process whose descriptors cannot be
read (another user's, without root) is skipped. Memory is bounded by `max_inodes`.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Final

__all__ = ["SocketOwners"]

MAX_INODES: Final = 65536
_PREFIX: Final = "socket:["


class SocketOwners:
    """inode -> pid over /proc (Linux). Not thread-safe: one caller at a time."""

    def __init__(self, proc: str = "/proc", max_inodes: int = MAX_INODES) -> None:
        self._proc = proc
        self._max = max_inodes
        self._owner: OrderedDict[int, int] = OrderedDict()  # inode -> pid
        self._held: dict[int, set[int]] = {}  # pid -> inodes it held at its last scan
        self._recent: OrderedDict[int, None] = OrderedDict()  # socket holders, most recent last
        self._known: set[int] = set()  # pids listed at the last look
        self.scans = 0  # processes whose descriptors were read (the cost, for the benchmark)

    def warm(self) -> None:
        """Read every process once (at start, so the first lookup is cheap)."""
        self._find(-1, None)

    def owner(self, inode: int, uid: int | None = None) -> int | None:
        """The pid holding socket `inode`; None when no readable process holds it."""
        if inode <= 0:
            return None
        pid = self._owner.get(inode)
        if pid is not None and os.path.exists(f"{self._proc}/{pid}/fd"):
            return pid
        return self._find(inode, uid)

    # --- internals ----------------------------------------------------------------------------

    def _find(self, inode: int, uid: int | None) -> int | None:
        listed = self._list()
        if not listed:
            return None
        new = sorted(listed - self._known, reverse=True)
        self._known = listed
        for pid in [p for p in self._held if p not in listed]:
            self._forget(pid)
        for pid in new:
            if self._scan(pid, inode):
                return pid
        fresh = set(new)
        for pid in reversed(list(self._recent)):
            if pid not in fresh and self._scan(pid, inode):
                return pid
        rest = [p for p in listed if p not in fresh and p not in self._recent]
        if uid is not None:
            rest.sort(key=lambda p: self._uid(p) != uid)
        for pid in rest:
            if self._scan(pid, inode):
                return pid
        return None

    def _list(self) -> set[int]:
        try:
            return {int(name) for name in os.listdir(self._proc) if name.isdigit()}
        except OSError:
            return set()

    def _uid(self, pid: int) -> int:
        try:
            return os.stat(f"{self._proc}/{pid}").st_uid
        except OSError:
            return -1

    def _scan(self, pid: int, wanted: int) -> bool:
        """Read one process's descriptors, record its sockets; True when it holds `wanted`."""
        self.scans += 1
        fd_dir = f"{self._proc}/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone, or not ours to read
            return False
        held: set[int] = set()
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target.startswith(_PREFIX):
                try:
                    held.add(int(target[len(_PREFIX) : -1]))
                except ValueError:
                    continue
        for gone in self._held.get(pid, set()) - held:
            if self._owner.get(gone) == pid:
                del self._owner[gone]
        if held:
            self._held[pid] = held
            self._recent[pid] = None
            self._recent.move_to_end(pid)
            for inode in held:
                self._owner[inode] = pid
                self._owner.move_to_end(inode)
            while len(self._owner) > self._max:
                self._owner.popitem(last=False)
        else:
            self._held.pop(pid, None)
            self._recent.pop(pid, None)
        return wanted in held

    def _forget(self, pid: int) -> None:
        for inode in self._held.pop(pid, set()):
            if self._owner.get(inode) == pid:
                del self._owner[inode]
        self._recent.pop(pid, None)

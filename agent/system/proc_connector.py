"""Linux's process connector: the kernel tells us about every exec as it happens.

Polling PIDs finds new processes but misses a process that `exec`s into a model runtime
after we first looked at it (a launcher script, `sh -c 'exec ollama serve'`). The netlink
process connector (NETLINK_CONNECTOR, CN_IDX_PROC) delivers exec events; the process sensor
drains them on each poll and looks again at every PID that exec'd. It needs CAP_NET_ADMIN
(root) and is absent in some containers; then the sensor polls only and says so.

The socket is non-blocking and drained a bounded number of messages per poll. If the kernel
drops events (ENOBUFS: the buffer overflowed between polls), that is counted and the PID
diff of the next poll still finds every new process.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass, field

from agent.system.netlink import open_netlink

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
NLMSG_DONE = 3
PROC_EVENT_EXEC = 0x00000002

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_CN_MSG = struct.Struct("=IIIIHH")  # idx, val, seq, ack, len, flags
_EVENT_HEAD = struct.Struct("=IIQ")  # what, cpu, timestamp_ns
_EXEC = struct.Struct("=ii")  # process_pid, process_tgid
_EVENT_OFFSET = _NLMSGHDR.size + _CN_MSG.size
MAX_MESSAGES_PER_DRAIN = 20_000
RECV_BUFFER_BYTES = 4 * 1024 * 1024


@dataclass
class ExecEvents:
    """What one drain found."""

    exec_pids: set[int] = field(default_factory=set)  # thread-group ids (processes) that exec'd
    overflowed: bool = False  # the kernel dropped events since the last drain


class ProcConnector:
    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self.reason = ""  # why it is not open, for the sensor's status
        self.overflows = 0

    def open(self) -> bool:
        """Subscribe to process events; False (and `reason`) when this host does not allow it."""
        sock = open_netlink(
            NETLINK_CONNECTOR,
            "netlink connector unavailable",
            _listen,
            "process events refused: {} (needs root/CAP_NET_ADMIN)",
        )
        if isinstance(sock, str):
            self.reason = sock
            return False
        self._sock = sock
        return True

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def drain(self) -> ExecEvents:
        events = ExecEvents()
        if self._sock is None:
            return events
        for _ in range(MAX_MESSAGES_PER_DRAIN):
            try:
                data = self._sock.recv(4096)
            except BlockingIOError:
                break
            except OSError:  # ENOBUFS: events were lost; the PID diff covers new processes
                events.overflowed = True
                self.overflows += 1
                continue
            pid = _exec_pid(data)
            if pid is not None:
                events.exec_pids.add(pid)
        return events

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.setblocking(True)
                self._sock.send(_control(PROC_CN_MCAST_IGNORE))
            except OSError:
                pass
            self._sock.close()
            self._sock = None


def _listen(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER_BYTES)
    sock.bind((os.getpid(), CN_IDX_PROC))
    sock.send(_control(PROC_CN_MCAST_LISTEN))
    sock.setblocking(False)


def _control(op: int) -> bytes:
    payload = struct.pack("=I", op)
    cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0) + payload
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(cn), NLMSG_DONE, 0, 0, os.getpid()) + cn


def _exec_pid(data: bytes) -> int | None:
    """The exec'd process's tgid from one netlink message, or None for any other event."""
    if len(data) < _EVENT_OFFSET + _EVENT_HEAD.size + _EXEC.size:
        return None
    what = _EVENT_HEAD.unpack_from(data, _EVENT_OFFSET)[0]
    if what != PROC_EVENT_EXEC:
        return None
    _, tgid = _EXEC.unpack_from(data, _EVENT_OFFSET + _EVENT_HEAD.size)
    return tgid if tgid > 0 else None

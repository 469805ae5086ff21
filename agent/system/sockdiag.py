"""Linux's socket diagnostics (NETLINK_SOCK_DIAG, inet_diag): one TCP or UDP socket by its addresses.

The kernel answers an exact-tuple question ("the socket with this local and remote address")
with that socket's inode and owner uid, in one netlink round trip of a few microseconds,
instead of a walk of every socket table and every process's descriptors. The inode is what
`/proc/PID/fd` names (`socket:[inode]`), so `agent/system/socket_owners.py` turns it into a
process.

UDP lookups go through the kernel's receive path (`udp_dump_one`), which takes the remote
address as the source and the local one as the destination ("swapped for historical
reasons", says the kernel), and so also finds an unconnected socket bound to the local port
(a QUIC or DNS client that uses `sendto`). Every answer is checked against the asked local
port before it is believed. A socket that was closed has inode 0 (TCP's FIN_WAIT and
TIME_WAIT) or is gone (ENOENT): both are "no owner".

Only the agent's own network namespace is visible (the capture socket's too). Needs no
privilege for the lookup; the owner's descriptors need root to read.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass
from typing import Final

__all__ = ["SockDiag", "SocketIdentity"]

NETLINK_SOCK_DIAG: Final = 4  # the netlink family, and in it:
SOCK_DIAG_BY_FAMILY, NLMSG_ERROR, NLM_F_REQUEST = 20, 2, 0x1  # message types, the request flag
INET_DIAG_NOCOOKIE = ALL_STATES = 0xFFFFFFFF  # any socket cookie, any state
_PROTOCOLS: Final = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}

_NLMSGHDR: Final = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_REQ: Final = struct.Struct("=BBBBI")  # family, protocol, ext, pad, states
_SOCKID: Final = struct.Struct("!HH16s16s")  # sport, dport, src, dst (network order)
_SOCKID_TAIL: Final = struct.Struct("=III")  # interface, cookie[2]
_MSG_HEAD: Final = struct.Struct("=BBBB")  # family, state, timer, retrans
_MSG_TAIL: Final = struct.Struct("=IIIII")  # expires, rqueue, wqueue, uid, inode
_MSG_SIZE: Final = _MSG_HEAD.size + _SOCKID.size + _SOCKID_TAIL.size + _MSG_TAIL.size
_ERRNO: Final = struct.Struct("=i")


@dataclass(frozen=True)
class SocketIdentity:
    """What the kernel says about one socket."""

    inode: int  # 0: no descriptor holds it any more (closed, lingering in FIN_WAIT or TIME_WAIT)
    uid: int
    state: int  # the kernel's TCP state number (UDP: 7 unconnected, 1 connected)


class SockDiag:
    """Exact-tuple socket lookups over one netlink socket (opened on first use; thread-safe)."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._seq = 0
        self.reason = ""  # why lookups cannot be made here ("" while they can)
        self.lookups = 0

    def lookup(
        self, transport: str, local_ip: str, local_port: int, remote_ip: str, remote_port: int
    ) -> SocketIdentity | None:
        """The socket with these addresses, or None (gone, not in this namespace, or no netlink)."""
        proto = _PROTOCOLS.get(transport)
        if proto is None:
            return None
        try:
            family = socket.AF_INET6 if ":" in local_ip else socket.AF_INET
            local, remote = socket.inet_pton(family, local_ip), socket.inet_pton(family, remote_ip)
        except OSError:
            return None
        if proto == socket.IPPROTO_UDP:  # the receive path's order: remote first (see above)
            asked = (remote_port, local_port, remote, local)
        else:
            asked = (local_port, remote_port, local, remote)
        with self._lock:
            self.lookups += 1
            return self._ask(family, proto, asked, local_port)

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    # --- internals ----------------------------------------------------------------------------

    def _open(self) -> socket.socket | None:
        if self._sock is None and not self.reason:
            if not hasattr(socket, "AF_NETLINK"):
                self.reason = "no netlink on this platform"
                return None
            try:
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
                sock.bind((0, 0))
                sock.settimeout(1.0)  # the kernel answers at once; never hang the caller
            except OSError as exc:
                self.reason = f"sock_diag unavailable: {exc.strerror or exc}"
                return None
            self._sock = sock
        return self._sock

    def _ask(
        self, family: int, proto: int, asked: tuple[int, int, bytes, bytes], local_port: int
    ) -> SocketIdentity | None:
        sock = self._open()
        if sock is None:
            return None
        sport, dport, src, dst = asked
        body = (
            _REQ.pack(family, proto, 0, 0, ALL_STATES)
            + _SOCKID.pack(sport, dport, src.ljust(16, b"\0"), dst.ljust(16, b"\0"))
            + _SOCKID_TAIL.pack(0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE)
        )
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        try:
            size = _NLMSGHDR.size + len(body)
            sock.send(_NLMSGHDR.pack(size, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, self._seq, 0) + body)
            while True:  # skip a late answer to an earlier question that timed out
                data = sock.recv(8192)
                if len(data) >= _NLMSGHDR.size and _NLMSGHDR.unpack_from(data)[3] == self._seq:
                    break
        except TimeoutError:
            return None
        except OSError as exc:  # the socket broke: say so, and answer nothing from now on
            self.reason = f"sock_diag failed: {exc.strerror or exc}"
            sock.close()
            self._sock = None
            return None
        return _answer(data, local_port)


def _answer(data: bytes, local_port: int) -> SocketIdentity | None:
    """The socket in one netlink reply, if it is one and has the asked local port."""
    if len(data) < _NLMSGHDR.size + _ERRNO.size:
        return None
    kind = _NLMSGHDR.unpack_from(data)[1]
    if kind == NLMSG_ERROR or kind != SOCK_DIAG_BY_FAMILY or len(data) < _NLMSGHDR.size + _MSG_SIZE:
        return None  # ENOENT (no such socket) or something else
    offset = _NLMSGHDR.size
    state = _MSG_HEAD.unpack_from(data, offset)[1]
    sport = _SOCKID.unpack_from(data, offset + _MSG_HEAD.size)[0]
    uid, inode = _MSG_TAIL.unpack_from(data, offset + _MSG_HEAD.size + _SOCKID.size + _SOCKID_TAIL.size)[3:]
    if sport != local_port:
        return None  # not the client's socket (on loopback, the server's end has the other port)
    return SocketIdentity(inode, uid, state)


NLM_F_DUMP: Final = 0x300
NLMSG_DONE: Final = 3
TCP_LISTEN: Final = 10  # the kernel's TCP state number
_MAX_RECVS: Final = 10_000


def tcp_listeners() -> dict[int, int] | None:
    """Inode -> local port of every listening TCP socket (IPv4 and IPv6) in this network namespace,
    from one dump per family that the kernel filters to the LISTEN state: a few listeners to read,
    where /proc/net/tcp prints every socket of the host. None without sock_diag."""
    if not hasattr(socket, "AF_NETLINK"):
        return None
    found: dict[int, int] = {}
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as sock:
            sock.bind((0, 0))
            sock.settimeout(1.0)
            for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), 1):
                body = (
                    _REQ.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << TCP_LISTEN)
                    + _SOCKID.pack(0, 0, bytes(16), bytes(16))
                    + _SOCKID_TAIL.pack(0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE)
                )
                flags = NLM_F_REQUEST | NLM_F_DUMP
                sock.send(
                    _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, flags, seq, 0) + body
                )
                if not _read_dump(sock, seq, found):
                    return None
    except OSError:
        return None
    return found


def _read_dump(sock: socket.socket, seq: int, found: dict[int, int]) -> bool:
    """Collect one dump's sockets into `found`; False when it fails or does not end."""
    for _ in range(_MAX_RECVS):
        data = sock.recv(65536)
        offset = 0
        while offset + _NLMSGHDR.size <= len(data):
            length, kind, _flags, got_seq, _pid = _NLMSGHDR.unpack_from(data, offset)
            if length < _NLMSGHDR.size or kind == NLMSG_ERROR:
                return False
            if got_seq == seq:
                if kind == NLMSG_DONE:
                    return True
                if kind == SOCK_DIAG_BY_FAMILY and length >= _NLMSGHDR.size + _MSG_SIZE:
                    at = offset + _NLMSGHDR.size + _MSG_HEAD.size
                    sport = _SOCKID.unpack_from(data, at)[0]
                    found[_MSG_TAIL.unpack_from(data, at + _SOCKID.size + _SOCKID_TAIL.size)[4]] = sport
            offset += (length + 3) & ~3
    return False

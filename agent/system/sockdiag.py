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

For TCP the same answer carries the kernel's own byte counters for the socket (`tcp_info`, asked
with the INET_DIAG_INFO extension): what the application sent and received, counted by the
kernel, whatever a packet capture missed. UDP has no per-socket byte counters in inet_diag (its
answer holds queue lengths only), so UDP and QUIC bytes can only come from a capture.

`ClosedSockets` hears the kernel say that a TCP socket is being destroyed, with its last
`tcp_info` (the sock_diag destroy multicast groups, Linux 4.5, CAP_NET_ADMIN): the final count
of a connection that closed between two reads, which no lookup could still see (once closed it
lingers in TIME_WAIT with no counters, or is gone).

Only the agent's own network namespace is visible (the capture socket's too). Needs no
privilege for the lookup; the owner's descriptors need root to read.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Final

from agent.system.netlink import open_netlink

__all__ = ["ClosedSocket", "ClosedSockets", "SockDiag", "SocketIdentity", "TcpBytes"]

NETLINK_SOCK_DIAG: Final = 4  # the netlink family, and in it:
SOCK_DIAG_BY_FAMILY, NLMSG_ERROR, NLM_F_REQUEST = 20, 2, 0x1  # message types, the request flag
INET_DIAG_NOCOOKIE = ALL_STATES = 0xFFFFFFFF  # any socket cookie, any state
INET_DIAG_INFO: Final = 2  # the answer's attribute holding struct tcp_info
_INFO_EXT: Final = 1 << (INET_DIAG_INFO - 1)  # "please add tcp_info" in the request
SKNLGRP_INET_TCP_DESTROY, SKNLGRP_INET6_TCP_DESTROY = 1, 3  # multicast groups: TCP sockets destroyed
SOL_NETLINK, NETLINK_ADD_MEMBERSHIP = 270, 1
_PROTOCOLS: Final = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}

_NLMSGHDR: Final = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_REQ: Final = struct.Struct("=BBBBI")  # family, protocol, ext, pad, states
_SOCKID: Final = struct.Struct("!HH16s16s")  # sport, dport, src, dst (network order)
_SOCKID_TAIL: Final = struct.Struct("=III")  # interface, cookie[2]
_MSG_HEAD: Final = struct.Struct("=BBBB")  # family, state, timer, retrans
_MSG_TAIL: Final = struct.Struct("=IIIII")  # expires, rqueue, wqueue, uid, inode
_MSG_SIZE: Final = _MSG_HEAD.size + _SOCKID.size + _SOCKID_TAIL.size + _MSG_TAIL.size
_ERRNO: Final = struct.Struct("=i")
_RTATTR: Final = struct.Struct("=HH")  # len, type
_U64: Final = struct.Struct("=Q")
# Offsets in struct tcp_info (linux/tcp.h; the kernel only ever appends to it).
_TCPI_BYTES_ACKED, _TCPI_BYTES_RECEIVED = 120, 128  # Linux 4.1 (RFC 4898's HCThruOctets)
_TCPI_BYTES_SENT, _TCPI_BYTES_RETRANS = 200, 208  # Linux 4.19
_UNAVAILABLE: Final = "sock_diag unavailable"
_V4_MAPPED: Final = bytes(10) + b"\xff\xff"  # ::ffff:a.b.c.d
_DESTROY_RCVBUF: Final = 1 << 20  # a burst of closes waits here while the reader is busy


@dataclass(frozen=True)
class TcpBytes:
    """A TCP socket's payload bytes, counted by the kernel (no IP or TCP headers)."""

    sent: int  # each byte once: a retransmission is not counted again
    received: int


@dataclass(frozen=True)
class SocketIdentity:
    """What the kernel says about one socket."""

    inode: int  # 0: no descriptor holds it any more (closed, lingering in FIN_WAIT or TIME_WAIT)
    uid: int
    state: int  # the kernel's TCP state number (UDP: 7 unconnected, 1 connected)
    cookie: int = 0  # the socket's unique id in the kernel (never reused while the system runs)
    tcp_bytes: TcpBytes | None = None  # TCP with counters; None for UDP and TIME_WAIT


@dataclass(frozen=True)
class ClosedSocket:
    """A TCP socket the kernel destroyed, with its last counters."""

    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    cookie: int
    tcp_bytes: TcpBytes


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
            sock = open_netlink(NETLINK_SOCK_DIAG, _UNAVAILABLE, _for_questions, f"{_UNAVAILABLE}: {{}}")
            if isinstance(sock, str):
                self.reason = sock
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
            _REQ.pack(family, proto, _INFO_EXT, 0, ALL_STATES)
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
    size, kind = _NLMSGHDR.unpack_from(data)[:2]
    if kind == NLMSG_ERROR or kind != SOCK_DIAG_BY_FAMILY or len(data) < _NLMSGHDR.size + _MSG_SIZE:
        return None  # ENOENT (no such socket) or something else
    msg = _message(data, _NLMSGHDR.size, min(size, len(data)))
    if msg.sport != local_port:
        return None  # not the client's socket (on loopback, the server's end has the other port)
    return SocketIdentity(msg.inode, msg.uid, msg.state, msg.cookie, msg.tcp_bytes)


@dataclass(frozen=True)
class _Message:
    family: int
    state: int
    sport: int
    dport: int
    src: bytes
    dst: bytes
    cookie: int
    uid: int
    inode: int
    tcp_bytes: TcpBytes | None


def _message(data: bytes, offset: int, end: int) -> _Message:
    """One inet_diag_msg at `offset` (its length already checked) and its attributes up to `end`."""
    family, state = _MSG_HEAD.unpack_from(data, offset)[:2]
    at = offset + _MSG_HEAD.size
    sport, dport, src, dst = _SOCKID.unpack_from(data, at)
    cookie_low, cookie_high = _SOCKID_TAIL.unpack_from(data, at + _SOCKID.size)[1:]
    uid, inode = _MSG_TAIL.unpack_from(data, at + _SOCKID.size + _SOCKID_TAIL.size)[3:]
    tcp_bytes = None
    at = offset + _MSG_SIZE
    while at + _RTATTR.size <= end:  # the attributes: only tcp_info is read
        length, kind = _RTATTR.unpack_from(data, at)
        if length < _RTATTR.size or at + length > end:
            break
        if kind == INET_DIAG_INFO:
            tcp_bytes = _tcp_bytes(data[at + _RTATTR.size : at + length])
        at += (length + 3) & ~3
    return _Message(
        family, state, sport, dport, src, dst, cookie_low | cookie_high << 32, uid, inode, tcp_bytes
    )


def _tcp_bytes(info: bytes) -> TcpBytes | None:
    """Payload bytes from a struct tcp_info: bytes sent less retransmitted (Linux 4.19), or else
    bytes acknowledged less the SYN's one (Linux 4.1); None from an older kernel."""
    if len(info) < _TCPI_BYTES_RECEIVED + _U64.size:
        return None
    received = _U64.unpack_from(info, _TCPI_BYTES_RECEIVED)[0]
    if len(info) >= _TCPI_BYTES_RETRANS + _U64.size:
        sent = _U64.unpack_from(info, _TCPI_BYTES_SENT)[0] - _U64.unpack_from(info, _TCPI_BYTES_RETRANS)[0]
    else:
        sent = _U64.unpack_from(info, _TCPI_BYTES_ACKED)[0] - 1
    return TcpBytes(max(0, sent), received)


class ClosedSockets:
    """TCP sockets as the kernel destroys them, each with its last counters (not thread-safe:
    one reader; `fileno()` for its select loop)."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self.reason = ""  # why it cannot listen here ("" while it can)
        self.heard = 0  # destroyed sockets heard of
        self.overflows = 0  # times the kernel dropped some because the reader fell behind (ENOBUFS)

    def open(self) -> bool:
        """Join the destroy groups; False (and `reason`) where the kernel or privilege refuses."""
        if self._sock is not None:
            return True
        # The groups refuse EPERM without CAP_NET_ADMIN, EINVAL before Linux 4.5.
        sock = open_netlink(
            NETLINK_SOCK_DIAG, _UNAVAILABLE, _for_destroy_events, "no socket-destroy events: {}"
        )
        if isinstance(sock, str):
            self.reason = sock
            return False
        self._sock = sock
        return True

    def fileno(self) -> int:
        return self._sock.fileno() if self._sock is not None else -1

    def read(self, limit: int = 4096) -> list[ClosedSocket]:
        """The destroyed sockets waiting now (at most `limit` messages read), without blocking."""
        out: list[ClosedSocket] = []
        sock = self._sock
        for _ in range(limit if sock is not None else 0):
            assert sock is not None
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # some were lost; the queue is readable again
                    self.overflows += 1
                    continue
                self.reason = f"socket-destroy events failed: {exc.strerror or exc}"
                self.close()
                break
            out += _closed(data)
        self.heard += len(out)
        return out

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _address(family: int, raw: bytes) -> str:
    """An address as the capture writes it: a dual-stack socket's IPv4-mapped IPv6 address is
    the IPv4 address its packets carry."""
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if raw[:12] == _V4_MAPPED:
        return socket.inet_ntop(socket.AF_INET, raw[12:16])
    return socket.inet_ntop(socket.AF_INET6, raw[:16])


def _for_questions(sock: socket.socket) -> None:
    sock.bind((0, 0))
    sock.settimeout(1.0)  # the kernel answers at once; never hang the caller


def _for_destroy_events(sock: socket.socket) -> None:
    sock.bind((0, 0))
    with contextlib.suppress(OSError):  # a larger queue where allowed; the default works
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _DESTROY_RCVBUF)
    for group in (SKNLGRP_INET_TCP_DESTROY, SKNLGRP_INET6_TCP_DESTROY):
        sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
    sock.setblocking(False)


def _closed(data: bytes) -> list[ClosedSocket]:
    """The TCP sockets with counters in one datagram of destroy messages."""
    out = []
    at = 0
    while at + _NLMSGHDR.size + _MSG_SIZE <= len(data):
        size, kind = _NLMSGHDR.unpack_from(data, at)[:2]
        if size < _NLMSGHDR.size or at + size > len(data):
            break
        if kind == SOCK_DIAG_BY_FAMILY and size >= _NLMSGHDR.size + _MSG_SIZE:
            msg = _message(data, at + _NLMSGHDR.size, at + size)
            family = msg.family
            if msg.tcp_bytes is not None and family in (socket.AF_INET, socket.AF_INET6):
                src, dst = _address(family, msg.src), _address(family, msg.dst)
                out.append(ClosedSocket(src, msg.sport, dst, msg.dport, msg.cookie, msg.tcp_bytes))
        at += (size + 3) & ~3
    return out


NLM_F_DUMP: Final = 0x300
NLMSG_DONE: Final = 3
TCP_LISTEN: Final = 10  # the kernel's TCP state number
_MAX_RECVS: Final = 10_000


def tcp_listeners() -> dict[int, tuple[str, int]] | None:
    """Inode -> (local address, port) of every listening TCP socket (IPv4 and IPv6) in this network
    namespace, from one dump per family that the kernel filters to the LISTEN state: a few listeners
    to read, where /proc/net/tcp prints every socket of the host. None without sock_diag."""
    if not hasattr(socket, "AF_NETLINK"):
        return None
    found: dict[int, tuple[str, int]] = {}
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


def _read_dump(sock: socket.socket, seq: int, found: dict[int, tuple[str, int]]) -> bool:
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
                    family = data[offset + _NLMSGHDR.size]  # the message's first byte
                    at = offset + _NLMSGHDR.size + _MSG_HEAD.size
                    sport, _dport, src, _dst = _SOCKID.unpack_from(data, at)
                    inode = _MSG_TAIL.unpack_from(data, at + _SOCKID.size + _SOCKID_TAIL.size)[4]
                    # As the socket tables print it (psutil too): an IPv4-mapped address stays IPv6.
                    address = socket.inet_ntop(family, src[:4] if family == socket.AF_INET else src)
                    found[inode] = (address, sport)
            offset += (length + 3) & ~3
    return False

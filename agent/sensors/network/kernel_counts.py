"""A watched TCP flow's bytes from the kernel's own counters for its socket, not from packets.

A packet capture loses packets when the machine is busy (the kernel counts them: the capture
socket's PACKET_STATISTICS), and an upload counted from captured packets is then short. The
kernel counts every byte a TCP socket sends and receives (`tcp_info`, read through sock_diag:
`agent/system/sockdiag.py`), so a watched flow's count is taken from there, at four moments:

- when the flow is named: the capture thread's owner lookup gets the counters in the same
  netlink answer (`follow`);
- at every poll while it lives (`read`);
- when the capture sees its FIN or RST: the socket still exists then (FIN_WAIT1, CLOSE_WAIT,
  LAST_ACK), though not for long (`read`, from the capture thread);
- when the kernel destroys the socket: the sock_diag destroy event carries its last counters
  (`closed`), so a connection that opens and closes between two polls still has its exact
  final count. An event may come before the capture thread has named the flow (the capture
  runs behind when busy): recent unclaimed events are kept for a while.

Where the socket cannot be read (another network namespace, UDP and so QUIC: inet_diag has no
byte counters for UDP), the capture's count stays, and says so ("capture"). A flow whose socket
closed with no final reading keeps its last kernel reading plus what the capture saw after it
("kernel+capture"). The kernel counts payload bytes (what the application wrote, TLS records
included); the capture counts IP bytes (headers included, about 0.3 % more on a bulk upload).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Final

from agent.observations import NetworkObservation
from agent.system.sockdiag import ClosedSocket, SockDiag, SocketIdentity

__all__ = ["KernelCounts", "kernel_countable"]

# Destroyed sockets kept until a flow claims them: every TCP socket of the namespace is heard
# of, so few, and not for long (the capture thread is seconds behind at worst).
MAX_UNCLAIMED: Final = 512
UNCLAIMED_SECONDS: Final = 10.0

_Tuple = tuple[str, int, str, int]  # client address and port, server address and port


@dataclass
class _Reading:
    sent: int
    received: int
    capture_out: int  # the capture's counts when the kernel was read
    capture_in: int
    cookie: int
    final: bool = False  # the socket's last counters (it was destroyed)
    gone: bool = False  # no socket to read any more, and no final reading


def kernel_countable(obs: NetworkObservation) -> bool:
    """A TCP flow of its own (not a DNS question): one socket whose counters the kernel keeps."""
    return obs.transport == "tcp" and (obs.source != "dns" or obs.resolved)


class KernelCounts:
    """Flow -> its socket's byte counters. Thread-safe (the capture thread and poll share it)."""

    def __init__(self, diag: SockDiag, max_flows: int = 65536) -> None:
        self._diag = diag
        self._max_flows = max_flows
        self._lock = threading.Lock()
        self._readings: OrderedDict[str, _Reading] = OrderedDict()  # occurrence -> reading
        self._flows: OrderedDict[_Tuple, str] = OrderedDict()  # client tuple -> occurrence
        self._unclaimed: OrderedDict[_Tuple, tuple[float, ClosedSocket]] = OrderedDict()
        self.reads = 0  # lookups made
        self.finals = 0  # flows whose final count came from the socket's destruction

    def follow(self, obs: NetworkObservation, found: SocketIdentity | None) -> None:
        """Count this flow from the kernel from now on; `found`: its socket, just looked up."""
        key = _key(obs)
        with self._lock:
            self._flows[key] = obs.occurrence
            self._flows.move_to_end(key)
            self._store(obs, found)
            claimed = self._unclaimed.pop(key, None)
            if claimed is not None and claimed[0] >= obs.first_seen:
                self._final(obs.occurrence, claimed[1])
            while len(self._flows) > self._max_flows:
                self._flows.popitem(last=False)

    def read(self, obs: NetworkObservation) -> bool:
        """Read the flow's socket now (a poll, or the capture saw it closing); True when the socket
        was read before and has just gone with no final count yet (its destroy event is due)."""
        with self._lock:
            reading = self._readings.get(obs.occurrence)
            if reading is not None and (reading.final or reading.gone):
                return False
            self.reads += 1
        found = self._diag.lookup("tcp", obs.client_ip, obs.client_port, obs.server_ip, obs.server_port)
        if reading is None:
            self.follow(obs, found)
            return False
        with self._lock:
            self._store(obs, found)
            return reading.gone and not reading.final

    def closed(self, sockets: list[ClosedSocket]) -> None:
        """Sockets the kernel destroyed, with their last counters: final counts for our flows."""
        now = time.time()
        with self._lock:
            for sock in sockets:
                key = (sock.local_ip, sock.local_port, sock.remote_ip, sock.remote_port)
                occurrence = self._flows.get(key)
                if occurrence is not None:
                    self._final(occurrence, sock)
                    continue
                self._unclaimed[key] = (now, sock)
                self._unclaimed.move_to_end(key)
            while self._unclaimed and (
                len(self._unclaimed) > MAX_UNCLAIMED
                or now - next(iter(self._unclaimed.values()))[0] > UNCLAIMED_SECONDS
            ):
                self._unclaimed.popitem(last=False)

    def count(self, obs: NetworkObservation) -> NetworkObservation:
        """The observation with the kernel's counts where there are any, and their source."""
        with self._lock:
            reading = self._readings.get(obs.occurrence)
        if reading is None:
            return obs
        if reading.gone and not reading.final:
            return replace(
                obs,
                bytes_out=reading.sent + max(0, obs.bytes_out - reading.capture_out),
                bytes_in=reading.received + max(0, obs.bytes_in - reading.capture_in),
                bytes_source="kernel+capture",
            )
        return replace(obs, bytes_out=reading.sent, bytes_in=reading.received, bytes_source="kernel")

    def final(self, obs: NetworkObservation) -> bool:
        """Has the flow's socket been destroyed, leaving its last counters?"""
        with self._lock:
            reading = self._readings.get(obs.occurrence)
            return reading is not None and reading.final

    def forget(self, obs: NetworkObservation) -> None:
        """The flow is over and reported: let its reading go."""
        with self._lock:
            self._readings.pop(obs.occurrence, None)
            key = _key(obs)
            if self._flows.get(key) == obs.occurrence:
                del self._flows[key]

    # --- internals (lock held) ----------------------------------------------------------------

    def _store(self, obs: NetworkObservation, found: SocketIdentity | None) -> None:
        old = self._readings.get(obs.occurrence)
        if old is not None and old.final:
            return
        if found is None or found.tcp_bytes is None or (old is not None and found.cookie != old.cookie):
            if old is not None:
                old.gone = True  # closed (gone, or TIME_WAIT without counters): its last reading stays
            return
        self._readings[obs.occurrence] = _Reading(
            found.tcp_bytes.sent, found.tcp_bytes.received, obs.bytes_out, obs.bytes_in, found.cookie
        )
        self._readings.move_to_end(obs.occurrence)
        while len(self._readings) > self._max_flows:
            self._readings.popitem(last=False)

    def _final(self, occurrence: str, sock: ClosedSocket) -> None:
        old = self._readings.get(occurrence)
        if old is not None and old.cookie != sock.cookie:
            return  # another socket that had the same addresses
        counted = sock.tcp_bytes
        self._readings[occurrence] = _Reading(counted.sent, counted.received, 0, 0, sock.cookie, final=True)
        self.finals += 1


def _key(obs: NetworkObservation) -> _Tuple:
    return (obs.client_ip, obs.client_port, obs.server_ip, obs.server_port)

"""Flow -> the process that owns its socket, asked the moment the flow is named.

The kernel's socket diagnostics give the socket with the flow's exact addresses (its inode and
uid, a few microseconds; `agent/system/sockdiag.py`), and the warm inode -> pid map names the
process holding it (`agent/system/socket_owners.py`); the process is described at once, while
it is surely alive. Asked from the capture thread at the first packet that names a watched
flow (a TLS ClientHello, a DNS question, a QUIC Initial, an HTTP request), so a connection of a
few tens of milliseconds, or a process that exits a second later, is still named.

It counts what it did (lookups, owners found, time spent) for the sensor's status and the
attribution benchmark.
"""

from __future__ import annotations

import threading
import time

from agent.observations import NetworkObservation, ProcessObservation
from agent.sensors.process.facts import describe_process
from agent.system.sockdiag import SockDiag, SocketIdentity
from agent.system.socket_owners import SocketOwners

__all__ = ["FlowOwners"]


class FlowOwners:
    """Who owns a flow's client socket now. Thread-safe (the capture thread and poll share it)."""

    def __init__(self, diag: SockDiag | None = None, sockets: SocketOwners | None = None) -> None:
        self._diag = diag or SockDiag()
        self._sockets = sockets or SocketOwners()
        self._lock = threading.Lock()
        self.asked = 0
        self.found = 0
        self.seconds = 0.0  # spent in `owner`, all calls together
        self.describe_seconds = 0.0  # of which describing the processes found

    @property
    def reason(self) -> str:
        """Why no flow can be attributed here ("" while they can)."""
        return self._diag.reason

    def warm(self) -> None:
        """Read every process's sockets once, so the first flows cost little."""
        with self._lock:
            self._sockets.warm()

    @property
    def diag(self) -> SockDiag:
        """The socket diagnostics it asks (shared with the kernel byte counts)."""
        return self._diag

    def owner(self, obs: NetworkObservation) -> ProcessObservation | None:
        """The process holding the flow's client socket; None when it is closed or unreadable."""
        return self.find(obs)[0]

    def find(self, obs: NetworkObservation) -> tuple[ProcessObservation | None, SocketIdentity | None]:
        """The flow's owner, and its client socket as the kernel described it (with its TCP byte
        counters), from one lookup."""
        started = time.perf_counter()
        with self._lock:
            found = self._diag.lookup(
                obs.transport, obs.client_ip, obs.client_port, obs.server_ip, obs.server_port
            )
            pid = self._sockets.owner(found.inode, found.uid) if found is not None else None
            described = time.perf_counter()
            process = describe_process(pid) if pid else None
            self.describe_seconds += time.perf_counter() - described
            self.asked += 1
            self.found += process is not None
            self.seconds += time.perf_counter() - started
        return process, found

    def close(self) -> None:
        self._diag.close()

"""Network sensor without packet capture: the socket tables, and names the agent resolves itself.

When the capture sensor cannot run (no root, so no CAP_NET_RAW; or not Linux), this one takes
its place. It reads the connections the agent may see (psutil's socket table: every socket in
the network namespace, with the owning process for the agent's own user, or for every user as
root) and names a connection's remote address from an address -> name map it builds by
resolving the endpoint catalog's exact host names through the ordinary resolver, slowly, in a
background thread (`resolve_per_second`; glob and suffix patterns cannot be resolved).

What it cannot know, it does not claim: no SNI, no DNS questions, so a connection is named only
when its remote address is one a catalog name resolves to here (a shared CDN address serves
other names too: the detector gives these the confidence of an address a DNS answer gave,
0.6), and it counts no bytes (bytes_out is 0, so no AI_DATA_UPLOAD comes from it). A connection
that opens and closes between two polls is not seen. Its state is always DEGRADED, with the
capture sensor's reason.

Observations carry source "socket_table" and `resolved=True`; each connection (transport,
local and remote address) is reported once, when first seen named.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final

import psutil

from agent.catalog.endpoints import EndpointCatalog
from agent.sensors.base import Sensor, SensorCapabilities, SensorState, SensorStatus, SensorThread
from agent.sensors.network.flows import NetworkObservation
from agent.sensors.process.facts import describe_process

log = logging.getLogger(__name__)

__all__ = ["SOURCE", "SocketTableSensor", "catalog_names", "resolve_addresses"]

SOURCE: Final = "socket_table"
MAX_ADDRESSES: Final = 65536  # address -> name entries kept
MAX_SEEN: Final = 65536  # connections remembered as reported
_TCP_OPEN: Final = frozenset({psutil.CONN_ESTABLISHED, psutil.CONN_SYN_SENT})

Resolver = Callable[[str], Iterable[str]]


def resolve_addresses(name: str) -> list[str]:
    """The addresses the system resolver gives for a name ([] when it gives none)."""
    try:
        infos = socket.getaddrinfo(name, 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def catalog_names(catalog: EndpointCatalog) -> list[str]:
    """The catalog's exact host names (the only ones that can be resolved), in catalog order."""
    return list(dict.fromkeys(h for e in catalog.entries for h in e.hosts if "*" not in h))


class SocketTableSensor(Sensor):
    """Connections from the socket table, named by resolving catalog names. Always DEGRADED."""

    name = "network"
    capabilities = SensorCapabilities(needs_root=False, platforms=("Linux", "Darwin", "Windows"))
    produces = (NetworkObservation,)

    def __init__(
        self,
        names: Sequence[str],
        *,
        resolver: Resolver = resolve_addresses,
        resolve_per_second: float = 2.0,
        refresh_seconds: float = 3600.0,
        capture_reason: str = "",
    ) -> None:
        self._names = list(names)
        self._resolver = resolver
        self._rate = resolve_per_second
        self._refresh = refresh_seconds
        self._capture_reason = capture_reason
        self._addresses: dict[str, str] = {}  # remote address -> host name
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str, int, str, int], float] = {}  # connection -> first seen
        self._resolving = SensorThread("umbra-socket-names")
        self._error = ""
        self.rounds = 0  # complete passes over the names (tests wait on it)

    # --- the Sensor interface -----------------------------------------------------------------

    def status(self) -> SensorStatus:
        why = f"no packet capture ({self._capture_reason})" if self._capture_reason else "no packet capture"
        reason = f"{why}: socket tables only; no byte counts"
        if self._error:
            reason = f"{reason}; {self._error}"
        return SensorStatus(self.name, SensorState.DEGRADED, reason)

    def start(self) -> None:
        if self._resolving.started or not self._names or self._rate <= 0:
            return
        self._resolving.start(self._resolve_loop)

    def stop(self) -> None:
        self._resolving.stop()

    def poll(self) -> Sequence[NetworkObservation]:
        try:
            connections = psutil.net_connections(kind="inet")
        except (psutil.AccessDenied, OSError) as exc:  # macOS without root: no table at all
            self._error = f"socket table unreadable: {exc}"
            return []
        self._error = ""
        with self._lock:
            addresses = dict(self._addresses) if self._addresses else {}
        if not addresses:
            return []
        listening = {
            (c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN and c.laddr
        }
        now = time.time()
        present: set[tuple[str, str, int, str, int]] = set()
        out: list[NetworkObservation] = []
        for conn in connections:
            if not conn.raddr or not conn.laddr:
                continue
            tcp = conn.type == socket.SOCK_STREAM
            if tcp and conn.status not in _TCP_OPEN:
                continue
            local_port = conn.laddr.port
            if any((ip, local_port) in listening for ip in (conn.laddr.ip, "0.0.0.0", "::")):
                continue  # the server side of an inbound connection
            host = addresses.get(conn.raddr.ip)
            if host is None:
                continue
            key = ("tcp" if tcp else "udp", conn.laddr.ip, local_port, conn.raddr.ip, conn.raddr.port)
            present.add(key)
            if key in self._seen:
                continue
            self._seen[key] = now
            out.append(
                NetworkObservation(
                    host,
                    SOURCE,
                    conn.laddr.ip,
                    local_port,
                    conn.raddr.ip,
                    conn.raddr.port,
                    key[0],
                    now,
                    now,
                    0,
                    0,
                    0,
                    resolved=True,
                    process=describe_process(conn.pid) if conn.pid else None,
                    bytes_source="",
                )
            )
        # forget connections that closed (a later one with the same ports is a new flow)
        for key in [k for k in self._seen if k not in present]:
            del self._seen[key]
        while len(self._seen) > MAX_SEEN:
            self._seen.pop(next(iter(self._seen)))
        return out

    # --- internals ----------------------------------------------------------------------------

    def _resolve_loop(self) -> None:
        """Resolve every name at `resolve_per_second`, then again every `refresh_seconds`."""
        gap = 1.0 / self._rate
        stopping = self._resolving.stopping
        while not stopping.is_set():
            started = time.monotonic()
            fresh: dict[str, str] = {}
            for name in self._names:
                if stopping.is_set():
                    return
                begun = time.monotonic()
                try:
                    found = list(self._resolver(name))
                except Exception as exc:  # an injected or platform resolver must not kill the thread
                    log.debug("resolving %s failed: %s", name, exc)
                    found = []
                for address in found:
                    fresh.setdefault(address, name)  # the first (most specific) catalog name wins
                with self._lock:
                    for address in found:
                        self._addresses.setdefault(address, name)
                    while len(self._addresses) > MAX_ADDRESSES:
                        self._addresses.pop(next(iter(self._addresses)))
                stopping.wait(max(0.0, gap - (time.monotonic() - begun)))
            with self._lock:  # addresses no name resolves to any more are dropped
                self._addresses = dict(list(fresh.items())[:MAX_ADDRESSES])
            self.rounds += 1
            stopping.wait(max(0.0, self._refresh - (time.monotonic() - started)))

    @property
    def addresses(self) -> dict[str, str]:
        with self._lock:
            return dict(self._addresses)

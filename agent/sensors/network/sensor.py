"""Network sensor: host names of the flows this machine opens, from a kernel-filtered capture.

A Linux AF_PACKET socket, read as raw frames, carries a classic BPF program compiled by libpcap
(`bpf.py`: through ctypes, no scapy in the daemon), so traffic that names no host never
reaches Python: DNS (port 53, UDP and TCP), TCP segments whose payload starts a TLS handshake
record holding a ClientHello (any port, so STARTTLS and odd ports too), QUIC long-header
packets on UDP 443, and plain-HTTP requests on port 80. Once a flow is named after a watched
host (an AI service, by the caller's `watch` predicate), its server address is added to the
filter, so the bytes of that flow (and later ones to the same address) are counted for the
upload detection. The watched-address list is bounded.

The reader thread runs every frame through the `FlowAnalyzer` (the one the offline scan uses) at
once, not at the next poll, so a watched flow is acted on the moment its first named packet is
seen (a TLS ClientHello, a DNS question, a QUIC Initial, an HTTP request). Its server address
joins the filter before the handshake completes (so an upload that starts and ends between two
polls is counted whole), and its client socket is looked up while it is surely open: the
kernel's exact-tuple socket diagnostics give the socket's inode, a warm inode -> pid map gives
the process (`owners.py`), which is described while it is alive. So a connection of a few tens
of milliseconds, or a process that asks one DNS question and exits, is still named. A flow
missed there (its socket closed first) gets one more lookup at poll time.

A watched TCP flow's bytes come from the kernel's own counters for its socket, not from the
packets captured (`kernel_counts.py`): read when the flow is named, at each poll, when the
capture sees its FIN or RST, and when the kernel destroys the socket (its last counters, from
the sock_diag destroy events this thread also listens to). The capture's count stays for UDP
and QUIC, and for sockets this agent cannot read; the packets the capture lost (the kernel's
PACKET_STATISTICS on the capture socket) are counted, in total and against each flow that
lived while they were lost, and such a flow's observation says how many.

`poll()` returns observations for flows named since the last poll, for finished flows, again
for a flow whose upload grew by `report_step` bytes, and once more when a flow's byte count
moved and it then went quiet for `SETTLE_SECONDS` (its final count, long before the idle
timeout finishes it).

Without root (CAP_NET_RAW) the sensor is inactive. Without libpcap there is no BPF compiler:
the sensor still runs, filtering in Python (degraded: every packet costs Python time).
"""

from __future__ import annotations

import logging
import platform
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Final

from agent.netparse import http, tls
from agent.netparse.frames import LINKTYPE_ETHERNET, TCP, decode
from agent.observations import ProcessObservation
from agent.sensors.base import Sensor, SensorCapabilities, SensorState, SensorStatus, SensorThread
from agent.sensors.network.bpf import FilterError, attach_filter, libpcap_present
from agent.sensors.network.flows import FlowAnalyzer, NetworkObservation
from agent.sensors.network.kernel_counts import KernelCounts, kernel_countable
from agent.sensors.network.owners import FlowOwners
from agent.system.privileges import CAP_NET_RAW, has_capability
from agent.system.sockdiag import ClosedSockets

log = logging.getLogger(__name__)

__all__ = ["BPF_FILTER", "NetworkSensor"]

_TCP_PAYLOAD: Final = "((tcp[12:1] & 0xf0) >> 2)"
_TCP6_PAYLOAD: Final = "(40 + ((ip6[52:1] & 0xf0) >> 2))"  # IPv6 without extension headers
#: What reaches Python: DNS, TLS ClientHello records, QUIC long headers, HTTP request starts.
BPF_FILTER: Final = " or ".join(
    [
        "udp port 53",
        "tcp port 53",
        f"(tcp and tcp[{_TCP_PAYLOAD}:1] = 0x16 and tcp[{_TCP_PAYLOAD} + 5:1] = 0x01)",
        f"(ip6 and ip6[6] = 6 and ip6[{_TCP6_PAYLOAD}:1] = 0x16 and ip6[{_TCP6_PAYLOAD} + 5:1] = 0x01)",
        "(udp port 443 and udp[8:1] & 0x80 = 0x80)",
        "(ip6 and ip6[6] = 17 and udp port 443 and ip6[48:1] & 0x80 = 0x80)",
        f"(tcp dst port 80 and (tcp[{_TCP_PAYLOAD}:4] = 0x47455420 or tcp[{_TCP_PAYLOAD}:4] = 0x504f5354"
        f" or tcp[{_TCP_PAYLOAD}:4] = 0x434f4e4e or tcp[{_TCP_PAYLOAD}:4] = 0x50555420))",
    ]
)
MAX_WATCHED: Final = 256  # server addresses whose every packet is captured (for byte counts)
SNAPLEN: Final = 65535
RCVBUF: Final = 16 << 20
SO_RCVBUFFORCE: Final = 33  # Linux: like SO_RCVBUF, past rmem_max, for CAP_NET_ADMIN
SETTLE_SECONDS: Final = 1.0  # a flow quiet this long after its bytes moved is reported again
CLOSED_WAIT: Final = 0.1  # seconds a poll waits for the destroy event of a socket that just closed
MAX_EARLY_OWNERS: Final = 4096  # flows attributed by the reader thread, not yet reported by a poll
_SOL_PACKET: Final = 263
_PACKET_STATISTICS: Final = 6


class NetworkSensor(Sensor):
    name = "network"
    capabilities = SensorCapabilities(needs_root=True, platforms=("Linux",))
    produces = (NetworkObservation,)

    def __init__(
        self,
        interface: str | None = None,
        *,
        watch: Callable[[str], bool] | None = None,
        analyzer: FlowAnalyzer | None = None,
        report_step: int = 1_000_000,
    ) -> None:
        self.interface = interface  # None: every interface
        self._watch = watch
        self.analyzer = analyzer or FlowAnalyzer(idle_timeout=120.0)
        self.analyzer.on_name = self._on_name
        self.analyzer.on_close = self._on_close
        self.owners = FlowOwners()
        self.kernel = KernelCounts(self.owners.diag, max_flows=4 * self.analyzer.max_flows)
        self._closed_sockets = ClosedSockets()
        self._closed_lock = threading.Lock()  # the reader thread and a poll both read it
        self._report_step = report_step
        self._analyzer_lock = threading.Lock()  # the reader thread feeds it, poll() reads it
        self._named: list[NetworkObservation] = []  # watched flows named by the frame being fed
        self._closing: list[NetworkObservation] = []  # watched flows the frame being fed closes
        self._dropped = 0
        self._captured = 0
        self._flow_drops: dict[str, int] = {}  # occurrence -> packets lost while it lived
        self._previous_lost = 0  # packets lost in the poll interval before the last
        self._socket: Any = None
        self._reader = SensorThread("umbra-network-sensor")
        self._error = ""
        self._kernel_filter = False
        self._watched: list[str] = []
        self._reported: dict[str, int] = {}  # occurrence -> bytes_out when last reported
        self._owners: dict[str, ProcessObservation | None] = {}  # occurrence -> owning process
        # occurrence -> owner, found by the reader thread when the flow was named
        self._early_owners: dict[str, ProcessObservation | None] = {}
        self._filter_lock = threading.Lock()
        self._owners_lock = threading.Lock()

    # --- the Sensor interface -----------------------------------------------------------------

    def status(self) -> SensorStatus:
        system = platform.system()
        if system not in self.capabilities.platforms:
            return SensorStatus(self.name, SensorState.INACTIVE, f"live capture needs Linux, not {system}")
        if not has_capability(CAP_NET_RAW):
            return SensorStatus(
                self.name, SensorState.INACTIVE, "not root: capturing packets needs CAP_NET_RAW"
            )
        if self._error:
            return SensorStatus(self.name, SensorState.DEGRADED, self._error)
        if not libpcap_present():
            return SensorStatus(
                self.name, SensorState.DEGRADED, "libpcap missing: no kernel BPF filter, filtering in Python"
            )
        if self._dropped:
            return SensorStatus(
                self.name, SensorState.DEGRADED, f"{self._dropped} packets dropped (socket buffer full)"
            )
        if self.owners.reason and self._watch is not None:
            return SensorStatus(
                self.name, SensorState.DEGRADED, f"flows not attributed to processes: {self.owners.reason}"
            )
        return SensorStatus(self.name, SensorState.ACTIVE)

    def start(self) -> None:
        if self._reader.started:
            return
        try:
            self._socket = _PacketSocket(self.interface)
        except (OSError, ValueError) as exc:
            self._error = f"cannot open a capture socket: {exc}"
            log.warning("network sensor: %s", self._error)
            return
        # A burst (a 64 KiB loopback segment is one packet) must not overflow the socket's
        # queue while the reader thread sleeps: ask for a large one (root may force it).
        for option in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
            try:
                self._socket.ins.setsockopt(socket.SOL_SOCKET, option, RCVBUF)
                break
            except OSError:
                continue
        self._kernel_filter = self._attach(BPF_FILTER)
        if not self._kernel_filter and not self._error:
            self._error = "no kernel BPF filter (libpcap missing?): filtering in Python"
        if self._watch is not None:
            self.owners.warm()  # every process's sockets, once, so the first flows cost little
            if not self._closed_sockets.open():  # then counts rest on polls and FIN/RST reads
                log.info("network sensor: %s", self._closed_sockets.reason)
        self._reader.start(self._read)

    def stop(self) -> None:
        self._reader.stop()
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._closed_sockets.close()
        self.owners.close()

    def poll(self) -> Sequence[NetworkObservation]:
        lost = self._read_kernel_drops()
        analyzer = self.analyzer
        with self._analyzer_lock:
            finished, active = analyzer.drain(), analyzer.active()
        vanished = [obs for obs in active if self._kernel_counts(obs) and self.kernel.read(obs)]
        self._await_finals(vanished)
        finished = [self._counted(obs, lost) for obs in finished]
        active = [self._counted(obs, lost) for obs in active]
        self._previous_lost = lost
        out: list[NetworkObservation] = []
        for obs in finished:  # finished flows: their final byte counts
            self._reported.pop(obs.occurrence, None)
            self._flow_drops.pop(obs.occurrence, None)
            self.kernel.forget(obs)
            out.append(obs)
        quiet_since = time.time() - SETTLE_SECONDS
        for obs in active:
            last = self._reported.get(obs.occurrence)
            if (
                last is None
                or obs.bytes_out - last >= self._report_step
                or (obs.bytes_out != last and obs.last_seen < quiet_since)
            ):
                self._reported[obs.occurrence] = obs.bytes_out
                out.append(obs)
        if len(self._reported) > 4 * analyzer.max_flows:
            self._reported.clear()
        if len(self._flow_drops) > 4 * analyzer.max_flows:
            self._flow_drops.clear()
        self._watch_servers(out)
        return self._attribute(out)

    # --- internals ----------------------------------------------------------------------------

    def _kernel_counts(self, obs: NetworkObservation) -> bool:
        """A watched TCP flow: its bytes come from its socket's counters where they can be read."""
        return kernel_countable(obs) and self._follows(obs)

    def _counted(self, obs: NetworkObservation, lost: int) -> NetworkObservation:
        """The flow's bytes as its socket's kernel counters have them, where it is a watched TCP
        flow whose socket could be read; and, where the capture counted them, how many packets
        the capture lost while it lived (`lost`: since the last poll)."""
        if self._kernel_counts(obs):
            obs = self.kernel.count(obs)
        # A flow new at this poll may have lived through the previous poll's losses too: the
        # capture thread, behind when packets are lost, may only now have seen its first packet.
        before = self._previous_lost if obs.occurrence not in self._reported else 0
        drops = self._flow_drops.get(obs.occurrence, before) + lost
        if not drops:
            return obs
        self._flow_drops[obs.occurrence] = drops
        return obs if obs.bytes_source == "kernel" else replace(obs, capture_drops=drops)

    def _read(self) -> None:
        sock = self._socket
        fd = sock.ins
        closed = self._closed_sockets
        while not self._reader.stopping.is_set():
            try:
                ready, _, _ = select.select([fd, closed] if closed.fileno() >= 0 else [fd], [], [], 0.2)
                if closed in ready:  # sockets destroyed: final counts for the flows they carried
                    self._take_closed()
                if fd not in ready:
                    continue
                frame = fd.recv(SNAPLEN)
            except OSError as exc:
                if not self._reader.stopping.is_set():
                    self._error = f"capture failed: {exc}"
                return
            if not self._kernel_filter and not _python_filter(frame):
                continue
            # lo shows every packet twice (its outgoing and its incoming copy): the analyzer
            # counts the second one as a loopback duplicate.
            with self._analyzer_lock:
                self.analyzer.feed(time.time(), LINKTYPE_ETHERNET, frame)
                named, self._named = self._named, []
                closing, self._closing = self._closing, []
            for obs in named:
                self._attribute_now(obs)
            for obs in closing:  # a FIN or RST: the socket's counters, while it is still there
                self.kernel.read(obs)

    def _on_name(self, obs: NetworkObservation) -> None:
        """The analyzer named a flow (reader thread, analyzer lock held): keep it if watched."""
        if self._follows(obs):
            self._named.append(obs)

    def _take_closed(self) -> None:
        """The destroyed sockets' last counters waiting now (reader thread, or a poll)."""
        with self._closed_lock:
            if self._closed_sockets.fileno() >= 0:
                self.kernel.closed(self._closed_sockets.read())

    def _await_finals(self, vanished: list[NetworkObservation]) -> None:
        """Sockets that closed since the last read: their destroy events are due, with the final
        counts; wait for them a little (CLOSED_WAIT), so this poll reports those, not a guess."""
        closed = self._closed_sockets
        deadline = time.monotonic() + CLOSED_WAIT
        while vanished and closed.fileno() >= 0 and time.monotonic() < deadline:
            select.select([closed], [], [], 0.01)
            self._take_closed()
            vanished = [obs for obs in vanished if not self.kernel.final(obs)]

    def _on_close(self, obs: NetworkObservation) -> None:
        """A named TCP flow carries a FIN or RST (reader thread, analyzer lock held)."""
        if self._follows(obs):
            self._closing.append(obs)

    def _follows(self, obs: NetworkObservation) -> bool:
        """A flow to a watched host, or one whose real host an Encrypted Client Hello hid."""
        return self._watch is not None and (self._watch(obs.host_name) or bool(obs.ech_outer_name))

    def _attribute_now(self, obs: NetworkObservation) -> None:
        """A watched flow was just named: watch its server, and find who owns it while it is open."""
        if obs.source != "dns" or obs.ech_outer_name:  # a flow of its own, not a DNS question
            self._watch_addresses([obs.server_ip])
        owner, found = self.owners.find(obs)
        if kernel_countable(obs):
            self.kernel.follow(obs, found)
        with self._owners_lock:
            self._early_owners[obs.occurrence] = owner
            while len(self._early_owners) > MAX_EARLY_OWNERS:
                self._early_owners.pop(next(iter(self._early_owners)))

    def _attach(self, expression: str) -> bool:
        """Compile with libpcap and attach to the socket; False when that is not possible."""
        try:
            attach_filter(self._socket.ins, expression, LINKTYPE_ETHERNET)
            return True
        except FilterError as exc:
            log.warning("network sensor: BPF filter not attached: %s", exc)
            return False

    def _attribute(self, observations: list[NetworkObservation]) -> list[NetworkObservation]:
        """Name the process that owns each watched flow's socket.

        Most were found by the reader thread when the flow was named; a flow missed there (its
        socket not yet readable, or named only now, after a DNS answer) is looked up once more
        here. A flow keeps its owner for its life; a socket that closed first stays unattributed.
        """
        if self._watch is None:
            return observations
        pending = [o for o in observations if o.occurrence not in self._owners and self._follows(o)]
        for obs in pending:
            with self._owners_lock:
                known = self._early_owners.pop(obs.occurrence, None)
            self._owners[obs.occurrence] = known if known is not None else self.owners.owner(obs)
        while len(self._owners) > 4 * self.analyzer.max_flows:
            self._owners.pop(next(iter(self._owners)))
        return [
            replace(o, process=self._owners[o.occurrence]) if self._owners.get(o.occurrence) else o
            for o in observations
        ]

    def _watch_servers(self, observations: Sequence[NetworkObservation]) -> None:
        """Capture every packet to servers of watched hosts from now on (bytes for uploads)."""
        if self._watch is None:
            return
        watch = self._watch
        self._watch_addresses([o.server_ip for o in observations if o.source != "dns" and watch(o.host_name)])

    def _watch_addresses(self, addresses: Sequence[str]) -> None:
        """Add server addresses to the kernel filter (from the poll or the reader thread)."""
        if not self._kernel_filter:
            return
        with self._filter_lock:
            new = [ip for ip in dict.fromkeys(addresses) if ip not in self._watched]
            if not new or self._socket is None:
                return
            self._watched = [*self._watched, *new][-MAX_WATCHED:]
            hosts = " or ".join(f"host {ip}" for ip in self._watched)
            self._attach(f"{BPF_FILTER} or {hosts}")

    def _read_kernel_drops(self) -> int:
        """Add the kernel's counts for the capture socket (PACKET_STATISTICS: packets delivered
        and dropped, each read resets them) to ours; return the drops new since the last read."""
        if self._socket is None:
            return 0
        try:
            raw = self._socket.ins.getsockopt(_SOL_PACKET, _PACKET_STATISTICS, 8)
        except OSError:
            return 0
        packets, drops = struct.unpack("II", raw)
        self._captured += packets
        self._dropped += drops
        return int(drops)

    @property
    def dropped(self) -> int:
        """Packets the capture lost since start (the socket's queue was full in the kernel)."""
        return self._dropped

    @property
    def captured(self) -> int:
        """Packets the kernel handed the capture socket since start, the lost ones included."""
        return self._captured

    @property
    def watched(self) -> tuple[str, ...]:
        return tuple(self._watched)


def _python_filter(frame: bytes) -> bool:
    """The BPF filter's job, done in Python when no kernel filter could be attached."""
    p = decode(LINKTYPE_ETHERNET, frame)
    if p is None:
        return False
    if 53 in (p.sport, p.dport):
        return True
    if p.proto == TCP:
        return tls.looks_like_handshake_record(p.payload) or (
            p.dport == 80 and http.looks_like_request(p.payload)
        )
    return 443 in (p.sport, p.dport) and bool(p.payload) and p.payload[0] & 0x80 != 0


class _PacketSocket:
    """A raw AF_PACKET socket: bound to one interface, or unbound to hear every interface
    (scapy's listen socket needs a default interface, which a host without a route lacks)."""

    def __init__(self, interface: str | None) -> None:
        self.ins = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
        if interface:
            try:
                self.ins.bind((interface, _ETH_P_ALL))
            except OSError:
                self.ins.close()
                raise

    def close(self) -> None:
        self.ins.close()


_ETH_P_ALL = 0x0003

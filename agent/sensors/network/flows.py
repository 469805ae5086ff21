"""Flows -> host names: the network detections' engine, for saved captures and the live sensor.

`FlowAnalyzer` takes decoded packets (from a capture file or a sniffer), keeps a small state per
flow (5-tuple), and names flows from the first bytes that name a service: DNS questions (and the
answers, which teach it IP -> name), a TLS ClientHello's SNI (reassembled across records and
TCP segments, on any port, STARTTLS included), a QUIC Initial's SNI (decrypted, reassembled
across packets) and a plain-HTTP Host header. It counts packets and IP bytes per flow in both
directions, relative to the client, so uploads show as bytes out. A flow with no name of its
own to an address a DNS answer gave is named after that answer (source "dns").

Bounds: at most `max_flows` flows (the least recently active is finished early when full);
parsers look at the first `MAX_CLIENT_SEGMENTS` client segments of a flow only; every
reassembly buffer is bounded in bytes (the parsers' limits) and in time (`buffer_timeout`).
Loopback packets seen twice (capturing on "any" sees lo's outgoing and incoming copy) count
once.

The `scan --pcap` runner (agent/cli/pcap.py) feeds it a capture file; the live sensor feeds it
sniffed packets.
"""

from __future__ import annotations

import socket
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from agent.netparse import dns, http, quic, tls
from agent.netparse.frames import TCP, Packet, decode
from agent.observations import NetworkObservation

__all__ = [
    "SOURCES",
    "FlowAnalyzer",
    "NetworkObservation",
    "ScanStats",
]

SOURCES: Final = ("dns", "tls_sni", "quic_sni", "http_host", "socket_table")  # the last: no capture
MAX_CLIENT_SEGMENTS: Final = 16  # client data segments a flow's parsers look at (STARTTLS fits)
MAX_OUT_OF_ORDER: Final = 16  # client segments held ahead of a gap
MAX_DNS_NAMES_PER_FLOW: Final = 256
MAX_IP_NAMES: Final = 65536
MAX_QUIC_TRIES: Final = 16  # long-header datagrams tried per flow before giving up
LOOPBACK_DUP_WINDOW: Final = 0.002  # seconds: the two copies of a lo packet are microseconds apart
_DNS_PORTS: Final = frozenset({53})
_SERVICE_PORTS: Final = frozenset({53, 80, 443, 853, 8080, 8443})

_UNDECIDED, _PARSING, _DONE = 0, 1, 2
_FIN_RST: Final = 0x05  # TCP flags
#: A stream start's source -> the ScanStats counters of starts read and of broken ones.
_START_STATS: Final = {"tls_sni": ("tls_hellos", "tls_errors"), "http_host": ("http_requests", "http_errors")}


@dataclass
class ScanStats:
    """What the analyzer saw and what it could not read (malformed input is counted, not raised)."""

    packets: int = 0
    bytes: int = 0
    undecoded: int = 0  # not TCP/UDP over IP, an unknown link type, or malformed headers
    loopback_duplicates: int = 0
    flows: int = 0
    flows_evicted: int = 0  # finished early because the flow table was full
    dns_messages: int = 0
    dns_errors: int = 0
    tls_hellos: int = 0
    tls_errors: int = 0
    quic_initials: int = 0
    quic_errors: int = 0  # long-header datagrams we could not open or parse
    http_requests: int = 0
    http_errors: int = 0
    buffers_expired: int = 0
    capture_errors: int = 0  # truncated or oversized records in the file


class _NameStat:
    __slots__ = ("aliases", "bytes_in", "bytes_out", "first", "last", "packets")

    def __init__(self, ts: float) -> None:
        self.first = self.last = ts
        self.bytes_out = self.bytes_in = self.packets = 0
        self.aliases: tuple[str, ...] = ()


class _Flow:
    __slots__ = (
        "bytes_in",
        "bytes_out",
        "client",
        "client_port",
        "dns_ids",
        "dns_in",
        "dns_names",
        "dns_out",
        "ech_outer",
        "first",
        "last",
        "name",
        "next_seq",
        "packets",
        "parser",
        "pending",
        "proto",
        "scid",
        "server",
        "server_port",
        "source",
        "stage",
        "tries",
    )

    def __init__(self, proto: int, client: bytes, cport: int, server: bytes, sport: int, ts: float) -> None:
        self.proto = proto
        self.client, self.client_port = client, cport
        self.server, self.server_port = server, sport
        self.first = self.last = ts
        self.bytes_out = self.bytes_in = self.packets = 0
        self.name: str | None = None
        self.source = ""
        self.ech_outer = ""  # the public name of an Encrypted Client Hello that hid the real one
        self.stage = _UNDECIDED
        self.tries = 0
        self.next_seq: int | None = None
        self.pending: dict[int, bytes] | None = None
        self.parser: (
            tls.ClientHelloBuffer | http.HttpRequestBuffer | dns.TcpDnsBuffer | quic.CryptoAssembler | None
        ) = None
        self.dns_names: dict[str, _NameStat] | None = None
        self.dns_ids: dict[int, bool] = {}  # DNS query id -> answered yet (UDP)
        self.scid: bytes | None = None  # the QUIC client's connection id, from its first Initial
        self.dns_out: dns.TcpDnsBuffer | None = None
        self.dns_in: dns.TcpDnsBuffer | None = None

    def swap(self) -> None:
        """The other side is the client after all (it sent the hello or the query)."""
        self.client, self.server = self.server, self.client
        self.client_port, self.server_port = self.server_port, self.client_port
        self.bytes_out, self.bytes_in = self.bytes_in, self.bytes_out
        self.next_seq, self.pending = None, None


@dataclass
class FlowAnalyzer:
    """Per-flow state over a packet stream; `drain()` hands out what it learned."""

    max_flows: int = 65536
    idle_timeout: float = 300.0  # a flow silent this long is finished
    buffer_timeout: float = 10.0  # a reassembly buffer older than this is dropped
    stats: ScanStats = field(default_factory=ScanStats)
    #: Called the moment a flow is named (a DNS question: each new name the client asks), with
    #: the flow's observation so far: the live sensor attributes it while its socket is open.
    on_name: Callable[[NetworkObservation], None] | None = None
    #: Called when a named TCP flow carries a FIN or RST (either way), with its observation so far:
    #: the live sensor reads the socket's byte counters then, before the socket is gone.
    on_close: Callable[[NetworkObservation], None] | None = None

    def __post_init__(self) -> None:
        self._flows: OrderedDict[tuple[int, bytes, int, bytes, int], _Flow] = OrderedDict()
        self._ip_names: OrderedDict[bytes, tuple[str, tuple[str, ...]]] = OrderedDict()
        self._finished: list[NetworkObservation] = []
        self._recent_lo: deque[tuple[float, int]] = deque()
        self._recent_lo_set: set[int] = set()
        self._last_sweep = 0.0

    # --- input ------------------------------------------------------------------------------

    def feed(self, ts: float, linktype: int, frame: bytes) -> None:
        """One captured frame."""
        self.stats.packets += 1
        pkt = decode(linktype, frame)
        if pkt is None:
            self.stats.undecoded += 1
            return
        self.feed_packet(ts, pkt)

    def feed_packet(self, ts: float, p: Packet) -> None:
        """One decoded packet."""
        if _is_loopback(p.src) and self._duplicate(ts, p):
            self.stats.loopback_duplicates += 1
            return
        self.stats.bytes += p.ip_length
        src, dst = (p.src, p.sport), (p.dst, p.dport)
        key = (
            (p.proto, p.src, p.sport, p.dst, p.dport)
            if src <= dst
            else (p.proto, p.dst, p.dport, p.src, p.sport)
        )
        flow = self._flows.get(key)
        if flow is not None and _restarts(flow, p):
            del self._flows[key]  # a new socket on the same ports: a new flow, its own owner
            self._finish(flow)
            flow = None
        if flow is None:
            flow = self._new_flow(key, p, ts)
        else:
            self._flows.move_to_end(key)
        outbound = p.src == flow.client and p.sport == flow.client_port
        flow.last = ts
        flow.packets += 1
        if outbound:
            flow.bytes_out += p.ip_length
        else:
            flow.bytes_in += p.ip_length
        if p.proto == TCP:
            if p.tcp_flags & _FIN_RST and flow.name is not None and self.on_close is not None:
                self.on_close(_flow_observation(flow, flow.name, flow.source, ()))
            if flow.stage != _DONE:
                self._tcp(flow, p, outbound, ts)
        elif p.sport in _DNS_PORTS or p.dport in _DNS_PORTS:
            self._udp_dns(flow, p, outbound, ts)
        elif flow.stage != _DONE and p.payload:
            self._quic(flow, p, outbound, ts)
        if ts - self._last_sweep > 1.0:
            self._sweep(ts)

    def _new_flow(self, key: tuple[int, bytes, int, bytes, int], p: Packet, ts: float) -> _Flow:
        if len(self._flows) >= self.max_flows:
            _, oldest = self._flows.popitem(last=False)
            self.stats.flows_evicted += 1
            self._finish(oldest)
        # Who is the client: the SYN's sender; else the side not on a service port.
        if p.proto == TCP and p.tcp_flags & 0x12 == 0x12:  # SYN+ACK comes from the server
            client_is_src = False
        elif p.proto == TCP and p.tcp_flags & 0x02:
            client_is_src = True
        else:
            client_is_src = not (p.sport in _SERVICE_PORTS and p.dport not in _SERVICE_PORTS)
        if client_is_src:
            flow = _Flow(p.proto, p.src, p.sport, p.dst, p.dport, ts)
        else:
            flow = _Flow(p.proto, p.dst, p.dport, p.src, p.sport, ts)
        self._flows[key] = flow
        self.stats.flows += 1
        return flow

    def _duplicate(self, ts: float, p: Packet) -> bool:
        recent, seen = self._recent_lo, self._recent_lo_set
        while recent and ts - recent[0][0] > LOOPBACK_DUP_WINDOW:
            seen.discard(recent.popleft()[1])
        digest = hash(
            (p.src, p.dst, p.sport, p.dport, p.proto, p.tcp_seq, p.tcp_flags, p.ip_length, p.payload)
        )
        if digest in seen:
            return True
        seen.add(digest)
        recent.append((ts, digest))
        return False

    # --- TCP --------------------------------------------------------------------------------

    def _tcp(self, flow: _Flow, p: Packet, outbound: bool, ts: float) -> None:
        if p.tcp_flags & 0x02:  # SYN: data starts at ISN + 1
            if outbound and not p.tcp_flags & 0x10:
                flow.next_seq = (p.tcp_seq + 1) & 0xFFFFFFFF
            return
        if not p.payload:
            return
        if not outbound:
            if flow.server_port in _DNS_PORTS:
                if flow.dns_in is None:
                    flow.dns_in = dns.TcpDnsBuffer()
                self._dns_messages(flow, flow.dns_in.feed(p.payload), p, ts, outbound=False)
            elif (
                flow.stage == _UNDECIDED
                and flow.tries == 0
                and flow.next_seq is None
                and (tls.looks_like_handshake_record(p.payload) or http.looks_like_request(p.payload))
            ):
                flow.swap()  # we guessed the client wrong (no SYN seen): the hello's sender is it
                self._tcp(flow, p, True, ts)
            return
        self._in_order(flow, p.tcp_seq, p.payload, ts)

    def _in_order(self, flow: _Flow, seq: int, data: bytes, ts: float) -> None:
        """Deliver client bytes in sequence order; hold a few segments ahead of a gap."""
        if flow.next_seq is None:
            flow.next_seq = seq
        ahead = (seq - flow.next_seq) & 0xFFFFFFFF
        if ahead >= 0x80000000:  # starts before what we have: a retransmission, maybe overlapping
            behind = 0x100000000 - ahead
            if behind >= len(data):
                return
            data, ahead = data[behind:], 0
        if ahead:
            if flow.pending is None:
                flow.pending = {}
            if len(flow.pending) < MAX_OUT_OF_ORDER and ahead < tls.MAX_HELLO:
                flow.pending.setdefault(seq, data)
            return
        self._deliver(flow, data, ts)
        while flow.pending and flow.stage != _DONE:
            nxt = flow.pending.pop(flow.next_seq, None) if flow.next_seq is not None else None
            if nxt is None:
                break
            self._deliver(flow, nxt, ts)

    def _deliver(self, flow: _Flow, data: bytes, ts: float) -> None:
        assert flow.next_seq is not None
        flow.next_seq = (flow.next_seq + len(data)) & 0xFFFFFFFF
        parser = flow.parser
        if parser is None:
            flow.tries += 1
            if flow.tries > MAX_CLIENT_SEGMENTS:
                self._done(flow)
                return
            if data[0] == tls.HANDSHAKE and len(data) > 1 and data[1] == 3:
                parser = tls.ClientHelloBuffer(ts)
            elif flow.server_port in _DNS_PORTS:
                parser = dns.TcpDnsBuffer()
            elif http.looks_like_request(data[:8]) or (len(data) < 8 and data.isupper()):
                parser = http.HttpRequestBuffer(ts)
            else:
                return  # not a start we read; a later segment may be (STARTTLS)
            flow.parser = parser
            flow.stage = _PARSING
        if isinstance(parser, tls.ClientHelloBuffer):
            hello = parser.feed(data)
            if hello is not None and hello.name_hidden:
                flow.ech_outer = hello.server_name or ""
            name = None if hello is None else hello.server_name or ""
            self._start_read(flow, "tls_sni", name, parser.failed)
        elif isinstance(parser, http.HttpRequestBuffer):
            req = parser.feed(data)
            name = None if req is None else req.host or ""
            self._start_read(flow, "http_host", name, parser.failed)
        elif isinstance(parser, dns.TcpDnsBuffer):
            if flow.dns_out is None:
                flow.dns_out = parser
            self._dns_messages(flow, parser.feed(data), None, ts, outbound=True)
            if parser.broken:
                self._done(flow)

    # --- UDP --------------------------------------------------------------------------------

    def _udp_dns(self, flow: _Flow, p: Packet, outbound: bool, ts: float) -> None:
        msg = dns.parse_dns(p.payload)
        if msg is None:
            self.stats.dns_errors += 1
            return
        if not msg.is_response and not outbound and flow.dns_names is None:
            flow.swap()  # the query's sender is the client
            outbound = True
        if msg.is_response:
            if msg.id in flow.dns_ids:
                flow.dns_ids[msg.id] = True
        elif outbound and len(flow.dns_ids) < MAX_DNS_NAMES_PER_FLOW:
            flow.dns_ids.setdefault(msg.id, False)
        self._dns_messages(flow, [msg], p, ts, outbound)

    def _dns_messages(
        self, flow: _Flow, messages: Iterable[dns.DnsMessage], p: Packet | None, ts: float, outbound: bool
    ) -> None:
        for msg in messages:
            self.stats.dns_messages += 1
            if flow.dns_names is None:
                flow.dns_names = {}
            aliases = msg.aliases() if msg.is_response else ()
            for name, _qtype in msg.questions:
                if not name:
                    continue
                stat = flow.dns_names.get(name)
                asked = stat is None and outbound and not msg.is_response
                if stat is None:
                    if len(flow.dns_names) >= MAX_DNS_NAMES_PER_FLOW:
                        continue
                    stat = flow.dns_names[name] = _NameStat(ts)
                stat.last = ts
                stat.packets += 1
                size = p.ip_length if p is not None else 0
                if outbound:
                    stat.bytes_out += size
                else:
                    stat.bytes_in += size
                if aliases:
                    stat.aliases = tuple(dict.fromkeys((*stat.aliases, *aliases)))[:16]
                if asked and self.on_name is not None:
                    self.on_name(_dns_observation(flow, name, stat))
            if msg.is_response:
                for address, name in msg.addresses().items():
                    self._learn(address, name, aliases)

    def _learn(self, address: str, name: str, aliases: tuple[str, ...]) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        packed = socket.inet_pton(family, address)
        self._ip_names[packed] = (name, aliases)
        self._ip_names.move_to_end(packed)
        if len(self._ip_names) > MAX_IP_NAMES:
            self._ip_names.popitem(last=False)

    def _quic(self, flow: _Flow, p: Packet, outbound: bool, ts: float) -> None:
        payload = p.payload
        if payload[0] & 0x80 == 0 and (len(payload) < 14 or payload[0] & 0x09 != 0x09):
            return  # short header (or not QUIC at all): nothing to read
        flow.tries += 1
        if flow.tries > MAX_QUIC_TRIES:
            self._done(flow)
            return
        assembler = flow.parser
        packets = quic.parse_datagram(
            payload, assembler.dcid if isinstance(assembler, quic.CryptoAssembler) else None
        )
        if packets is None:
            self.stats.quic_errors += 1
            return
        self.stats.quic_initials += 1
        if not outbound:
            if flow.parser is not None:
                return  # an Initial the other way, once the client is known: not the client's
            flow.swap()
        if not isinstance(assembler, quic.CryptoAssembler):
            assembler = flow.parser = quic.CryptoAssembler(ts, dcid=packets[0].dcid)
            flow.stage = _PARSING
            flow.scid = _long_header_scid(payload)
        for packet in packets:
            for offset, data in packet.crypto:
                result = assembler.add(offset, data)
                if isinstance(result, str):
                    self._named(flow, result, "quic_sni")
                    return
                if result is not None:
                    if result.name_hidden:
                        flow.ech_outer = result.server_name or ""
                    self._named(flow, result.server_name, "quic_sni")
                    return
        if assembler.failed:
            self.stats.quic_errors += 1
            self._done(flow)

    # --- verdicts and output ----------------------------------------------------------------

    def _start_read(self, flow: _Flow, source: str, name: str | None, failed: bool) -> None:
        """A TLS or HTTP start was fed: `name` when it was read whole ("" when it names nothing),
        None while it is incomplete; `failed` when it is not one after all."""
        read, broken = _START_STATS[source]
        if name is not None:
            setattr(self.stats, read, getattr(self.stats, read) + 1)
            self._named(flow, name, source)
        elif failed:
            setattr(self.stats, broken, getattr(self.stats, broken) + 1)
            flow.parser, flow.stage = None, _UNDECIDED

    def _named(self, flow: _Flow, name: str | None, source: str) -> None:
        if name:
            if flow.ech_outer and (learned := self._ip_names.get(flow.server)) is not None:
                name, source = learned[0], "dns"  # ECH hid the real name: the one DNS gave the address
            flow.name, flow.source = name, source
            if self.on_name is not None:
                self.on_name(_flow_observation(flow, name, source, ()))
        self._done(flow)

    @staticmethod
    def _done(flow: _Flow) -> None:
        flow.stage = _DONE
        flow.parser = None
        flow.pending = None

    def _sweep(self, now: float) -> None:
        """Drop stale reassembly buffers; finish idle flows."""
        self._last_sweep = now
        for key, flow in list(self._flows.items()):
            if now - flow.last > self.idle_timeout:
                del self._flows[key]
                self._finish(flow)
                continue
            started = getattr(flow.parser, "started", None)
            if started is not None and flow.stage == _PARSING and now - started > self.buffer_timeout:
                self.stats.buffers_expired += 1
                self._done(flow)
            if flow.dns_names is None and flow.stage != _DONE and now - flow.first > self.idle_timeout:
                self._done(flow)

    def _finish(self, flow: _Flow) -> None:
        self._finished.extend(self._observations(flow))

    def _observations(self, flow: _Flow) -> list[NetworkObservation]:
        if flow.dns_names:
            return [_dns_observation(flow, name, s) for name, s in flow.dns_names.items()]
        name, source = flow.name, flow.source
        aliases: tuple[str, ...] = ()
        if name is None:
            learned = self._ip_names.get(flow.server)
            if learned is None or flow.dns_out is not None:
                return []
            (name, aliases), source = learned, "dns"
        return [_flow_observation(flow, name, source, aliases)]

    def drain(self, final: bool = False) -> list[NetworkObservation]:
        """Observations of finished flows; with `final`, of every flow (and forget them all)."""
        if final:
            for flow in self._flows.values():
                self._finish(flow)
            self._flows.clear()
        out, self._finished = self._finished, []
        return out

    def active(self) -> list[NetworkObservation]:
        """Observations of flows still open (the live sensor reports these as they grow)."""
        flows = list(self._flows.values())  # one copy: a capture thread may add flows meanwhile
        return [obs for flow in flows for obs in self._observations(flow)]


def _restarts(flow: _Flow, p: Packet) -> bool:
    """Does this packet from the client open a new connection on an old flow's ports (a new
    socket that got the same port: UDP ports are drawn at random and reused within seconds)?
    A TCP SYN with a new sequence number; a DNS query with a new id once every earlier one was
    answered; a QUIC long header with a new client connection id."""
    if p.src != flow.client or p.sport != flow.client_port or flow.packets == 0:
        return False
    if p.proto == TCP:
        return p.tcp_flags & 0x12 == 0x02 and flow.next_seq != (p.tcp_seq + 1) & 0xFFFFFFFF
    payload = p.payload
    if flow.server_port in _DNS_PORTS:
        if len(payload) < 3 or payload[2] & 0x80 or not flow.dns_ids:  # a response, or no question yet
            return False
        return int.from_bytes(payload[:2], "big") not in flow.dns_ids and all(flow.dns_ids.values())
    return (
        flow.scid is not None
        and bool(payload)
        and payload[0] & 0x80 != 0
        and (_long_header_scid(payload) not in (None, flow.scid))
    )


def _long_header_scid(payload: bytes) -> bytes | None:
    """The source connection id of a QUIC long header (RFC 9000 §17.2), None when cut short."""
    if len(payload) < 7:
        return None
    at = 6 + payload[5]
    if at >= len(payload) or at + 1 + payload[at] > len(payload):
        return None
    return payload[at + 1 : at + 1 + payload[at]]


def _dns_observation(flow: _Flow, name: str, s: _NameStat) -> NetworkObservation:
    """One name asked on a DNS flow."""
    return NetworkObservation(
        name,
        "dns",
        _ntop(flow.client),
        flow.client_port,
        _ntop(flow.server),
        flow.server_port,
        "tcp" if flow.proto == TCP else "udp",
        s.first,
        s.last,
        s.bytes_out,
        s.bytes_in,
        s.packets,
        s.aliases,
    )


def _flow_observation(flow: _Flow, name: str, source: str, aliases: tuple[str, ...]) -> NetworkObservation:
    """A flow named by its own bytes, or (source "dns", no name of its own) by a DNS answer."""
    return NetworkObservation(
        name,
        source,
        _ntop(flow.client),
        flow.client_port,
        _ntop(flow.server),
        flow.server_port,
        "tcp" if flow.proto == TCP else "udp",
        flow.first,
        flow.last,
        flow.bytes_out,
        flow.bytes_in,
        flow.packets,
        aliases,
        resolved=flow.name is None or (flow.source == "dns" and bool(flow.ech_outer)),
        ech_outer_name=flow.ech_outer,
    )


def _is_loopback(addr: bytes) -> bool:
    return addr[0] == 127 if len(addr) == 4 else addr == _V6_LOOPBACK


_V6_LOOPBACK: Final = bytes(15) + b"\x01"


def _ntop(addr: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(addr) == 4 else socket.AF_INET6, addr)

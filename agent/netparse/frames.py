"""Link layer -> IPv4/IPv6 -> TCP/UDP, for the link types captures and sniffers hand us.

Only what flow tracking needs is decoded (addresses, ports, TCP flags and sequence number, the
transport payload, the IP length for byte counts). Lengths from headers are trusted only as
far as the bytes present: Ethernet padding is cut using the IP length, and a header that
claims more than the frame holds makes the packet undecodable (None), never an exception.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "LINKTYPE_ETHERNET",
    "LINKTYPE_IPV4",
    "LINKTYPE_IPV6",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_LINUX_SLL2",
    "LINKTYPE_LOOP",
    "LINKTYPE_NULL",
    "LINKTYPE_RAW",
    "SUPPORTED_LINKTYPES",
    "TCP",
    "UDP",
    "Packet",
    "decode",
    "decode_ip",
]

LINKTYPE_NULL: Final = 0  # BSD loopback: 4-byte address family in the capturing host's order
LINKTYPE_ETHERNET: Final = 1
LINKTYPE_RAW: Final = 101  # raw IPv4 or IPv6 (12 and 14 are older numbers for the same thing)
LINKTYPE_LOOP: Final = 108  # OpenBSD loopback: address family in network order
LINKTYPE_LINUX_SLL: Final = 113
LINKTYPE_IPV4: Final = 228
LINKTYPE_IPV6: Final = 229
LINKTYPE_LINUX_SLL2: Final = 276
SUPPORTED_LINKTYPES: Final = frozenset(
    {
        LINKTYPE_NULL,
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW,
        12,
        14,
        LINKTYPE_LOOP,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
        LINKTYPE_LINUX_SLL2,
    }
)

TCP: Final = 6
UDP: Final = 17

_ETH_IPV4: Final = 0x0800
_ETH_IPV6: Final = 0x86DD
_ETH_VLAN: Final = frozenset({0x8100, 0x88A8, 0x9100})
_MAX_VLAN_TAGS: Final = 4  # QinQ is two; more is a malformed frame
# Address families that mean IPv6 in a DLT_NULL header (Linux/BSDs/macOS differ).
_AF_INET6: Final = frozenset({10, 24, 28, 30})
# IPv6 extension headers we step over; anything else ends the chain.
_V6_EXTENSIONS: Final = frozenset({0, 43, 60})
_V6_FRAGMENT: Final = 44
_MAX_V6_EXTENSIONS: Final = 8

_U16: Final = struct.Struct("!H")
_TCP_HDR: Final = struct.Struct("!HHIIBB")
_UDP_HDR: Final = struct.Struct("!HHH")


@dataclass(frozen=True, slots=True)
class Packet:
    """One decoded IP packet carrying TCP or UDP."""

    version: int  # 4 or 6
    src: bytes  # packed address (4 or 16 bytes)
    dst: bytes
    proto: int  # TCP or UDP
    sport: int
    dport: int
    payload: bytes  # transport payload
    ip_length: int  # bytes of the IP packet (what byte counts add up)
    tcp_flags: int = 0
    tcp_seq: int = 0
    fragment: bool = False  # the first fragment of a fragmented datagram: payload is partial


def decode(linktype: int, frame: bytes) -> Packet | None:
    """Decode one captured frame; None for anything that is not TCP/UDP over IP, or malformed."""
    try:
        offset = _link_offset(linktype, frame)
        if offset is None:
            return None
        return decode_ip(frame, offset)
    except (IndexError, struct.error):  # belt and braces: every read below is bounds-checked
        return None


def _link_offset(linktype: int, frame: bytes) -> int | None:
    """Offset of the IP header in the frame, or None when the frame carries no IP."""
    n = len(frame)
    if linktype == LINKTYPE_ETHERNET:
        offset, tags = 12, 0
        while True:
            if n < offset + 2:
                return None
            ethertype = _U16.unpack_from(frame, offset)[0]
            if ethertype in _ETH_VLAN:
                tags += 1
                if tags > _MAX_VLAN_TAGS:
                    return None
                offset += 4
                continue
            break
        return offset + 2 if ethertype in (_ETH_IPV4, _ETH_IPV6) else None
    if linktype in (LINKTYPE_RAW, 12, 14, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return 0
    if linktype == LINKTYPE_LINUX_SLL:
        if n < 16:
            return None
        return 16 if _U16.unpack_from(frame, 14)[0] in (_ETH_IPV4, _ETH_IPV6) else None
    if linktype == LINKTYPE_LINUX_SLL2:
        if n < 20:
            return None
        return 20 if _U16.unpack_from(frame, 0)[0] in (_ETH_IPV4, _ETH_IPV6) else None
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if n < 4:
            return None
        # The family is a 32-bit word in the capturing host's byte order (network order for
        # LOOP); the values are small, so whichever end holds a non-zero byte tells.
        family = (frame[0] or frame[3]) if linktype == LINKTYPE_NULL else frame[3]
        return 4 if family == 2 or family in _AF_INET6 else None
    return None


def decode_ip(data: bytes, offset: int = 0, tunnelled: bool = False) -> Packet | None:
    """Decode an IP packet starting at `offset` (the version nibble decides v4 or v6).

    A GTP-U tunnel (mobile networks' user plane, UDP port 2152) is opened once: the packet
    returned is the inner one, whose flow is what a host name belongs to.
    """
    if len(data) < offset + 20:
        return None
    version = data[offset] >> 4
    fragment = False
    if version == 4:
        ihl = (data[offset] & 0x0F) * 4
        total = _U16.unpack_from(data, offset + 2)[0]
        if ihl < 20 or total < ihl:
            return None
        end = min(offset + total, len(data))  # cut Ethernet padding; a snapped packet stays short
        frag = _U16.unpack_from(data, offset + 6)[0]
        if frag & 0x1FFF:
            return None  # a later fragment: no transport header
        fragment = bool(frag & 0x2000)
        proto = data[offset + 9]
        src = data[offset + 12 : offset + 16]
        dst = data[offset + 16 : offset + 20]
        l4 = offset + ihl
        ip_length = total
    elif version == 6:
        if len(data) < offset + 40:
            return None
        plen = _U16.unpack_from(data, offset + 4)[0]
        end = min(offset + 40 + plen, len(data))
        proto = data[offset + 6]
        src = data[offset + 8 : offset + 24]
        dst = data[offset + 24 : offset + 40]
        l4 = offset + 40
        ip_length = 40 + plen
        for _ in range(_MAX_V6_EXTENSIONS):
            if proto in _V6_EXTENSIONS:
                if end < l4 + 8:
                    return None
                proto, hlen = data[l4], (data[l4 + 1] + 1) * 8
                l4 += hlen
            elif proto == _V6_FRAGMENT:
                if end < l4 + 8:
                    return None
                frag = _U16.unpack_from(data, l4 + 2)[0]
                if frag & 0xFFF8:
                    return None
                fragment = bool(frag & 1)
                proto = data[l4]
                l4 += 8
            else:
                break
        else:
            return None
    else:
        return None
    if l4 > end:
        return None
    if proto == TCP:
        if end < l4 + 20:
            return None
        sport, dport, seq, _ack, off, flags = _TCP_HDR.unpack_from(data, l4)
        doff = (off >> 4) * 4
        if doff < 20 or l4 + doff > end:
            return None
        return Packet(
            version, src, dst, TCP, sport, dport, data[l4 + doff : end], ip_length, flags, seq, fragment
        )
    if proto == UDP:
        if end < l4 + 8:
            return None
        sport, dport, ulen = _UDP_HDR.unpack_from(data, l4)
        stop = end if fragment or ulen < 8 else min(end, l4 + ulen)
        if GTP_U_PORT in (sport, dport) and not tunnelled:
            inner = _gtp_payload(data, l4 + 8, stop)
            if inner is not None:
                return decode_ip(data[:stop], inner, tunnelled=True)
        return Packet(version, src, dst, UDP, sport, dport, data[l4 + 8 : stop], ip_length, 0, 0, fragment)
    return None


GTP_U_PORT: Final = 2152
_MAX_GTP_EXTENSIONS: Final = 4


def _gtp_payload(data: bytes, pos: int, end: int) -> int | None:
    """Offset of the IP packet a GTPv1-U G-PDU carries, or None."""
    if end < pos + 8 or data[pos] >> 5 != 1 or data[pos] & 0x10 == 0 or data[pos + 1] != 0xFF:
        return None
    flags = data[pos]
    inner = pos + 8
    if flags & 0x07:  # sequence number, N-PDU number or extension header present
        if end < inner + 4:
            return None
        next_type = data[inner + 3]
        inner += 4
        for _ in range(_MAX_GTP_EXTENSIONS):
            if next_type == 0:
                break
            if end < inner + 1 or data[inner] == 0:
                return None
            length = data[inner] * 4
            if end < inner + length:
                return None
            next_type = data[inner + length - 1]
            inner += length
        else:
            return None
    return inner if inner < end and data[inner] >> 4 in (4, 6) else None

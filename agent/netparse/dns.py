"""DNS messages (RFC 1035) over UDP, and over TCP with the 2-byte length prefix.

We read the question names (what a program asked for) and, in responses, A/AAAA/CNAME answers
(what the name resolved to: the scanner learns IP -> name from them, so later flows to those
addresses without SNI still get a name). Names are lower-cased and given without the trailing
dot. Compression pointers are followed at most `MAX_POINTERS` times per name, so a pointer loop
ends; names longer than 255 bytes are malformed. Sections are read up to fixed counts, however
many records the header claims.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_ANSWERS",
    "MAX_QUESTIONS",
    "TYPE_A",
    "TYPE_AAAA",
    "TYPE_CNAME",
    "DnsAnswer",
    "DnsMessage",
    "TcpDnsBuffer",
    "parse_dns",
    "parse_dns_tcp",
]

TYPE_A: Final = 1
TYPE_CNAME: Final = 5
TYPE_AAAA: Final = 28

MAX_QUESTIONS: Final = 8  # real queries carry one; the header's count is not trusted
MAX_ANSWERS: Final = 64
MAX_POINTERS: Final = 16
MAX_NAME: Final = 255  # RFC 1035 §2.3.4, wire length
MAX_TCP_BUFFER: Final = 65537  # one maximal message plus its prefix

_HEADER: Final = struct.Struct("!HHHHHH")
_RR: Final = struct.Struct("!HHIH")
_Q: Final = struct.Struct("!HH")
_PRINTABLE: Final = frozenset(range(0x21, 0x7F)) - {ord(".")}


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    name: str  # owner name
    rtype: int
    value: str  # address text for A/AAAA, target name for CNAME


@dataclass(frozen=True, slots=True)
class DnsMessage:
    id: int
    is_response: bool
    opcode: int
    rcode: int
    questions: tuple[tuple[str, int], ...]  # (name, qtype)
    answers: tuple[DnsAnswer, ...] = ()

    def addresses(self) -> dict[str, str]:
        """Address -> the question name it answers, following CNAME chains back to the question."""
        if not self.questions:
            return {}
        alias_of: dict[str, str] = {}
        for a in self.answers:
            if a.rtype == TYPE_CNAME:
                alias_of.setdefault(a.value, a.name)
        out: dict[str, str] = {}
        for a in self.answers:
            if a.rtype in (TYPE_A, TYPE_AAAA):
                name = a.name
                for _ in range(len(alias_of) + 1):  # a CNAME loop cannot spin
                    parent = alias_of.get(name)
                    if parent is None:
                        break
                    name = parent
                out[a.value] = name
        return out

    def aliases(self) -> tuple[str, ...]:
        """CNAME targets in the answer (a name can resolve through an AI provider's host)."""
        return tuple(dict.fromkeys(a.value for a in self.answers if a.rtype == TYPE_CNAME))


def parse_dns(data: bytes) -> DnsMessage | None:
    """Parse one DNS message; None when it is not a well-formed message."""
    if len(data) < 12:
        return None
    msg_id, flags, qd, an, _ns, _ar = _HEADER.unpack_from(data, 0)
    opcode = (flags >> 11) & 0xF
    if opcode > 6 or (qd == 0 and an == 0):
        return None
    pos = 12
    questions: list[tuple[str, int]] = []
    for _ in range(min(qd, MAX_QUESTIONS)):
        parsed = _name(data, pos)
        if parsed is None:
            return None
        name, pos = parsed
        if pos + 4 > len(data):
            return None
        qtype, _qclass = _Q.unpack_from(data, pos)
        pos += 4
        questions.append((name, qtype))
    if qd > MAX_QUESTIONS:
        return DnsMessage(msg_id, bool(flags & 0x8000), opcode, flags & 0xF, tuple(questions))
    answers: list[DnsAnswer] = []
    owners: list[tuple[str, int]] = []
    for _ in range(min(an, MAX_ANSWERS)):
        parsed = _name(data, pos)
        if parsed is None:
            break  # keep the questions: answers are a bonus
        owner, pos = parsed
        if pos + 10 > len(data):
            break
        rtype, _rclass, _ttl, rdlen = _RR.unpack_from(data, pos)
        owners.append((owner, rtype))
        pos += 10
        if pos + rdlen > len(data):
            break
        if rtype == TYPE_A and rdlen == 4:
            answers.append(DnsAnswer(owner, rtype, socket.inet_ntop(socket.AF_INET, data[pos : pos + 4])))
        elif rtype == TYPE_AAAA and rdlen == 16:
            answers.append(DnsAnswer(owner, rtype, socket.inet_ntop(socket.AF_INET6, data[pos : pos + 16])))
        elif rtype == TYPE_CNAME:
            target = _name(data, pos)
            if target is not None and target[1] <= pos + rdlen:
                answers.append(DnsAnswer(owner, rtype, target[0]))
        pos += rdlen
    if opcode == 1 and not questions and not flags & 0x8000:
        # An inverse query (RFC 1035 §6.4, obsolete since RFC 3425) asks about the address in
        # its answer section: that address is what it names.
        # Clients put the address in the RDATA, or (as seen in the wild) as the owner name.
        named = [(o, t) for o, t in owners if o] + [
            (a.value, a.rtype) for a in answers if a.rtype in (TYPE_A, TYPE_AAAA)
        ]
        questions = list(dict.fromkeys(named))
        answers = []
    return DnsMessage(msg_id, bool(flags & 0x8000), opcode, flags & 0xF, tuple(questions), tuple(answers))


def _name(data: bytes, pos: int) -> tuple[str, int] | None:
    """Read a (possibly compressed) name at `pos`: (name, position after it in the message)."""
    labels: list[str] = []
    wire = 0
    end: int | None = None
    jumps = 0
    n = len(data)
    while True:
        if pos >= n:
            return None
        length = data[pos]
        if length == 0:
            pos += 1
            break
        kind = length & 0xC0
        if kind == 0xC0:
            if pos + 1 >= n:
                return None
            jumps += 1
            if jumps > MAX_POINTERS:
                return None
            if end is None:
                end = pos + 2
            pos = ((length & 0x3F) << 8) | data[pos + 1]
            continue
        if kind:
            return None  # 0x40/0x80: extended label types, obsolete
        wire += length + 1
        if wire > MAX_NAME or pos + 1 + length > n:
            return None
        raw = data[pos + 1 : pos + 1 + length]
        if all(b in _PRINTABLE for b in raw):
            labels.append(raw.decode("ascii").lower())
        else:  # presentation format (RFC 4343): \DDD for anything not printable
            labels.append("".join(chr(b).lower() if b in _PRINTABLE else f"\\{b:03d}" for b in raw))
        pos += 1 + length
    return ".".join(labels), (end if end is not None else pos)


def parse_dns_tcp(stream: bytes) -> tuple[list[DnsMessage], int]:
    """Messages in a TCP byte stream (2-byte length prefix each) and how many bytes they used.

    A trailing partial message is left for the caller to complete with the next segment.
    """
    messages: list[DnsMessage] = []
    pos = 0
    while pos + 2 <= len(stream):
        length = _HEADER_LEN.unpack_from(stream, pos)[0]
        if pos + 2 + length > len(stream):
            break
        msg = parse_dns(stream[pos + 2 : pos + 2 + length])
        if msg is not None:
            messages.append(msg)
        pos += 2 + length
    return messages, pos


_HEADER_LEN: Final = struct.Struct("!H")


class TcpDnsBuffer:
    """Per-direction reassembly of DNS over TCP, bounded to one maximal message."""

    __slots__ = ("_buf", "broken")

    def __init__(self) -> None:
        self._buf = b""
        self.broken = False

    def feed(self, segment: bytes) -> list[DnsMessage]:
        if self.broken or not segment:
            return []
        buf = self._buf + segment
        messages, used = parse_dns_tcp(buf)
        rest = buf[used:]
        if len(rest) > MAX_TCP_BUFFER:
            self.broken, rest = True, b""
        self._buf = rest
        return messages

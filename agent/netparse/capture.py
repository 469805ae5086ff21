"""Capture files: classic pcap (either byte order, micro- or nanosecond) and pcapng.

Our own small reader rather than scapy's: it yields (timestamp, link type, frame bytes) with no
per-packet object, and it treats the file as untrusted. A record or block length beyond
`MAX_RECORD` or beyond the end of the file ends the read (counted in `CaptureReader.errors`),
it never allocates that length; unknown pcapng blocks are skipped by their length.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final

__all__ = ["MAX_RECORD", "CaptureError", "CaptureReader"]

MAX_RECORD: Final = 1 << 18  # 256 KiB: larger than any snap length in use (262144)

_PCAP_MAGICS: Final = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
_PCAPNG_SHB: Final = b"\x0a\x0d\x0d\x0a"
_BOM_LE: Final = b"\x4d\x3c\x2b\x1a"
_BOM_BE: Final = b"\x1a\x2b\x3c\x4d"


class CaptureError(ValueError):
    """The file is not a pcap or pcapng capture."""


class CaptureReader:
    """Iterate (time, link type, frame) over a capture file; `errors` counts what was cut short."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.errors = 0

    def __iter__(self) -> Iterator[tuple[float, int, bytes]]:
        with open(self.path, "rb") as f:
            magic = f.read(4)
            if magic in _PCAP_MAGICS:
                yield from self._pcap(f, magic)
            elif magic == _PCAPNG_SHB:
                f.seek(0)
                yield from self._pcapng(f)
            else:
                raise CaptureError(f"{self.path}: not a pcap or pcapng file")

    def _head(self, f: BinaryIO, size: int) -> bytes | None:
        """The next record's header; None at the end of the file (a partial one is an error)."""
        head = f.read(size)
        if len(head) < size:
            if head:
                self.errors += 1
            return None
        return head

    def _pcap(self, f: BinaryIO, magic: bytes) -> Iterator[tuple[float, int, bytes]]:
        order, unit = _PCAP_MAGICS[magic]
        header = f.read(20)
        if len(header) < 20:
            self.errors += 1
            return
        linktype = struct.unpack(order + "I", header[16:20])[0] & 0x0FFFFFFF  # upper bits: FCS info
        record = struct.Struct(order + "IIII")
        while (head := self._head(f, 16)) is not None:
            sec, frac, incl, _orig = record.unpack(head)
            if incl > MAX_RECORD:
                self.errors += 1
                return
            data = f.read(incl)
            if len(data) < incl:
                self.errors += 1
                return
            yield sec + frac * unit, linktype, data

    def _pcapng(self, f: BinaryIO) -> Iterator[tuple[float, int, bytes]]:
        order = "<"
        interfaces: list[tuple[int, float]] = []  # (link type, seconds per timestamp unit)
        first = True
        while (head := self._head(f, 8)) is not None:
            if first or head[:4] == _PCAPNG_SHB:
                bom = f.read(4)
                if bom == _BOM_LE:
                    order = "<"
                elif bom == _BOM_BE:
                    order = ">"
                else:
                    self.errors += 1
                    return
                _btype, blen = struct.unpack(order + "II", head)
                rest = blen - 12  # version, section length, options, trailing length
                if blen < 28 or blen % 4 or blen > MAX_RECORD:
                    self.errors += 1
                    return
                if len(f.read(rest)) < rest:
                    self.errors += 1
                    return
                interfaces = []  # a new section starts a new interface list
                first = False
                continue
            btype, blen = struct.unpack(order + "II", head)
            if blen < 12 or blen % 4 or blen > MAX_RECORD:
                self.errors += 1
                return
            body = f.read(blen - 8)
            if len(body) < blen - 8:
                self.errors += 1
                return
            body = body[:-4]  # the trailing copy of the block length
            if btype == 1:  # Interface Description Block
                if len(body) < 8:
                    self.errors += 1
                    continue
                linktype = struct.unpack_from(order + "H", body, 0)[0]
                interfaces.append((linktype, _ts_unit(body[8:], order)))
            elif btype in (6, 2):  # Enhanced Packet Block, obsolete Packet Block
                if len(body) < 20:
                    self.errors += 1
                    continue
                if btype == 6:
                    iface, hi, lo, cap, _orig = struct.unpack_from(order + "IIIII", body, 0)
                else:
                    iface, _drops, hi, lo, cap, _orig = struct.unpack_from(order + "HHIIII", body, 0)
                start = 20
                if iface >= len(interfaces) or start + cap > len(body):
                    self.errors += 1
                    continue
                linktype, unit = interfaces[iface]
                yield ((hi << 32) | lo) * unit, linktype, body[start : start + cap]
            elif btype == 3:  # Simple Packet Block: interface 0, no timestamp
                if len(body) < 4 or not interfaces:
                    self.errors += 1
                    continue
                cap = min(struct.unpack_from(order + "I", body, 0)[0], len(body) - 4)
                yield 0.0, interfaces[0][0], body[4 : 4 + cap]
            # other blocks (name resolution, statistics, custom, DSB) carry no packets


def _ts_unit(options: bytes, order: str) -> float:
    """Seconds per timestamp tick from an IDB's if_tsresol option (default microseconds)."""
    pos = 0
    for _ in range(64):
        if pos + 4 > len(options):
            break
        code, length = struct.unpack_from(order + "HH", options, pos)
        if code == 0:
            break
        if code == 9 and length >= 1 and pos + 5 <= len(options):
            resol = options[pos + 4]
            exponent = resol & 0x7F
            if exponent > 30:
                break
            return float(2**-exponent) if resol & 0x80 else float(10**-exponent)
        pos += 4 + length + (-length % 4)
    return 1e-6

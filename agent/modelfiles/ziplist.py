"""A bounded zip listing: entry names and sizes, nothing decompressed, nothing extracted.

Why not `zipfile`: `ZipFile()` reads the whole central directory in one `read()` of the size
the archive claims and builds an object per entry, so a hostile archive decides how much we
read and allocate. Here the end-of-central-directory record (ZIP64 too) is found in the last
64 KiB, its claims are checked against the file, and at most `max_entries` entries from at
most `MAX_CD_BYTES` of the directory are listed. Without access to the end of the file (a
caller that gave only a head), the local headers at the front are walked instead.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from agent.modelfiles.model import Malformed, Unavailable
from agent.modelfiles.window import Window

__all__ = ["LOCAL_MAGIC", "MAX_ENTRIES", "ZipEntry", "ZipListing", "list_zip", "local_data_offset"]

LOCAL_MAGIC: Final = b"PK\x03\x04"
_EOCD: Final = b"PK\x05\x06"
_EOCD64_LOCATOR: Final = b"PK\x06\x07"
_EOCD64: Final = b"PK\x06\x06"
_CENTRAL: Final = b"PK\x01\x02"
_EOCD_MIN: Final = 22
_TAIL: Final = _EOCD_MIN + 0xFFFF  # the record plus the longest comment
MAX_ENTRIES: Final = 4096
MAX_CD_BYTES: Final = 1 << 20
_U32_MAX: Final = 0xFFFFFFFF


@dataclass(frozen=True)
class ZipEntry:
    name: str
    method: int  # 0 stored, 8 deflated, ...
    compressed_size: int
    size: int
    local_offset: int


@dataclass(frozen=True)
class ZipListing:
    entries: tuple[ZipEntry, ...]
    total: int  # entries the archive declares (may exceed what was listed)
    from_central_directory: bool  # False: from the local headers at the front only

    @property
    def complete(self) -> bool:
        return self.from_central_directory and len(self.entries) == self.total


def list_zip(win: Window, max_entries: int = MAX_ENTRIES) -> ZipListing:
    try:
        return _central(win, max_entries)
    except Unavailable:
        return _local(win, max_entries)


def _central(win: Window, max_entries: int) -> ZipListing:
    tail_len = min(win.size, _TAIL)
    try:
        tail = win.at(win.size - tail_len, tail_len)
    except Unavailable:
        if not win.tail:
            raise
        tail_len, tail = len(win.tail), win.tail  # the caller's tail: shorter, usually enough
    at = tail.rfind(_EOCD)
    while at >= 0 and at + _EOCD_MIN > len(tail):
        at = tail.rfind(_EOCD, 0, at)
    if at < 0:
        raise Malformed("zip without an end-of-central-directory record")
    eocd = win.size - tail_len + at
    _, _, _, total, cd_size, cd_offset, _ = struct.unpack_from("<4H2IH", tail, at + 4)
    if (total == 0xFFFF or cd_size == _U32_MAX or cd_offset == _U32_MAX) and eocd >= 20:
        loc = win.at(eocd - 20, 20)
        if loc[:4] == _EOCD64_LOCATOR:
            (rec_offset,) = struct.unpack_from("<Q", loc, 8)
            rec = win.at(rec_offset, 56)
            if rec[:4] != _EOCD64:
                raise Malformed("ZIP64 locator points at no ZIP64 record")
            total, cd_size, cd_offset = struct.unpack_from("<3Q", rec, 32)
            eocd = rec_offset
    if cd_offset + cd_size > eocd:
        raise Malformed("central directory claims to extend past its end record")
    if total * 46 > cd_size:
        raise Malformed(f"{total} entries cannot fit in a {cd_size}-byte central directory")
    cd = win.at(cd_offset, min(cd_size, MAX_CD_BYTES))
    entries: list[ZipEntry] = []
    pos = 0
    while len(entries) < min(total, max_entries) and pos + 46 <= len(cd):
        if cd[pos : pos + 4] != _CENTRAL:
            raise Malformed("central directory entry without its signature")
        (method, csize, usize, nlen, xlen, clen, offset) = struct.unpack_from("<6xH8x2I3H8xI", cd, pos + 4)
        name_end = pos + 46 + nlen
        extra_end = name_end + xlen
        if extra_end > len(cd):
            break
        name = cd[pos + 46 : name_end].decode("utf-8", errors="replace")
        if _U32_MAX in (csize, usize, offset):
            usize, csize, offset = _zip64_extra(cd[name_end:extra_end], usize, csize, offset)
        if offset >= cd_offset or offset + csize > cd_offset:
            raise Malformed(f"entry {name[:60]!r} lies outside the archive's data")
        entries.append(ZipEntry(name, method, csize, usize, offset))
        pos = extra_end + clen
    return ZipListing(tuple(entries), total, True)


def _zip64_extra(extra: bytes, usize: int, csize: int, offset: int) -> tuple[int, int, int]:
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<2H", extra, pos)
        body = extra[pos + 4 : pos + 4 + size]
        if tag == 1:
            values = [v for (v,) in struct.iter_unpack("<Q", body[: len(body) // 8 * 8])]
            if usize == _U32_MAX and values:
                usize = values.pop(0)
            if csize == _U32_MAX and values:
                csize = values.pop(0)
            if offset == _U32_MAX and values:
                offset = values.pop(0)
            break
        pos += 4 + size
    return usize, csize, offset


def _local(win: Window, max_entries: int) -> ZipListing:
    """Local file headers at the front of the window, until one has unknown sizes or the
    bytes in hand end."""
    entries: list[ZipEntry] = []
    pos = 0
    head = win.head
    while len(entries) < max_entries and pos + 30 <= len(head) and head[pos : pos + 4] == LOCAL_MAGIC:
        flags, method, csize, usize, nlen, xlen = struct.unpack_from("<2H8x2I2H", head, pos + 6)
        name = head[pos + 30 : pos + 30 + nlen].decode("utf-8", errors="replace")
        if pos + 30 + nlen > len(head):
            break
        entries.append(ZipEntry(name, method, csize, usize, pos))
        if flags & 0x08 or csize == _U32_MAX:  # sizes in a trailing data descriptor / ZIP64
            break
        pos += 30 + nlen + xlen + csize
        if pos > win.size:
            raise Malformed("zip entry runs past the end of the file")
    if not entries:
        raise Malformed("zip without a readable entry")
    return ZipListing(tuple(entries), len(entries), False)


def local_data_offset(win: Window, entry: ZipEntry) -> int:
    """Where a stored entry's bytes start (after its local header)."""
    header = win.at(entry.local_offset, 30)
    if header[:4] != LOCAL_MAGIC:
        raise Malformed(f"entry {entry.name[:60]!r} has no local header")
    nlen, xlen = struct.unpack_from("<2H", header, 26)
    return int(entry.local_offset + 30 + nlen + xlen)

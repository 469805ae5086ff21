"""The file list of a 7z archive, from its header, without extracting anything.

A 7z archive ends with its header; the 32-byte signature header at offset 0 says where
(7zFormat.txt in the 7-Zip sources, "Archive structure"). Only a plain header (property id
kHeader) is read: an encoded header (kEncodedHeader, 7-Zip's default that compresses the
header itself) would need an LZMA decoder run on attacker data, so it is reported as not
listed. Every count and length is checked against what is left before it is used, the header
read is at most MAX_HEADER_BYTES, and any inconsistency is Malformed, never an exception of
another kind.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

from agent.modelfiles.model import Malformed

__all__ = ["MAX_HEADER_BYTES", "SIGNATURE", "EncodedHeader", "list_7z"]

SIGNATURE: Final = b"7z\xbc\xaf\x27\x1c"
MAX_HEADER_BYTES: Final = 1 << 20
_MAX_ITEMS: Final = 1 << 16  # folders, coders, streams or files in one archive's header

# Property ids (7zFormat.txt, "Property IDs").
_END, _HEADER, _ARCHIVE_PROPERTIES, _ADDITIONAL_STREAMS, _MAIN_STREAMS, _FILES_INFO = 0, 1, 2, 3, 4, 5
_PACK_INFO, _UNPACK_INFO, _SUBSTREAMS_INFO, _SIZE, _CRC, _FOLDER = 6, 7, 8, 9, 10, 11
_CODERS_UNPACK_SIZE, _NUM_UNPACK_STREAM, _EMPTY_STREAM, _NAME = 12, 13, 14, 17
_ENCODED_HEADER: Final = 0x17


class EncodedHeader(Exception):
    """The header is itself compressed: not read (see the module)."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise Malformed("7z header ends early")
        self.pos += 1
        return self.data[self.pos - 1]

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise Malformed("7z header field runs past the header")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def number(self) -> int:
        """7z's variable-length number: leading one bits of the first byte say how many follow."""
        first = self.byte()
        mask = 0x80
        value = 0
        for i in range(8):
            if first & mask == 0:
                return value | ((first & (mask - 1)) << (8 * i))
            value |= self.byte() << (8 * i)
            mask >>= 1
        return value

    def count(self) -> int:
        n = self.number()
        if n > _MAX_ITEMS:
            raise Malformed(f"7z header claims {n} items")
        return n

    def bits(self, n: int) -> list[bool]:
        raw = self.take((n + 7) // 8)
        return [bool(raw[i // 8] & (0x80 >> (i % 8))) for i in range(n)]

    def defined(self, n: int) -> list[bool]:
        """An "all defined" byte, else a bit field."""
        return [True] * n if self.byte() else self.bits(n)


def list_7z(read: Callable[[int, int], bytes], size: int) -> list[tuple[str, int]]:
    """(name, size) of the archive's files, directories and empty files left out.
    Raises EncodedHeader for a compressed header, Malformed for a broken one."""
    start = read(0, 32)
    if len(start) < 32 or start[:6] != SIGNATURE:
        raise Malformed("not a 7z signature header")
    offset, length = struct.unpack_from("<QQ", start, 12)
    if length == 0:
        return []  # an empty archive
    if offset > size or length > size - 32 - offset:
        raise Malformed("7z header lies beyond the end of the file")
    if length > MAX_HEADER_BYTES:
        raise Malformed(f"7z header of {length} bytes is over the {MAX_HEADER_BYTES}-byte bound")
    r = _Reader(read(32 + offset, length))
    kind = r.byte()
    if kind == _ENCODED_HEADER:
        raise EncodedHeader("7z header is compressed")
    if kind != _HEADER:
        raise Malformed(f"7z header starts with property {kind}")
    prop = r.byte()
    if prop == _ARCHIVE_PROPERTIES:
        _skip_archive_properties(r)
        prop = r.byte()
    if prop == _ADDITIONAL_STREAMS:
        _streams_info(r)
        prop = r.byte()
    sizes: list[int] = []
    if prop == _MAIN_STREAMS:
        sizes = _streams_info(r)
        prop = r.byte()
    if prop == _END:
        return []
    if prop != _FILES_INFO:
        raise Malformed(f"7z header: unexpected property {prop}")
    return _files(r, sizes)


def _skip_archive_properties(r: _Reader) -> None:
    while (prop := r.byte()) != _END:
        del prop
        r.take(r.number())


def _streams_info(r: _Reader) -> list[int]:
    """The unpacked size of every stream (file content) the streams info describes."""
    folder_sizes: list[int] = []
    folder_crc: list[bool] = []
    unpack_streams: list[int] = []
    sizes: list[int] | None = None
    while (prop := r.byte()) != _END:
        if prop == _PACK_INFO:
            r.number()  # pack position
            packs = r.count()
            while (sub := r.byte()) != _END:
                if sub == _SIZE:
                    for _ in range(packs):
                        r.number()
                elif sub == _CRC:
                    _skip_digests(r, packs)
                else:
                    raise Malformed(f"7z pack info: property {sub}")
        elif prop == _UNPACK_INFO:
            folder_sizes, folder_crc = _unpack_info(r)
            unpack_streams = [1] * len(folder_sizes)
        elif prop == _SUBSTREAMS_INFO:
            sizes = _substreams(r, folder_sizes, folder_crc, unpack_streams)
        else:
            raise Malformed(f"7z streams info: property {prop}")
    return sizes if sizes is not None else folder_sizes


def _unpack_info(r: _Reader) -> tuple[list[int], list[bool]]:
    if r.byte() != _FOLDER:
        raise Malformed("7z unpack info without folders")
    folders = r.count()
    if r.byte() != 0:
        raise Malformed("7z folders stored elsewhere (external) are not read")
    outs: list[tuple[int, set[int]]] = [_folder(r) for _ in range(folders)]
    if r.byte() != _CODERS_UNPACK_SIZE:
        raise Malformed("7z unpack info without sizes")
    sizes = []
    for total_out, bound in outs:
        out_sizes = [r.number() for _ in range(total_out)]
        main = [s for i, s in enumerate(out_sizes) if i not in bound]
        sizes.append(main[0] if main else 0)
    crc = [False] * folders
    while (sub := r.byte()) != _END:
        if sub != _CRC:
            raise Malformed(f"7z unpack info: property {sub}")
        crc = r.defined(folders)
        r.take(4 * sum(crc))
    return sizes, crc


def _folder(r: _Reader) -> tuple[int, set[int]]:
    """A folder's number of output streams and the ones bound to another coder's input."""
    coders = r.count()
    total_in = total_out = 0
    for _ in range(coders):
        flags = r.byte()
        r.take(flags & 0x0F)  # codec id
        if flags & 0x10:
            total_in += r.count()
            total_out += r.count()
        else:
            total_in += 1
            total_out += 1
        if flags & 0x20:
            r.take(r.number())  # codec properties
    if total_out == 0 or total_out > _MAX_ITEMS:
        raise Malformed("7z folder without output streams")
    bound = set()
    for _ in range(total_out - 1):
        r.number()  # in index
        bound.add(r.number())
    packed = total_in - (total_out - 1)
    if packed > 1:
        for _ in range(packed):
            r.number()
    return total_out, bound


def _substreams(
    r: _Reader, folder_sizes: list[int], folder_crc: list[bool], per_folder: list[int]
) -> list[int]:
    prop = r.byte()
    if prop == _NUM_UNPACK_STREAM:
        per_folder[:] = [r.count() for _ in folder_sizes]
        prop = r.byte()
    if sum(per_folder) > _MAX_ITEMS:
        raise Malformed("7z header claims too many streams")
    sizes: list[int] = []
    explicit = prop == _SIZE
    for total, n in zip(folder_sizes, per_folder, strict=True):
        if n == 0:
            continue
        given = [r.number() for _ in range(n - 1)] if explicit else []
        last = total - sum(given)
        if last < 0:
            raise Malformed("7z stream sizes exceed their folder")
        sizes.extend([*given, last])
    if explicit:
        prop = r.byte()
    if prop == _CRC:
        unknown = sum(n for n, known in zip(per_folder, folder_crc, strict=True) if not (n == 1 and known))
        _skip_digests(r, unknown)
        prop = r.byte()
    if prop != _END:
        raise Malformed(f"7z substreams info: property {prop}")
    return sizes


def _skip_digests(r: _Reader, n: int) -> None:
    r.take(4 * sum(r.defined(n)))


def _files(r: _Reader, sizes: list[int]) -> list[tuple[str, int]]:
    count = r.count()
    empty = [False] * count
    names: list[str] = []
    while (prop := r.byte()) != _END:
        body = _Reader(r.take(r.number()))
        if prop == _EMPTY_STREAM:
            empty = body.bits(count)
        elif prop == _NAME:
            if body.byte() != 0:
                raise Malformed("7z names stored elsewhere (external) are not read")
            raw = body.data[body.pos :]
            names = [n.decode("utf-16-le", "replace") for n in _split_utf16(raw)][:count]
        # other properties (times, attributes, kDummy padding) are skipped whole
    if len(names) != count:
        raise Malformed(f"7z header names {len(names)} of {count} files")
    out = []
    streams = iter(sizes)
    for name, is_empty in zip(names, empty, strict=True):
        if is_empty:
            continue
        size = next(streams, None)
        if size is None:
            raise Malformed("7z header has more files than streams")
        out.append((name, size))
    return out


def _split_utf16(raw: bytes) -> list[bytes]:
    out = []
    start = 0
    for i in range(0, len(raw) - 1, 2):
        if raw[i] == 0 and raw[i + 1] == 0:
            out.append(raw[start:i])
            start = i + 2
    return out

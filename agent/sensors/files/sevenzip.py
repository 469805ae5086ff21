"""The file list of a 7z archive, from its header, without extracting anything.

A 7z archive ends with its header; the 32-byte signature header at offset 0 says where
(7zFormat.txt in the 7-Zip sources, "Archive structure"). 7-Zip's default (-mhc=on) stores that
header packed (kEncodedHeader): a streams info that says where the packed header lies and which
coders packed it, normally LZMA, sometimes LZMA2 behind a BCJ or Delta filter. Such a header is
unpacked with the standard library's raw LZMA decoder, bounded (MAX_PACKED_HEADER in,
MAX_UNPACKED_HEADER out, the dictionary no larger than the output) and checked against its
CRC32; file data is never decoded. An encrypted header (AES) or an unknown coder is NotListed.
Every count and length is checked against what is left before it is used, and any
inconsistency is Malformed, never an exception of another kind.
"""

from __future__ import annotations

import lzma
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from agent.modelfiles.model import Malformed

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_PACKED_HEADER",
    "MAX_UNPACKED_HEADER",
    "SIGNATURE",
    "NotListed",
    "list_7z",
]

SIGNATURE: Final = b"7z\xbc\xaf\x27\x1c"
MAX_HEADER_BYTES: Final = 1 << 20  # the header as stored (an encoded one is a few dozen bytes)
MAX_PACKED_HEADER: Final = 4 << 20
MAX_UNPACKED_HEADER: Final = 16 << 20
_MAX_ITEMS: Final = 1 << 16  # folders, coders, streams or files in one archive's header

# Property ids (7zFormat.txt, "Property IDs").
_END, _HEADER, _ARCHIVE_PROPERTIES, _ADDITIONAL_STREAMS, _MAIN_STREAMS, _FILES_INFO = 0, 1, 2, 3, 4, 5
_PACK_INFO, _UNPACK_INFO, _SUBSTREAMS_INFO, _SIZE, _CRC, _FOLDER = 6, 7, 8, 9, 10, 11
_CODERS_UNPACK_SIZE, _NUM_UNPACK_STREAM, _EMPTY_STREAM, _NAME = 12, 13, 14, 17
_ENCODED_HEADER: Final = 0x17

# Coder ids (Methods.txt in the 7-Zip sources) the header may be packed with, as raw LZMA filters.
_COPY: Final = b"\x00"
_LZMA1: Final = b"\x03\x01\x01"
_LZMA2: Final = b"\x21"
_DELTA: Final = b"\x03"
_AES: Final = b"\x06\xf1\x07\x01"
_BRANCH_FILTERS: Final = {
    b"\x03\x03\x01\x03": lzma.FILTER_X86,
    b"\x03\x03\x02\x05": lzma.FILTER_POWERPC,
    b"\x03\x03\x04\x01": lzma.FILTER_IA64,
    b"\x03\x03\x05\x01": lzma.FILTER_ARM,
    b"\x03\x03\x07\x01": lzma.FILTER_ARMTHUMB,
    b"\x03\x03\x08\x05": lzma.FILTER_SPARC,
}


class NotListed(Exception):
    """A well-formed header this reader does not open (encrypted, or packed by an unknown coder);
    the message says why, for the verdict."""


@dataclass(frozen=True)
class _Coder:
    method: bytes
    props: bytes
    ins: int
    outs: int


@dataclass
class _Folder:
    coders: list[_Coder]
    bindings: dict[int, int]  # coder input index -> the coder output index that feeds it
    packed: list[int]  # coder input indices fed by packed streams, in pack order
    main_out: int  # the output no coder reads: the folder's unpacked stream
    sizes: list[int] = field(default_factory=list)  # per coder output
    crc: int | None = None

    @property
    def size(self) -> int:
        return self.sizes[self.main_out] if self.sizes else 0


@dataclass
class _Streams:
    pack_pos: int = 0
    pack_sizes: list[int] = field(default_factory=list)
    pack_crcs: list[int | None] = field(default_factory=list)
    folders: list[_Folder] = field(default_factory=list)
    sizes: list[int] | None = None  # per substream (file content), when given


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
    Raises NotListed for an encrypted or unknown-coder header, Malformed for a broken one."""
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
        r = _Reader(_unpack_header(_streams_info(r), read, size))
        kind = r.byte()
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
        streams = _streams_info(r)
        sizes = streams.sizes if streams.sizes is not None else [f.size for f in streams.folders]
        prop = r.byte()
    if prop == _END:
        return []
    if prop != _FILES_INFO:
        raise Malformed(f"7z header: unexpected property {prop}")
    return _files(r, sizes)


def _unpack_header(streams: _Streams, read: Callable[[int, int], bytes], size: int) -> bytes:
    """The plain header an encoded header describes: its one folder's packed stream, decoded."""
    if len(streams.folders) != 1 or len(streams.pack_sizes) != 1:
        raise Malformed("7z encoded header is not one folder of one packed stream")
    folder = streams.folders[0]
    if any(c.method == _AES for c in folder.coders):
        raise NotListed("an encrypted header")
    filters = _filter_chain(folder)
    packed_size, unpacked_size = streams.pack_sizes[0], folder.size
    if packed_size > MAX_PACKED_HEADER or unpacked_size > MAX_UNPACKED_HEADER:
        raise Malformed(
            f"7z packed header of {packed_size} bytes ({unpacked_size} unpacked) is over the bounds"
        )
    if streams.pack_pos > size or packed_size > size - 32 - streams.pack_pos:
        raise Malformed("7z packed header lies beyond the end of the file")
    packed = read(32 + streams.pack_pos, packed_size)
    if len(packed) != packed_size:
        raise Malformed("7z packed header ends early")
    if streams.pack_crcs and streams.pack_crcs[0] not in (None, zlib.crc32(packed)):
        raise Malformed("7z packed header fails its CRC")
    header = _decode(packed, filters, unpacked_size)
    if folder.crc is not None and zlib.crc32(header) != folder.crc:
        raise Malformed("7z unpacked header fails its CRC")
    return header


def _filter_chain(folder: _Folder) -> list[dict[str, Any]]:
    """The folder's coders as a raw LZMA filter chain, in encoder order (the last one packed).

    A header folder is a chain of one-in one-out coders: the packed stream enters one coder, each
    output feeds the next coder's input (bindings), the unbound output is the header."""
    coders = folder.coders
    if any(c.ins != 1 or c.outs != 1 for c in coders) or len(folder.packed) != 1:
        raise NotListed("a header packed by a multi-stream coder")
    feeds = {out: into for into, out in folder.bindings.items()}  # coder i's output -> next coder
    decode_order = []
    at: int | None = folder.packed[0]
    while at is not None:
        if at in decode_order:
            raise Malformed("7z folder's coders form a loop")
        decode_order.append(at)
        at = feeds.get(at)
    if len(decode_order) != len(coders) or decode_order[-1] != folder.main_out:
        raise Malformed("7z folder's coders are not one chain")
    dict_cap = max(folder.size, 4096)  # a dictionary beyond the output is never used
    return [f for f in (_filter(coders[i], dict_cap) for i in reversed(decode_order)) if f is not None]


def _filter(coder: _Coder, dict_cap: int) -> dict[str, Any] | None:
    method, props = coder.method, coder.props
    if method == _COPY:
        return None
    if method == _LZMA1:
        if len(props) != 5 or props[0] >= 9 * 5 * 5:
            raise Malformed("7z LZMA properties are invalid")
        pb, rest = divmod(props[0], 45)
        lp, lc = divmod(rest, 9)
        dict_size = int.from_bytes(props[1:5], "little")
        return {"id": lzma.FILTER_LZMA1, "lc": lc, "lp": lp, "pb": pb, "dict_size": min(dict_size, dict_cap)}
    if method == _LZMA2:
        if len(props) != 1 or props[0] > 40:
            raise Malformed("7z LZMA2 property is invalid")
        p = props[0]
        dict_size = 0xFFFF_FFFF if p == 40 else (2 | (p & 1)) << (p // 2 + 11)
        return {"id": lzma.FILTER_LZMA2, "dict_size": min(dict_size, dict_cap)}
    if method == _DELTA:
        if len(props) != 1:
            raise Malformed("7z Delta property is invalid")
        return {"id": lzma.FILTER_DELTA, "dist": props[0] + 1}
    if method in _BRANCH_FILTERS:
        options: dict[str, Any] = {"id": _BRANCH_FILTERS[method]}
        if len(props) == 4:
            options["start_offset"] = int.from_bytes(props, "little")
        elif props:
            raise Malformed("7z branch filter properties are invalid")
        return options
    raise NotListed(f"a header packed by coder {method.hex() or 'with an empty id'}")


def _decode(packed: bytes, filters: list[dict[str, Any]], unpacked_size: int) -> bytes:
    if not filters:
        out = packed[:unpacked_size]
    else:
        try:
            decoder = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=filters)
            out = decoder.decompress(packed, max_length=unpacked_size)
        except (lzma.LZMAError, ValueError, TypeError, OverflowError, MemoryError) as exc:
            raise Malformed(f"7z packed header does not decode: {exc}") from None
    if len(out) != unpacked_size:
        raise Malformed(f"7z packed header decodes to {len(out)} of {unpacked_size} bytes")
    return out


def _skip_archive_properties(r: _Reader) -> None:
    while (prop := r.byte()) != _END:
        del prop
        r.take(r.number())


def _streams_info(r: _Reader) -> _Streams:
    streams = _Streams()
    per_folder: list[int] = []
    while (prop := r.byte()) != _END:
        if prop == _PACK_INFO:
            streams.pack_pos = r.number()
            packs = r.count()
            while (sub := r.byte()) != _END:
                if sub == _SIZE:
                    streams.pack_sizes = [r.number() for _ in range(packs)]
                elif sub == _CRC:
                    streams.pack_crcs = _digests(r, packs)
                else:
                    raise Malformed(f"7z pack info: property {sub}")
        elif prop == _UNPACK_INFO:
            streams.folders = _unpack_info(r)
            per_folder = [1] * len(streams.folders)
        elif prop == _SUBSTREAMS_INFO:
            streams.sizes = _substreams(r, streams.folders, per_folder)
        else:
            raise Malformed(f"7z streams info: property {prop}")
    return streams


def _unpack_info(r: _Reader) -> list[_Folder]:
    if r.byte() != _FOLDER:
        raise Malformed("7z unpack info without folders")
    count = r.count()
    if r.byte() != 0:
        raise Malformed("7z folders stored elsewhere (external) are not read")
    folders = [_folder(r) for _ in range(count)]
    if r.byte() != _CODERS_UNPACK_SIZE:
        raise Malformed("7z unpack info without sizes")
    for folder in folders:
        folder.sizes = [r.number() for _ in range(sum(c.outs for c in folder.coders))]
    while (sub := r.byte()) != _END:
        if sub != _CRC:
            raise Malformed(f"7z unpack info: property {sub}")
        for folder, crc in zip(folders, _digests(r, count), strict=True):
            folder.crc = crc
    return folders


def _folder(r: _Reader) -> _Folder:
    coders = []
    for _ in range(r.count()):
        flags = r.byte()
        method = r.take(flags & 0x0F)
        ins, outs = (r.count(), r.count()) if flags & 0x10 else (1, 1)
        props = r.take(r.number()) if flags & 0x20 else b""
        coders.append(_Coder(method, props, ins, outs))
    total_in, total_out = sum(c.ins for c in coders), sum(c.outs for c in coders)
    if total_out == 0 or total_out > _MAX_ITEMS or total_in > _MAX_ITEMS:
        raise Malformed("7z folder without output streams")
    bindings = {}
    for _ in range(total_out - 1):
        into, out = r.number(), r.number()
        if into >= total_in or out >= total_out:
            raise Malformed("7z folder binds a stream it does not have")
        bindings[into] = out
    free = [i for i in range(total_out) if i not in bindings.values()]
    if len(free) != 1:
        raise Malformed("7z folder without exactly one unbound output")
    packed_count = total_in - (total_out - 1)
    if packed_count < 1:
        raise Malformed("7z folder without a packed stream")
    if packed_count == 1:
        packed = [i for i in range(total_in) if i not in bindings]
    else:
        packed = [r.number() for _ in range(packed_count)]
    return _Folder(coders, bindings, packed, free[0])


def _substreams(r: _Reader, folders: list[_Folder], per_folder: list[int]) -> list[int]:
    prop = r.byte()
    if prop == _NUM_UNPACK_STREAM:
        per_folder[:] = [r.count() for _ in folders]
        prop = r.byte()
    if sum(per_folder) > _MAX_ITEMS:
        raise Malformed("7z header claims too many streams")
    sizes: list[int] = []
    explicit = prop == _SIZE
    for folder, n in zip(folders, per_folder, strict=True):
        if n == 0:
            continue
        given = [r.number() for _ in range(n - 1)] if explicit else []
        last = folder.size - sum(given)
        if last < 0:
            raise Malformed("7z stream sizes exceed their folder")
        sizes.extend([*given, last])
    if explicit:
        prop = r.byte()
    if prop == _CRC:
        known = [n == 1 and f.crc is not None for f, n in zip(folders, per_folder, strict=True)]
        _digests(r, sum(n for n, k in zip(per_folder, known, strict=True) if not k))
        prop = r.byte()
    if prop != _END:
        raise Malformed(f"7z substreams info: property {prop}")
    return sizes


def _digests(r: _Reader, n: int) -> list[int | None]:
    return [int.from_bytes(r.take(4), "little") if d else None for d in r.defined(n)]


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

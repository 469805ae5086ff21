"""GGUF (llama.cpp, Ollama, LM Studio, GPT4All): header, metadata and tensor infos.

The header is walked, never trusted: every count and length is checked against the bytes that
must follow it in the file before anything is read, nothing is allocated from a length, and
arrays are skipped by arithmetic (fixed-size elements) or by a bounded walk (strings). The
metadata can be megabytes (a 150k-token vocabulary comes before the tensor infos), so the
header is read on in 1 MiB chunks, in one pass, up to the caller's limit; when the header is
larger still, the metadata read so far is reported and the reason says the tensor infos were
not reached.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from agent.modelfiles.formats import FormatCatalog, GgmlType
from agent.modelfiles.model import Malformed, Parsed, Unavailable, clean_text, human_count
from agent.modelfiles.window import Window

__all__ = ["MAGIC", "parse_gguf"]

MAGIC: Final = b"GGUF"
_VERSIONS: Final = (1, 2, 3)
#: Caps beyond anything real (models have hundreds to a few thousand tensors, tens of keys).
MAX_TENSORS: Final = 1 << 20
MAX_KV: Final = 1 << 16
MAX_KEY_LEN: Final = 1 << 16
MAX_DIMS: Final = 8  # GGML_MAX_DIMS is 4; v1 files and future ones get some room
MAX_ARRAY_DEPTH: Final = 3
DEFAULT_ALIGNMENT: Final = 32
#: The header is read on in chunks of this size (a 150k-token vocabulary is a few MiB).
_CHUNK: Final = 1 << 20

_T_STRING: Final = 8
_T_ARRAY: Final = 9
# GGUF value type -> struct code of a scalar
_SCALAR: Final = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_SIZE: Final = {t: struct.calcsize("<" + c) for t, c in _SCALAR.items()}

# Metadata keys kept (the rest are skipped); "<arch>." keys are matched by suffix.
_GENERAL: Final = frozenset(
    {
        "general.architecture",
        "general.name",
        "general.basename",
        "general.finetune",
        "general.size_label",
        "general.type",
        "general.file_type",
        "general.alignment",
        "general.quantization_version",
        "general.license",
        "general.organization",
        "general.parameter_count",
        "adapter.type",
        "tokenizer.ggml.model",
    }
)
_ARCH_SUFFIXES: Final = (
    ".block_count",
    ".context_length",
    ".embedding_length",
    ".expert_count",
    ".parameter_count",
)
_VOCAB_KEY: Final = "tokenizer.ggml.tokens"


class _Short(Exception):
    """The structure continues past the bytes in hand (but not past the file)."""


@dataclass
class _Header:
    version: int = 0
    big_endian: bool = False
    tensor_count: int = 0
    kv_count: int = 0
    kv_read: int = 0
    meta: dict[str, object] = field(default_factory=dict)
    vocab_size: int | None = None
    tensors_read: int = 0
    parameters: int = 0
    type_elements: dict[int, int] = field(default_factory=dict)
    unknown_types: int = 0
    data_end: int = 0  # relative to the data section
    data_start: int | None = None


class _Cursor:
    """Reads little- or big-endian values from the front of the file. The buffer starts as the
    window's head and is extended in chunks from the window (never beyond `limit` bytes);
    `_Short` when the limit or the window's budget is reached, `Malformed` when a length
    points past the end of the file itself."""

    __slots__ = ("buf", "e", "file_size", "len_code", "limit", "n", "pos", "win")

    def __init__(self, win: Window, limit: int, big_endian: bool, version: int) -> None:
        self.win = win
        self.buf = bytearray(win.head[:limit])
        self.n = len(self.buf)
        self.limit = min(limit, win.size)
        self.file_size = win.size
        self.e = ">" if big_endian else "<"
        self.len_code = "I" if version == 1 else "Q"  # v1 used 32-bit counts and lengths
        self.pos = 0

    def need(self, k: int) -> None:
        end = self.pos + k
        if end <= self.n:
            return
        if end > self.file_size:
            raise Malformed(f"{k} bytes at offset {self.pos} run past the end of the file")
        if end > self.limit:
            raise _Short
        chunk = min(max(end - self.n, _CHUNK), self.limit - self.n)
        try:
            self.buf += self.win.at(self.n, chunk)
        except Unavailable:
            raise _Short from None
        self.n = len(self.buf)

    def scalar(self, code: str) -> int | float | bool:
        size = struct.calcsize(code)
        self.need(size)
        value = struct.unpack_from(self.e + code, self.buf, self.pos)[0]
        self.pos += size
        return value  # type: ignore[no-any-return]

    def u32(self) -> int:
        return int(self.scalar("I"))

    def length(self) -> int:
        return int(self.scalar(self.len_code))

    def string(self, cap: int, what: str) -> bytes:
        n = self.length()
        if n > cap:
            raise Malformed(f"{what} claims {n} bytes (limit {cap})")
        self.need(n)
        value = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return value

    def skip_strings(self, count: int) -> None:
        """Skip `count` strings: one bounded step each (lengths checked, nothing copied)."""
        unpack = struct.Struct(self.e + self.len_code).unpack_from
        width = struct.calcsize(self.len_code)
        pos = self.pos
        done = 0
        while done < count:
            buf, end = self.buf, self.n
            while done < count and pos + width <= end:  # the hot loop: within the buffer
                step = width + unpack(buf, pos)[0]
                if pos + step > end:
                    break
                pos += step
                done += 1
            if done == count:
                break
            self.pos = pos
            self.need(width)  # extends the buffer, or raises
            self.need(width + unpack(self.buf, pos)[0])
        self.pos = pos


def parse_gguf(win: Window, max_header: int, catalog: FormatCatalog) -> Parsed:
    """Parse the GGUF header, reading on from the window's head in chunks up to `max_header`
    bytes (one pass: the walk never restarts)."""
    if len(win.head) < 8:
        raise Malformed("file ends inside the GGUF header")
    version, big_endian = _version(win.head)
    h = _Header(version=version, big_endian=big_endian)
    cursor = _Cursor(win, max_header, big_endian, version)
    try:
        _walk(cursor, h, catalog.gguf_tensor_types)
    except _Short:
        return _result(h, win, catalog, complete=False)
    return _result(h, win, catalog, complete=True)


def _version(head: bytes) -> tuple[int, bool]:
    (le,) = struct.unpack_from("<I", head, 4)
    if le in _VERSIONS:
        return le, False
    (be,) = struct.unpack_from(">I", head, 4)
    if be in _VERSIONS:
        return be, True
    raise Malformed(f"unsupported GGUF version {le}")


def _walk(c: _Cursor, h: _Header, types: Mapping[int, GgmlType]) -> None:
    file_size = c.file_size
    c.pos = 8
    h.tensor_count = c.length()
    h.kv_count = c.length()
    # The smallest possible KV pair is 13 bytes (empty key, type, one byte), tensor info 24.
    if h.tensor_count > MAX_TENSORS or h.tensor_count * 24 > file_size:
        raise Malformed(f"tensor count {h.tensor_count} is impossible for a {file_size}-byte file")
    if h.kv_count > MAX_KV or h.kv_count * 13 > file_size:
        raise Malformed(f"metadata count {h.kv_count} is impossible for a {file_size}-byte file")
    for _ in range(h.kv_count):
        _kv(c, h)
        h.kv_read += 1
    alignment = h.meta.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1) or alignment > 1 << 24:
        raise Malformed(f"general.alignment {alignment!r} is not a power of two")
    for _ in range(h.tensor_count):
        _tensor_info(c, h, alignment, types)
        h.tensors_read += 1
    h.data_start = -(-c.pos // alignment) * alignment


def _kv(c: _Cursor, h: _Header) -> None:
    key = c.string(MAX_KEY_LEN, "metadata key").decode("utf-8", errors="replace")
    vtype = c.u32()
    keep = key in _GENERAL or key.endswith(_ARCH_SUFFIXES)
    if vtype == _T_STRING:
        if keep:
            raw = c.string(c.file_size, f"value of {key!r}")
            h.meta[key] = raw[:1024].decode("utf-8", errors="replace")
        else:
            c.skip_strings(1)
    elif vtype == _T_ARRAY:
        count = _skip_array(c, key, 1)
        if key == _VOCAB_KEY:
            h.vocab_size = count
    elif vtype in _SCALAR:
        value = c.scalar(_SCALAR[vtype])
        if keep:
            h.meta[key] = value
    else:
        raise Malformed(f"metadata {key!r} has unknown value type {vtype}")


def _skip_array(c: _Cursor, key: str, depth: int) -> int:
    if depth > MAX_ARRAY_DEPTH:
        raise Malformed(f"metadata {key!r} nests arrays deeper than {MAX_ARRAY_DEPTH}")
    etype = c.u32()
    count = c.length()
    remaining = c.file_size - c.pos
    if etype in _SIZE:
        nbytes = count * _SIZE[etype]
        if nbytes > remaining:
            raise Malformed(f"array {key!r} claims {count} elements, more than the file holds")
        c.need(nbytes)
        c.pos += nbytes
    elif etype == _T_STRING:
        if count * (4 if c.len_code == "I" else 8) > remaining:
            raise Malformed(f"array {key!r} claims {count} strings, more than the file holds")
        c.skip_strings(count)
    elif etype == _T_ARRAY:
        if count * 12 > remaining:
            raise Malformed(f"array {key!r} claims {count} arrays, more than the file holds")
        for _ in range(count):
            _skip_array(c, key, depth + 1)
    else:
        raise Malformed(f"array {key!r} has unknown element type {etype}")
    return count


def _tensor_info(c: _Cursor, h: _Header, alignment: int, types: Mapping[int, GgmlType]) -> None:
    name = c.string(MAX_KEY_LEN, "tensor name")
    n_dims = c.u32()
    if n_dims > MAX_DIMS:
        raise Malformed(f"tensor {clean_text(name.decode('utf-8', 'replace'), 64)!r} has {n_dims} dimensions")
    elements = 1
    for _ in range(n_dims):
        dim = int(c.scalar("Q"))
        elements *= dim
        if elements >= 1 << 63:
            raise Malformed("a tensor's element count overflows 64 bits")
    ttype = c.u32()
    offset = int(c.scalar("Q"))
    if offset % alignment:
        raise Malformed(f"tensor data offset {offset} is not a multiple of the alignment {alignment}")
    h.parameters += elements
    h.type_elements[ttype] = h.type_elements.get(ttype, 0) + elements
    known = types.get(ttype)
    if known is None:
        h.unknown_types += 1
        return
    nbytes = -(-elements // known.block) * known.bytes
    if offset + nbytes > c.file_size:
        raise Malformed(f"tensor data at offset {offset} ({nbytes} bytes) runs past the end of the file")
    h.data_end = max(h.data_end, offset + nbytes)


def _result(h: _Header, win: Window, catalog: FormatCatalog, *, complete: bool) -> Parsed:
    if h.tensor_count == 0 and complete:
        raise Malformed("GGUF file with no tensors")
    if not complete and h.kv_read == 0:
        raise Unavailable("the GGUF header continues past the bytes this call may read")
    if complete and h.data_start is not None and h.data_start + h.data_end > win.size:
        raise Malformed(
            f"tensor data ends at {h.data_start + h.data_end}, past the end of the {win.size}-byte file"
            " (truncated?)"
        )
    meta = h.meta
    arch = _text(meta.get("general.architecture"))
    quant: str | None = None
    ftype = meta.get("general.file_type")
    if isinstance(ftype, int) and not isinstance(ftype, bool):
        quant = catalog.gguf_file_types.get(ftype, f"file_type {ftype}")
    elif h.type_elements:
        dominant = max(h.type_elements, key=lambda t: h.type_elements[t])
        known = catalog.gguf_tensor_types.get(dominant)
        quant = known.name if known else f"ggml type {dominant}"
    params: int | None = h.parameters if complete else None
    if params is None:
        declared = meta.get("general.parameter_count", meta.get(f"{arch}.parameter_count"))
        if isinstance(declared, int) and not isinstance(declared, bool) and declared > 0:
            params = declared
    extra: dict[str, object] = {"gguf_version": h.version}
    if h.big_endian:
        extra["byte_order"] = "big-endian"
    for key, label in (
        ("general.type", "type"),
        ("adapter.type", "adapter_type"),
        ("general.size_label", "size_label"),
        ("general.finetune", "finetune"),
        ("general.basename", "basename"),
        ("general.license", "license"),
        ("general.organization", "organization"),
        ("tokenizer.ggml.model", "tokenizer"),
        (f"{arch}.context_length", "context_length"),
        (f"{arch}.embedding_length", "embedding_length"),
        (f"{arch}.block_count", "block_count"),
        (f"{arch}.expert_count", "expert_count"),
    ):
        if key in meta:
            extra[label] = meta[key]
    if h.vocab_size is not None:
        extra["vocab_size"] = h.vocab_size
    if not complete:
        extra["header"] = f"partial: {h.kv_read}/{h.kv_count} metadata, {h.tensors_read} tensor infos read"
    consistent = (
        complete
        and h.unknown_types == 0
        and h.data_start is not None
        and h.data_start + h.data_end <= win.size
        and h.parameters > 0
    )
    name = _text(meta.get("general.name"))
    parts = [f"GGUF v{h.version}"]
    if arch:
        parts.append(arch)
    if name:
        parts.append(repr(name))
    if params:
        parts.append(f"{human_count(params)} parameters")
    if quant:
        parts.append(quant)
    parts.append(f"{h.tensor_count} tensors")
    if not complete:
        parts.append("(the header continues past the bytes read: tensor infos not read)")
    return Parsed(
        format="gguf",
        summary=", ".join(parts),
        consistent=consistent,
        architecture=arch,
        model_name=name,
        parameter_count=params,
        quantization=quant,
        tensor_count=h.tensor_count,
        extra={k: str(v) for k, v in extra.items()},
    )


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return clean_text(value) or None
    return None

"""A bounded protobuf wire-format walker (ONNX ModelProto, Core ML Model), no generated code.

Only the wire format is read: tags, varints (at most 10 bytes), fixed 32/64-bit values and
length-delimited fields whose length is checked against the end of the enclosing message
before anything is read. Groups (wire types 3 and 4) are obsolete and never appear in these
formats, so meeting one ends the walk as "not this format". The top level of a file is walked
through a `Window` (a length-delimited field is skipped without reading it, so a 2 GB graph
costs one read of its tag); nested messages are walked in a bytes buffer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from agent.modelfiles.model import Malformed
from agent.modelfiles.window import Window

__all__ = [
    "WIRE_FIXED32",
    "WIRE_FIXED64",
    "WIRE_LEN",
    "WIRE_VARINT",
    "Field",
    "WireError",
    "fields",
    "varint",
    "window_fields",
]

WIRE_VARINT: Final = 0
WIRE_FIXED64: Final = 1
WIRE_LEN: Final = 2
WIRE_FIXED32: Final = 5
_MAX_VARINT: Final = 10


class WireError(Malformed):
    """The bytes break the protobuf wire format (`field`: the field being read, 0 if unknown)."""

    def __init__(self, message: str, field: int = 0) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Field:
    number: int
    wire: int
    value: int  # the varint or fixed value; for WIRE_LEN the length
    start: int  # where the value (or the length-delimited payload) starts
    end: int  # one past the field


def varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value, position after it); at most 10 bytes and never past `end`."""
    result = 0
    shift = 0
    stop = min(end, pos + _MAX_VARINT)
    while pos < stop:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
    raise WireError("varint runs past its message or beyond 10 bytes")


def _field_at(buf: bytes, pos: int, end: int, base: int, limit: int) -> Field:
    """The field whose tag starts at buf[pos]; offsets in the Field are `base`-relative, and its
    payload must end by `limit` (in the same coordinates)."""
    key, p = varint(buf, pos, end)
    number, wire = key >> 3, key & 7
    if number == 0:
        raise WireError("field number 0")
    if wire == WIRE_VARINT:
        value, q = varint(buf, p, end)
        return Field(number, wire, value, base + p, base + q)
    if wire == WIRE_LEN:
        length, q = varint(buf, p, end)
        if base + q + length > limit:
            raise WireError(f"field {number} claims {length} bytes, past the end of its message", number)
        return Field(number, wire, length, base + q, base + q + length)
    if wire == WIRE_FIXED64:
        if p + 8 > end:
            raise WireError("fixed64 runs past its message")
        return Field(number, wire, int.from_bytes(buf[p : p + 8], "little"), base + p, base + p + 8)
    if wire == WIRE_FIXED32:
        if p + 4 > end:
            raise WireError("fixed32 runs past its message")
        return Field(number, wire, int.from_bytes(buf[p : p + 4], "little"), base + p, base + p + 4)
    raise WireError(f"wire type {wire} (groups and reserved types do not occur here)")


def fields(buf: bytes, start: int = 0, end: int | None = None, max_fields: int = 1 << 20) -> Iterator[Field]:
    """The fields of the message in buf[start:end] (offsets relative to buf)."""
    stop = len(buf) if end is None else min(end, len(buf))
    return _walk(
        start,
        stop,
        f"more than {max_fields} fields",
        max_fields,
        lambda pos: _field_at(buf, pos, stop, 0, stop),
    )


def window_fields(win: Window, start: int, end: int, max_fields: int) -> Iterator[Field]:
    """The fields of a message spanning win[start:end], reading only each field's first bytes
    (its tag and length, at most 20 bytes); payloads are skipped without being read."""

    def field_at(pos: int) -> Field:
        chunk = win.up_to(pos, min(2 * _MAX_VARINT, end - pos))
        return _field_at(chunk, 0, len(chunk), pos, end)

    return _walk(start, end, f"more than {max_fields} top-level fields", max_fields, field_at)


def _walk(
    start: int, end: int, too_many: str, max_fields: int, field_at: Callable[[int], Field]
) -> Iterator[Field]:
    """Field after field from `start` to `end`, at most `max_fields` of them (more: WireError)."""
    pos = start
    count = 0
    while pos < end:
        count += 1
        if count > max_fields:
            raise WireError(too_many)
        f = field_at(pos)
        yield f
        pos = f.end

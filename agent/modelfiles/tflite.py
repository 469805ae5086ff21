"""TensorFlow Lite: a FlatBuffer with file identifier "TFL3", walked by hand.

A FlatBuffer is offsets all the way down, so every offset is checked against the file before
it is followed, and every vector length against the bytes it would cover. Read: the Model
table's version (must be 3), description, and the counts of operator codes, subgraphs and
buffers; the first subgraph's tensors give the tensor count and, for tensors backed by a
non-empty buffer (the weights), the parameter count.
"""

from __future__ import annotations

import contextlib
import math
import struct
from typing import Final

from agent.modelfiles.model import Malformed, Parsed, Unavailable, clean_text, human_count
from agent.modelfiles.window import Window

__all__ = ["IDENTIFIER", "parse_tflite"]

IDENTIFIER: Final = b"TFL3"
SCHEMA_VERSION: Final = 3
MAX_VECTOR: Final = 1 << 20
MAX_TENSORS_WALKED: Final = 4096
# Model table fields (schema.fbs)
_F_VERSION, _F_OPCODES, _F_SUBGRAPHS, _F_DESCRIPTION, _F_BUFFERS = 0, 1, 2, 3, 4
# SubGraph.tensors = 0; Tensor.shape = 0, Tensor.type = 1, Tensor.buffer = 2; Buffer.data = 0
# TensorType enum -> name (schema.fbs)
_TYPES: Final = {
    0: "FLOAT32",
    1: "FLOAT16",
    2: "INT32",
    3: "UINT8",
    4: "INT64",
    6: "BOOL",
    7: "INT16",
    9: "INT8",
    10: "FLOAT64",
    17: "INT4",
    18: "UINT16",
}


class _Fb:
    """Checked FlatBuffer access over a window."""

    def __init__(self, win: Window) -> None:
        self.win = win

    def u32(self, pos: int) -> int:
        return int(struct.unpack("<I", self.win.at(pos, 4))[0])

    def i32(self, pos: int) -> int:
        """A signed dimension; -1 (unknown) counts as 0 elements."""
        return max(0, int(struct.unpack("<i", self.win.at(pos, 4))[0]))

    def table_field(self, table: int, index: int) -> int | None:
        """Absolute position of field `index` of the table at `table`, or None when absent."""
        (soffset,) = struct.unpack("<i", self.win.at(table, 4))
        vtable = table - soffset
        vt_size, _ = struct.unpack("<2H", self.win.at(vtable, 4))
        if vt_size < 4 or vt_size & 1:
            raise Malformed("FlatBuffer vtable of impossible size")
        slot = 4 + 2 * index
        if slot + 2 > vt_size:
            return None
        (rel,) = struct.unpack("<H", self.win.at(vtable + slot, 2))
        return table + rel if rel else None

    def deref(self, pos: int) -> int:
        target = pos + self.u32(pos)
        if target >= self.win.size:
            raise Malformed("FlatBuffer offset points past the end of the file")
        return target

    def vector(self, table: int, index: int, elem: int) -> tuple[int, int] | None:
        """(start of elements, length) of a vector field, checked against the file."""
        at = self.table_field(table, index)
        if at is None:
            return None
        vec = self.deref(at)
        n = self.u32(vec)
        if n > MAX_VECTOR or vec + 4 + n * elem > self.win.size:
            raise Malformed(f"FlatBuffer vector of {n} elements runs past the end of the file")
        return vec + 4, n


def parse_tflite(win: Window) -> Parsed:
    fb = _Fb(win)
    root = fb.u32(0)
    if root < 8 or root + 4 > win.size:
        raise Malformed("TFLite root table offset outside the file")
    at = fb.table_field(root, _F_VERSION)
    version = fb.u32(at) if at is not None else 0
    if version != SCHEMA_VERSION:
        raise Malformed(f"TFLite schema version {version}, expected {SCHEMA_VERSION}")
    counts: dict[str, int] = {}
    for name, index in (("operator_codes", _F_OPCODES), ("subgraphs", _F_SUBGRAPHS), ("buffers", _F_BUFFERS)):
        vec = fb.vector(root, index, 4)
        counts[name] = vec[1] if vec else 0
    description: str | None = None
    vec = fb.vector(root, _F_DESCRIPTION, 1)
    if vec:
        description = clean_text(win.up_to(vec[0], min(vec[1], 120)).decode("utf-8", "replace"))
    tensors: int | None = None
    params: int | None = None
    by_type: dict[str, int] = {}
    complete = False
    with contextlib.suppress(Unavailable):  # beyond the read budget: counts only
        tensors, params, complete = _first_subgraph(fb, root, by_type)
    extra = {k: str(v) for k, v in counts.items()}
    if description:
        extra["description"] = description
    summary = f"TensorFlow Lite model, {counts['subgraphs']} subgraphs, {counts['buffers']} buffers"
    if tensors is not None:
        summary += f", {tensors} tensors"
    if params:
        summary += f", {human_count(params)} parameters"
    return Parsed(
        format="tflite",
        summary=summary,
        consistent=complete and counts["subgraphs"] > 0 and bool(params),
        parameter_count=params,
        quantization=max(by_type, key=lambda t: by_type[t]) if by_type else None,
        tensor_count=tensors,
        extra=extra,
    )


def _first_subgraph(fb: _Fb, root: int, by_type: dict[str, int]) -> tuple[int | None, int | None, bool]:
    subgraphs = fb.vector(root, _F_SUBGRAPHS, 4)
    buffers = fb.vector(root, _F_BUFFERS, 4)
    if not subgraphs or not subgraphs[1]:
        return None, None, False
    sub = fb.deref(subgraphs[0])
    tvec = fb.vector(sub, 0, 4)
    if tvec is None:
        return 0, 0, True
    start, n = tvec
    params = 0
    for i in range(min(n, MAX_TENSORS_WALKED)):
        tensor = fb.deref(start + 4 * i)
        at = fb.table_field(tensor, 2)
        buffer_index = fb.u32(at) if at is not None else 0
        if buffer_index == 0 or buffers is None or buffer_index >= buffers[1]:
            continue  # buffer 0 is the empty sentinel: an activation, not a weight
        buf = fb.deref(buffers[0] + 4 * buffer_index)
        data = fb.vector(buf, 0, 1)
        if not data or not data[1]:
            continue
        shape = fb.vector(tensor, 0, 4)
        dims = [fb.i32(shape[0] + 4 * k) for k in range(min(shape[1], 16))] if shape else []
        elements = math.prod(dims)
        params += elements
        at = fb.table_field(tensor, 1)
        ttype = fb.win.at(at, 1)[0] if at is not None else 0
        name = _TYPES.get(ttype, f"type {ttype}")
        by_type[name] = by_type.get(name, 0) + elements
    return n, params, n <= MAX_TENSORS_WALKED

"""safetensors (Hugging Face): an 8-byte header length, a JSON header, then raw tensor data.

The length is checked before anything is read: above the reference implementation's limit
(100,000,000 bytes) or the caller's read limit, or past the end of the file, the file is
malformed and the header is never read. The JSON is then parsed with the stdlib (it raises on
excessive nesting, which becomes "malformed"), and every tensor is checked the way the
reference loader checks it: a known dtype, a shape whose size matches its byte range, and byte
ranges that tile the data section with no gap and no overlap.
"""

from __future__ import annotations

import json
import math
from typing import Final

from agent.modelfiles.formats import FormatCatalog
from agent.modelfiles.model import Malformed, NoMatch, Parsed, clean_text, human_count
from agent.modelfiles.window import Window

__all__ = ["SPEC_MAX_HEADER", "looks_like_safetensors", "parse_safetensors"]

#: The reference implementation refuses larger headers (safetensors' MAX_HEADER_SIZE).
SPEC_MAX_HEADER: Final = 100_000_000
_META: Final = "__metadata__"
_META_KEPT: Final = 6


def looks_like_safetensors(head: bytes) -> bool:
    """The cheap test: '{"' right after the 8-byte length (every writer emits compact JSON).
    The length itself is judged by the parser, so a lying one is "malformed", not ignored."""
    return len(head) >= 10 and head[8:10] == b'{"' and int.from_bytes(head[:8], "little") >= 2


def parse_safetensors(win: Window, max_header: int, catalog: FormatCatalog) -> Parsed:
    if not looks_like_safetensors(win.head):
        raise NoMatch("not a safetensors header")
    n = win.u64(0)
    if n > SPEC_MAX_HEADER:
        raise Malformed(f"header length {n} exceeds the format's {SPEC_MAX_HEADER}-byte limit")
    if 8 + n > win.size:
        raise Malformed(f"header length {n} runs past the end of the {win.size}-byte file")
    if 8 + n > max_header:
        raise Malformed(f"header length {n} exceeds the {max_header}-byte read limit")
    raw = win.at(8, n)
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise Malformed(f"header is not valid JSON: {clean_text(exc, 80)}") from None
    if not isinstance(doc, dict):
        raise Malformed("header JSON is not an object")
    bits = catalog.safetensors_dtype_bits
    data_len = win.size - 8 - n
    spans: list[tuple[int, int]] = []
    params = 0
    by_dtype: dict[str, int] = {}
    meta: dict[str, str] = {}
    for name, entry in doc.items():
        if name == _META:
            if not isinstance(entry, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in entry.items()
            ):
                raise Malformed("__metadata__ must map strings to strings")
            meta = {k: v for k, v in list(entry.items())[:_META_KEPT]}
            continue
        where = clean_text(name, 60)
        if not isinstance(entry, dict):
            raise Malformed(f"tensor {where!r} is not an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in bits:
            raise Malformed(f"tensor {where!r} has unknown dtype {clean_text(dtype, 20)!r}")
        if not isinstance(shape, list) or not all(_uint(d) for d in shape):
            raise Malformed(f"tensor {where!r} has an invalid shape")
        if not (isinstance(offsets, list) and len(offsets) == 2 and _uint(offsets[0]) and _uint(offsets[1])):
            raise Malformed(f"tensor {where!r} has invalid data_offsets")
        begin, end = offsets
        if begin > end:
            raise Malformed(f"tensor {where!r} ends before it begins")
        if end > data_len:
            raise Malformed(f"tensor {where!r} data runs past the end of the file (truncated?)")
        elements = math.prod(shape)
        if elements >= 1 << 63 or -(-elements * bits[dtype] // 8) != end - begin:
            raise Malformed(f"tensor {where!r}: shape and dtype do not match its {end - begin} bytes")
        spans.append((begin, end))
        params += elements
        by_dtype[dtype] = by_dtype.get(dtype, 0) + elements
    if not spans:
        raise Malformed("no tensors")
    spans.sort()
    pos = 0
    for begin, end in spans:
        if begin != pos:
            raise Malformed("tensor byte ranges overlap or leave a gap")
        pos = end
    consistent = pos == data_len
    quant = max(by_dtype, key=lambda d: by_dtype[d])
    extra: dict[str, str] = {"header_bytes": str(n)}
    if len(by_dtype) > 1:
        extra["dtypes"] = ", ".join(f"{d}:{c}" for d, c in sorted(by_dtype.items(), key=lambda x: -x[1]))
    if not consistent:
        extra["trailing_bytes"] = str(data_len - pos)
    for k, v in meta.items():
        extra[f"meta.{k}"] = v
    return Parsed(
        format="safetensors",
        summary=f"safetensors, {len(spans)} tensors, {human_count(params)} parameters, {quant}",
        consistent=consistent,
        parameter_count=params,
        quantization=quant,
        tensor_count=len(spans),
        extra=extra,
    )


def _uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 62

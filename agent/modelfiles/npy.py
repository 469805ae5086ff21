"""NumPy .npy arrays (and the .npy headers inside .npz archives).

The header is a Python dict literal. It is read with `ast.literal_eval` on the bounded header
text only (at most 65,536 characters, nesting checked first, so the parser cannot be made to
recurse deeply), and never with `eval`. Object arrays (dtype 'O') store a pickle: they are
reported as "not a model" and their data is never read.
"""

from __future__ import annotations

import ast
import math
import re
import struct
from dataclasses import dataclass
from typing import Final

from agent.modelfiles.model import Malformed, NotModel, Parsed, Unavailable, clean_text, human_count
from agent.modelfiles.window import Window
from agent.modelfiles.ziplist import ZipListing, local_data_offset

__all__ = ["MAGIC", "NpyHeader", "classify_npz", "parse_npy", "read_npy_header", "weight_like_names"]

MAGIC: Final = b"\x93NUMPY"
MAX_HEADER: Final = 65536
MAX_NESTING: Final = 16
_DESCR_RE: Final = re.compile(r"([<>|=]?)([?bBhHiIlLqQefdgFDGSUVaMmcuO])(\d*)(\[\w+\])?")
# numpy type character (with its byte width) -> a short dtype name as the other formats write them
_NAMES: Final = {"f": "F", "i": "I", "u": "U", "c": "C", "b": "BOOL", "?": "BOOL"}

#: Array names that say "weights": PyTorch state_dict keys (weight, bias, running_mean), Keras
#: and TF variables (kernel, gamma, beta), transformer blocks (attn, embed, lm_head, mlp).
_WEIGHT_NAME: Final = re.compile(
    r"(^|[._/\-])(weights?|bias|kernel|gamma|beta|running_(mean|var)|embed\w*|attn|attention|"
    r"lm_head|mlp|conv\d*|dense\w*|layers?\d*|blocks?\d*|encoder|decoder)([._/\-]|\d|$)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class NpyHeader:
    version: int
    dtype: str  # short name: F32, I64, BOOL, or the raw descr for the rest
    itemsize: int | None  # None for structured dtypes
    shape: tuple[int, ...]
    data_offset: int  # from the start of the .npy

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


def read_npy_header(win: Window, base: int = 0) -> NpyHeader:
    """The header of the .npy starting at `base` in the window."""
    fixed = win.at(base, 10)
    if fixed[:6] != MAGIC:
        raise Malformed("no .npy magic")
    major = fixed[6]
    if major == 1:
        (hlen,) = struct.unpack_from("<H", fixed, 8)
        start = base + 10
    elif major in (2, 3):
        hlen = win.u32(base + 8)
        start = base + 12
    else:
        raise Malformed(f"unsupported .npy version {major}.{fixed[7]}")
    if hlen > MAX_HEADER:
        raise Malformed(f".npy header of {hlen} bytes (limit {MAX_HEADER})")
    raw = win.at(start, hlen)
    text = raw.decode("utf-8" if major == 3 else "latin-1", errors="replace")
    depth = deepest = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth -= 1
    if deepest > MAX_NESTING:
        raise Malformed(".npy header nests too deeply")
    try:
        doc = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise Malformed(f".npy header is not a literal dict: {clean_text(exc, 60)}") from None
    if not isinstance(doc, dict) or not {"descr", "fortran_order", "shape"} <= set(doc):
        raise Malformed(".npy header lacks descr, fortran_order or shape")
    shape = doc["shape"]
    if not isinstance(shape, tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 62 for d in shape
    ):
        raise Malformed(".npy shape is not a tuple of non-negative integers")
    if len(shape) > 64 or math.prod(shape) >= 1 << 63:
        raise Malformed(".npy shape is absurd")
    descr = doc["descr"]
    if isinstance(descr, str):
        m = _DESCR_RE.fullmatch(descr)
        if m is None:
            raise Malformed(f".npy descr {clean_text(descr, 20)!r} is not a dtype")
        kind, width = m.group(2), int(m.group(3) or "1")
        if kind == "O":
            raise NotModel("numpy", "NumPy object array: its data is a pickle, never read")
        itemsize: int | None = width * 4 if kind == "U" else width
        dtype = _NAMES.get(kind, "")
        dtype = dtype if dtype == "BOOL" else f"{dtype}{width * 8}" if dtype else descr.lstrip("<>|=")
    elif isinstance(descr, list):
        if "'O'" in text or '"O"' in text or "|O" in text:
            raise NotModel("numpy", "NumPy structured array with object fields: pickled, never read")
        itemsize, dtype = None, "structured"
    else:
        if descr == "O":
            raise NotModel("numpy", "NumPy object array: its data is a pickle, never read")
        raise Malformed(".npy descr is neither a string nor a field list")
    return NpyHeader(major, dtype, itemsize, shape, start + hlen - base)


def parse_npy(win: Window) -> Parsed:
    h = read_npy_header(win)
    expected = None if h.itemsize is None else h.data_offset + h.elements * h.itemsize
    if expected is not None and expected > win.size:
        raise Malformed(f".npy data needs {expected} bytes, the file has {win.size} (truncated?)")
    shape = "x".join(map(str, h.shape)) or "scalar"
    return Parsed(
        format="numpy",
        summary=f"NumPy array {shape} {h.dtype}, {human_count(h.elements)} elements",
        consistent=expected == win.size and h.elements > 0,
        parameter_count=h.elements,
        quantization=h.dtype,
        tensor_count=1,
        extra={"shape": shape, "npy_version": str(h.version)},
    )


#: .npz members whose headers are read (each costs one small read).
MAX_NPZ_HEADERS: Final = 32


def classify_npz(win: Window, listing: ZipListing) -> Parsed | None:
    """A Parsed for a zip whose entries are all .npy arrays, None otherwise."""
    arrays = [e for e in listing.entries if not e.name.endswith("/")]
    if not arrays or not all(e.name.endswith(".npy") for e in arrays):
        return None
    params = 0
    read = 0
    by_dtype: dict[str, int] = {}
    consistent = listing.complete
    for entry in arrays[:MAX_NPZ_HEADERS]:
        if entry.method != 0:
            consistent = False
            continue
        try:
            h = read_npy_header(win, local_data_offset(win, entry))
        except Unavailable:
            consistent = False
            break
        if h.itemsize is not None and h.data_offset + h.elements * h.itemsize != entry.size:
            raise Malformed(f"{clean_text(entry.name, 60)!r}: .npy header disagrees with its size")
        params += h.elements
        read += 1
        by_dtype[h.dtype] = by_dtype.get(h.dtype, 0) + h.elements
    if read < len(arrays):
        consistent = False
    extra = {"arrays": str(len(arrays)), "weight_names": str(weight_like_names([e.name for e in arrays]))}
    if read < len(arrays):
        extra["headers_read"] = str(read)
    compressed = sum(e.method != 0 for e in arrays)
    if compressed:
        extra["compressed"] = str(compressed)
    summary = f"NumPy archive, {len(arrays)} arrays"
    if read:
        summary += f", {human_count(params)} elements" + ("" if read == len(arrays) else f" in {read} read")
    return Parsed(
        format="numpy-npz",
        summary=summary,
        consistent=consistent and params > 0,
        parameter_count=params if read == len(arrays) else None,
        quantization=max(by_dtype, key=lambda d: by_dtype[d]) if by_dtype else None,
        tensor_count=listing.total,
        extra=extra,
    )


def weight_like_names(names: list[str]) -> int:
    """How many of these array names read like model weights (the file sensor's context for arrays)."""
    return sum(1 for n in names if _WEIGHT_NAME.search(n.removesuffix(".npy")))

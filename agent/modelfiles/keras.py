"""Keras: the v3 `.keras` zip, and HDF5 files (Keras 2 `.h5` models among them).

No HDF5 parser: the superblock signature is found where the spec allows it (0, 512, 1024,
2048 ...), the superblock's end-of-file address is checked against the file size, and a Keras
model is told from other HDF5 data by the names Keras writes as root attributes and groups,
which HDF5 stores verbatim in the first object headers. An HDF5 file without them is data,
not a model.
"""

from __future__ import annotations

import re
from typing import Final

from agent.modelfiles.model import Malformed, NotModel, Parsed, clean_text, human_count
from agent.modelfiles.window import Window
from agent.modelfiles.ziplist import ZipListing, local_data_offset

__all__ = ["HDF5_MAGIC", "classify_keras_zip", "find_hdf5_superblock", "hdf5_signature_offset", "parse_hdf5"]

HDF5_MAGIC: Final = b"\x89HDF\r\n\x1a\n"
#: Keras writes these as root attributes (model_config, keras_version, backend, training_config)
#: or group names and attributes (model_weights, layer_names, weight_names).
_KERAS_MARKERS: Final = (b"model_config", b"keras_version", b"model_weights", b"layer_names", b"weight_names")
#: Where the Keras markers are looked for.
_MARKER_SCAN: Final = 1 << 20
_CONFIG_PEEK: Final = 4096
_CLASS_RE: Final = re.compile(rb'"class_name"\s*:\s*"([^"\\]{1,80})"')
_NAME_RE: Final = re.compile(rb'"name"\s*:\s*"([^"\\]{1,120})"')
_VERSION_RE: Final = re.compile(rb'"keras_version"\s*:\s*"([^"\\]{1,40})"')


def hdf5_signature_offset(head: bytes) -> int | None:
    """Offset of the HDF5 signature (0, or 512 x 2^k) within `head`, or None."""
    offset = 0
    while offset + 8 <= len(head):
        if head[offset : offset + 8] == HDF5_MAGIC:
            return offset
        offset = 512 if offset == 0 else offset * 2
    return None


def find_hdf5_superblock(win: Window) -> int | None:
    return hdf5_signature_offset(win.head)


def parse_hdf5(win: Window, base: int) -> Parsed:
    sb = win.up_to(base, 96)
    if len(sb) < 16:
        raise Malformed("file ends inside the HDF5 superblock")
    version = sb[8]
    if version in (0, 1):
        offsets, eof_at = sb[13], 24 if version == 0 else 28
    elif version in (2, 3):
        offsets, eof_at = sb[9], 12
    else:
        raise Malformed(f"unknown HDF5 superblock version {version}")
    if offsets not in (2, 4, 8, 16):
        raise Malformed(f"HDF5 offsets of {offsets} bytes")
    # base address, then (v0/1) free-space address or (v2/3) superblock-extension address, then EOF.
    eof_pos = eof_at + 2 * offsets
    consistent = False
    if eof_pos + offsets <= len(sb) and offsets <= 8:
        eof = int.from_bytes(sb[eof_pos : eof_pos + offsets], "little")
        if eof != (1 << (8 * offsets)) - 1:  # "undefined address"
            if base + eof > win.size:
                raise Malformed(f"HDF5 end-of-file address {eof} lies past the end of the file (truncated?)")
            consistent = base + eof == win.size
    scan = win.head[:_MARKER_SCAN]
    found = [m.decode() for m in _KERAS_MARKERS if m in scan]
    if not found:
        raise NotModel("hdf5", "HDF5 container without Keras model markers")
    version_match = _VERSION_RE.search(scan)
    extra = {"hdf5_superblock": str(version), "markers": ", ".join(found)}
    if base:
        extra["user_block"] = str(base)
    kind = "model" if b"model_config" in scan else "weights"
    extra["content"] = kind
    if version_match:
        extra["keras_version"] = version_match.group(1).decode("ascii", "replace")
    return Parsed(
        format="keras-h5",
        summary=f"Keras HDF5 {kind} file (superblock v{version}; {', '.join(found[:3])})",
        consistent=consistent,
        architecture=_class_name(scan),
        extra=extra,
    )


def classify_keras_zip(win: Window, listing: ZipListing) -> Parsed | None:
    by_name = {e.name: e for e in listing.entries}
    if "config.json" not in by_name or "model.weights.h5" not in by_name:
        return None
    weights = by_name["model.weights.h5"]
    extra: dict[str, str] = {"weights_bytes": str(weights.size)}
    arch: str | None = None
    name: str | None = None
    for entry_name in ("config.json", "metadata.json"):
        entry = by_name.get(entry_name)
        if entry is None or entry.method != 0:
            continue
        try:
            peek = win.up_to(local_data_offset(win, entry), min(entry.size, _CONFIG_PEEK))
        except Exception:  # a bounded peek at metadata: failing it only loses a name
            continue
        if entry_name == "config.json":
            arch = _class_name(peek)
            m = _NAME_RE.search(peek)
            name = clean_text(m.group(1).decode("utf-8", "replace")) if m else None
        else:
            m = _VERSION_RE.search(peek)
            if m:
                extra["keras_version"] = m.group(1).decode("ascii", "replace")
    return Parsed(
        format="keras",
        summary=f"Keras v3 archive{f' ({arch})' if arch else ''}, "
        f"{human_count(weights.size)} bytes of weights",
        consistent=listing.complete and weights.size > 0,
        architecture=arch,
        model_name=name,
        extra=extra,
    )


def _class_name(text: bytes) -> str | None:
    m = _CLASS_RE.search(text)
    return clean_text(m.group(1).decode("utf-8", "replace")) if m else None

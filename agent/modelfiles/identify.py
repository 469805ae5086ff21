"""Is this file model weights? Identification by content, for every sensor and `scan`.

Four entry points, by cost:

- `looks_like_model_quick(head)`: the first 16 bytes against every format's signature, for the
  process sensor's hot path (a few comparisons, no parsing). True means "worth identifying".
- `identify_header(head, size, ...)`: the full verdict from bytes the caller already holds.
- `identify_file(path, ...)`: opens the file (regular files only, never blocking), reads a
  64 KiB head, and lets the parser read a little more where the format needs it (a GGUF
  vocabulary, a zip's central directory, a safetensors header), never more than
  `max_header_bytes` in all and never more than 64 reads.
- `identify_range(read, size, ...)`: the same from any positioned reader (an archive's stored
  entry is read in place, never extracted).

Nothing raises to the caller: any failure is a verdict. "malformed" means the bytes claim a
model format and break it; below the size floor (1 MiB by default), such a file, or a valid
one whose header is not fully self-consistent with its size, is "not_model" (a 200-byte file
with a GGUF magic is noise, not a model). Names are never evidence: `name_hint` appears in
reasons only.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Final

from agent.modelfiles import coreml, gguf, keras, npy, onnx, pytorch, safetensors, tflite
from agent.modelfiles.formats import FormatCatalog, default_format_catalog
from agent.modelfiles.model import (
    Identification,
    Malformed,
    ModelFileInfo,
    NoMatch,
    NotModel,
    Parsed,
    Unavailable,
    bounded_extra,
    clean_text,
)
from agent.modelfiles.window import Window
from agent.modelfiles.ziplist import LOCAL_MAGIC, list_zip

__all__ = [
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_MIN_MODEL_BYTES",
    "HARD_MIN_BYTES",
    "QUICK_BYTES",
    "identify_file",
    "identify_header",
    "identify_range",
    "looks_like_model_quick",
]

DEFAULT_MAX_HEADER_BYTES: Final = 16 << 20
DEFAULT_MIN_MODEL_BYTES: Final = 1 << 20
#: Below this nothing is a model, however consistent its header.
HARD_MIN_BYTES: Final = 512
#: What `looks_like_model_quick` looks at.
QUICK_BYTES: Final = 16
#: The first read of `identify_file`; most headers end well within it.
FIRST_READ: Final = 64 << 10
_MAX_PACKAGE_FILES: Final = 4096

_ZIP_EMPTY: Final = b"PK\x05\x06"
_PROTO_SECOND_TAGS: Final = frozenset({0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x50})


def looks_like_model_quick(head: bytes) -> bool:
    """Cheap pre-filter on the first 16 bytes: False means no parser would call it a model.

    Zips pass only when their first entry is stored, not deflated: torch.save and np.savez
    store, while the zips that fill a disk (documents, jars) deflate. A deflated .npz or .keras
    is still identified by `identify_file`, just not through this shortcut.
    """
    h = head[:QUICK_BYTES]
    if len(h) < 8:
        return False
    if h[:4] == gguf.MAGIC or h[:6] == npy.MAGIC or h[:8] == keras.HDF5_MAGIC or h[4:8] == tflite.IDENTIFIER:
        return True
    if h[:4] == LOCAL_MAGIC:
        return h[8:10] == b"\x00\x00"
    if h[:4] == pytorch.LEGACY_MAGIC[:4]:
        return True
    if h[0] == 0x08 and 1 <= h[1] <= 32 and h[2] in _PROTO_SECOND_TAGS:  # ONNX, Core ML
        return True
    return safetensors.looks_like_safetensors(h)


def identify_header(
    head: bytes,
    size: int,
    name_hint: str = "",
    *,
    tail: bytes = b"",
    min_model_bytes: int = DEFAULT_MIN_MODEL_BYTES,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
) -> Identification:
    """Identify from bytes already read: `head` from offset 0, `size` the file's size, `tail`
    optionally the file's last bytes (zips keep their directory there). Formats that need
    bytes beyond these say so in the reason ("not enough bytes ...")."""
    head = bytes(head[: max(max_header_bytes, 0)])
    win = Window(max(size, len(head)), head, tail[-FIRST_READ - 22 :] if tail else b"")
    return _identify(win, "", name_hint, min_model_bytes, max_header_bytes)


def identify_file(
    path: Path | str,
    *,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    min_model_bytes: int = DEFAULT_MIN_MODEL_BYTES,
) -> Identification:
    """Identify the file at `path` by its content. A directory is looked at as a Core ML
    package; other non-regular files (FIFOs, devices, sockets) are never opened for reading."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        return Identification("not_model", f"cannot stat: {exc.strerror or exc}")
    if stat.S_ISDIR(st.st_mode):
        return _identify_package(p, max_header_bytes, min_model_bytes)
    if not stat.S_ISREG(st.st_mode):
        return Identification("not_model", "not a regular file")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(p, flags)
    except OSError as exc:
        return Identification("not_model", f"cannot open: {exc.strerror or exc}")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped between stat() and open()
            return Identification("not_model", "not a regular file")
        return identify_range(
            lambda offset, n: os.pread(fd, n, offset),
            st.st_size,
            p.name,
            path=str(p),
            max_header_bytes=max_header_bytes,
            min_model_bytes=min_model_bytes,
        )
    except OSError as exc:
        return Identification("not_model", f"cannot read: {exc.strerror or exc}")
    finally:
        os.close(fd)


def identify_range(
    read: Callable[[int, int], bytes],
    size: int,
    name_hint: str = "",
    *,
    path: str = "",
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    min_model_bytes: int = DEFAULT_MIN_MODEL_BYTES,
) -> Identification:
    """Identify `size` bytes that `read(offset, n)` reaches at random (a file, or an archive's
    stored entry), reading a 64 KiB head and then what the parser asks for, within
    `max_header_bytes`."""
    try:
        head = read(0, min(FIRST_READ, size, max(max_header_bytes, 0)))
        budget = max(0, max_header_bytes - len(head))
        win = Window(max(size, len(head)), head, b"", read, budget)
        return _identify(win, path, name_hint, min_model_bytes, max_header_bytes)
    except OSError as exc:
        return Identification("not_model", f"cannot read: {exc.strerror or exc}")


# --- dispatch -----------------------------------------------------------------------------

_Parser = Callable[[Window, int, FormatCatalog], Parsed]


def _zip(win: Window, max_header: int, catalog: FormatCatalog) -> Parsed:
    listing = list_zip(win)
    parsed = (
        pytorch.classify_torch_zip(listing)
        or keras.classify_keras_zip(win, listing)
        or npy.classify_npz(win, listing)
    )
    if parsed is None:
        raise NotModel("zip", f"zip archive ({listing.total} entries) with no model layout")
    return parsed


def _candidates(head: bytes) -> list[tuple[str, _Parser]]:
    """Formats whose signature the head carries, most specific first."""
    found: list[tuple[str, _Parser]] = []
    if head[:4] == gguf.MAGIC:
        found.append(("gguf", gguf.parse_gguf))
    if safetensors.looks_like_safetensors(head):
        found.append(("safetensors", safetensors.parse_safetensors))
    if head[:6] == npy.MAGIC:
        found.append(("numpy", lambda w, m, c: npy.parse_npy(w)))
    if pytorch.is_legacy_torch(head):
        found.append(("pytorch-legacy", lambda w, m, c: pytorch.parse_legacy_torch(w.head, w.size)))
    elif len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        found.append(("pickle", _pickle))
    if head[:4] in (LOCAL_MAGIC, _ZIP_EMPTY):
        found.append(("zip", _zip))
    if head[4:8] == tflite.IDENTIFIER:
        found.append(("tflite", lambda w, m, c: tflite.parse_tflite(w)))
    if keras.hdf5_signature_offset(head) is not None:
        found.append(("hdf5", _hdf5))
    if head[:1] == b"\x08":
        found.append(("onnx", lambda w, m, c: onnx.parse_onnx(w, m)))
        found.append(("coreml", lambda w, m, c: coreml.parse_coreml(w, c)))
    return found


def _pickle(win: Window, max_header: int, catalog: FormatCatalog) -> Parsed:
    raise NotModel("pickle", "Python pickle (not torch's format): never unpickled, not judged a model")


def _hdf5(win: Window, max_header: int, catalog: FormatCatalog) -> Parsed:
    base = keras.find_hdf5_superblock(win)
    if base is None:
        raise NoMatch("no HDF5 superblock")
    return keras.parse_hdf5(win, base)


def _identify(win: Window, path: str, name_hint: str, min_size: int, max_header: int) -> Identification:
    fmt = ""
    try:
        catalog = default_format_catalog()
        for candidate, parse in _candidates(win.head):
            fmt = candidate
            try:
                parsed = parse(win, max_header, catalog)
            except NoMatch:
                continue
            return _judge(parsed, win, path, min_size, catalog)
        fmt = ""
        hint = _hint(name_hint, catalog)
        return Identification("not_model", "no model format signature" + hint, bytes_read=win.total_read)
    except NotModel as exc:
        return Identification("not_model", exc.reason, format=exc.format, bytes_read=win.total_read)
    except Unavailable as exc:
        return Identification(
            "not_model", f"not enough bytes to tell ({fmt}): {exc}", format=fmt, bytes_read=win.total_read
        )
    except Malformed as exc:
        why = clean_text(exc, 200)
        if win.size < min_size:
            return Identification(
                "not_model",
                f"{_small(win.size, min_size)} and not a valid {fmt} header: {why}",
                format=fmt,
                bytes_read=win.total_read,
            )
        return Identification(
            "malformed", f"malformed {fmt} header: {why}", format=fmt, bytes_read=win.total_read
        )
    except Exception as exc:  # never raise to a sensor; the message keeps the bug visible
        return Identification(
            "malformed",
            f"malformed {fmt or 'model'} header: internal error {type(exc).__name__}: {clean_text(exc, 120)}",
            format=fmt,
            bytes_read=win.total_read,
        )


def _judge(parsed: Parsed, win: Window, path: str, min_size: int, catalog: FormatCatalog) -> Identification:
    entry = catalog.get(parsed.format)
    summary = clean_text(parsed.summary, 300)
    if entry is None or not entry.model:
        return Identification("not_model", summary, format=parsed.format, bytes_read=win.total_read)
    if win.size < HARD_MIN_BYTES:
        return Identification(
            "not_model",
            f"{summary}, but {win.size} bytes is too small for model weights",
            format=parsed.format,
            bytes_read=win.total_read,
        )
    if win.size < min_size and not parsed.consistent:
        return Identification(
            "not_model",
            f"{summary}, but {_small(win.size, min_size)} and its header is not fully self-consistent",
            format=parsed.format,
            bytes_read=win.total_read,
        )
    info = ModelFileInfo(
        path=path,
        format=parsed.format,
        size_bytes=win.size,
        architecture=parsed.architecture,
        model_name=parsed.model_name,
        parameter_count=parsed.parameter_count,
        quantization=parsed.quantization,
        tensor_count=parsed.tensor_count,
        extra=bounded_extra(parsed.extra),
    )
    return Identification(
        "model", summary, info, format=parsed.format, confidence=entry.confidence, bytes_read=win.total_read
    )


def _small(size: int, floor: int) -> str:
    return f"{size} bytes is below the {floor}-byte floor"


def _hint(name_hint: str, catalog: FormatCatalog) -> str:
    suffix = name_hint.rsplit(".", 1)[-1].lower() if "." in name_hint else ""
    if not suffix:
        return ""
    claimed = [e.id for e in catalog.formats.values() if e.model and suffix in e.extensions]
    if not claimed:
        return ""
    return f" (named like {'/'.join(claimed[:3])}; the content is not)"


def _identify_package(directory: Path, max_header: int, min_size: int) -> Identification:
    model = coreml.package_model_file(directory)
    if model is None:
        return Identification("not_model", "a directory (not a Core ML package)")
    inner = identify_file(model, max_header_bytes=max_header, min_model_bytes=0)
    if inner.verdict != "model" or inner.info is None:
        return Identification(
            inner.verdict, inner.reason, format="coreml-package", bytes_read=inner.bytes_read
        )
    total = 0
    try:
        for count, f in enumerate(directory.rglob("*")):
            if count >= _MAX_PACKAGE_FILES:
                break
            if f.is_file() and not f.is_symlink():
                total += f.stat().st_size
    except OSError:
        pass
    entry = default_format_catalog().get("coreml-package")
    info = ModelFileInfo(
        path=str(directory),
        format="coreml-package",
        size_bytes=total,
        architecture=inner.info.architecture,
        model_name=inner.info.model_name,
        extra=inner.info.extra,
    )
    return Identification(
        "model",
        f"Core ML package: {inner.reason}",
        info,
        format="coreml-package",
        confidence=entry.confidence if entry else 0.95,
        bytes_read=inner.bytes_read,
    )

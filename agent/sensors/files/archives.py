"""Archives that carry weights out: what kind of archive a file is, a bounded listing of its
first entries (nothing extracted), and which known models it holds."""

from __future__ import annotations

import bz2
import lzma
import os
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Final

from agent.modelfiles import looks_like_model_quick
from agent.modelfiles.model import Malformed, Unavailable
from agent.modelfiles.window import Window
from agent.modelfiles.ziplist import list_zip, local_data_offset
from agent.observations import ModelTransferObservation, ProcessObservation
from agent.sensors.files.inventory import TrackedModel
from agent.sensors.files.sevenzip import NotListed, list_7z
from agent.sensors.files.significance import ModelRule, judge
from agent.system import procfs

ARCHIVE_SUFFIXES: Final = (".zip", ".tar", ".tgz", ".tar.gz", ".tar.xz", ".tar.bz2", ".tar.zst", ".7z")
MAX_ARCHIVE_ENTRIES: Final = 1024
MAX_ARCHIVE_PEEKS: Final = 64
LISTING_READ_BYTES: Final = 64 << 10  # what one listing reads, for the read budget
_TAR_MAGIC_AT: Final = 257
ZSTD_MAX_WINDOW: Final = 8 << 20


def archive_kind(head: bytes, path: str) -> str:
    """zip, tar, gzip, xz, bz2, zstd, 7z by magic; "archive" by name for a file too short to tell."""
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
        return "zip"
    if len(head) >= 262 and head[_TAR_MAGIC_AT : _TAR_MAGIC_AT + 5] == b"ustar":
        return "tar"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[:3] == b"BZh":
        return "bz2"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    if head[:6] == b"7z\xbc\xaf\x27\x1c":
        return "7z"
    if path.lower().endswith(ARCHIVE_SUFFIXES) and len(head) < 262:
        return "archive"
    return ""


def list_archive(path: str, size: int) -> tuple[list[tuple[str, int, bytes]], str]:
    """(entry name, size, first 16 bytes or b"") of the archive's first entries, and how it was
    read. Bounded: at most MAX_ARCHIVE_ENTRIES names, MAX_ARCHIVE_PEEKS peeks, 64 KiB inflated
    from a compressed stream, 16 bytes from any one zip entry; nothing is written anywhere."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return [], "unreadable"
    try:
        head = os.pread(fd, LISTING_READ_BYTES, 0)
        kind = archive_kind(head, path)
        if kind == "zip":
            return _zip_entries(fd, head, size), "zip listing"
        if kind == "tar":
            return _tar_entries(lambda off, n: os.pread(fd, n, off), size), "tar listing"
        if kind in ("gzip", "xz", "bz2", "zstd"):
            data = _inflate_front(kind, head)
            return _tar_entries(
                lambda off, n: data[off : off + n], len(data)
            ), f"first entries of a {kind} stream"
        if kind == "7z":
            return _7z_entries(fd, size)
        return [], f"{kind or 'unknown'} archive: not listed"
    except ImportError:  # zstandard is an agent dependency; a bare install still runs
        return [], f"{kind} archive: not listed (zstandard not installed)"
    except (OSError, ValueError, Malformed, Unavailable, zlib.error, lzma.LZMAError, EOFError):
        return [], "unreadable archive"
    finally:
        os.close(fd)


def archive_transfers(
    path: str,
    size: int,
    owner: str,
    writer: ProcessObservation | None,
    models: Sequence[TrackedModel],
    rule: ModelRule,
) -> list[ModelTransferObservation]:
    """The known models a new archive carries: by an entry's name and size or its content, else
    by its writer reading one, else by being written next to one and as large as half of it.
    Each carries its model's significance (an entry known by content only: judged by its name
    and size, so a packed virtual environment's test fixtures stay at info)."""
    entries, how = list_archive(path, size)
    by_name_size = {(os.path.basename(m.path), m.key[2]): m for m in models}
    by_size = {m.key[2]: m for m in models}
    found: list[tuple[str, int, TrackedModel | None, float, str]] = []
    for name, entry_size, head in entries:
        base = os.path.basename(name)
        source = by_name_size.get((base, entry_size)) or by_size.get(entry_size)
        if source is not None:
            found.append((name, entry_size, source, 0.95, f"holds {name} ({how}), the size of {source.path}"))
        elif head and looks_like_model_quick(head):
            found.append((name, entry_size, None, 0.85, f"holds {name} ({how}), model weights by content"))
    if not found and writer is not None:
        reading = procfs.open_files(writer.pid)[0]
        for model in models:
            if model.path in reading:
                found.append(
                    (
                        "",
                        model.key[2],
                        model,
                        0.8,
                        f"written by pid {writer.pid} while it reads {model.path}",
                    )
                )
                break
    if not found:
        folder = os.path.dirname(path)
        for model in models:
            if os.path.dirname(model.path) == folder and size >= model.key[2] // 2:
                found.append(
                    (
                        "",
                        model.key[2],
                        model,
                        0.6,
                        f"created next to {os.path.basename(model.path)}, as large as half of it or more",
                    )
                )
                break
    out = []
    for name, entry_size, source, confidence, reason in found[:8]:
        if source is not None:
            demoted, reasons = source.demoted, source.reasons
        else:
            verdict = judge(rule, name, "", entry_size)
            demoted, reasons = not verdict.counts, verdict.reasons
        if demoted and not rule.report_demoted:
            continue
        transfer = _archive_transfer(path, name, entry_size, source, confidence, reason, owner, writer)
        out.append(replace(transfer, demoted=demoted, reasons=reasons))
    return out


def _archive_transfer(
    path: str,
    name: str,
    entry_size: int,
    source: TrackedModel | None,
    confidence: float,
    reason: str,
    owner: str,
    writer: ProcessObservation | None,
) -> ModelTransferObservation:
    return ModelTransferObservation(
        source_path=source.path if source else name,
        destination=path,
        destination_root=path,
        kind="archive",
        sha256=source.sha256 if source else "",
        size_bytes=entry_size,
        format=source.format if source else "",
        model_name=source.model_name if source else "",
        confidence=confidence,
        reason=reason,
        owner=owner,
        process=writer,
        observed_at=time.time(),
    )


def _zip_entries(fd: int, head: bytes, size: int) -> list[tuple[str, int, bytes]]:
    def reader(offset: int, n: int) -> bytes:
        return os.pread(fd, n, offset)

    win = Window(size, head, b"", reader, 2 << 20)
    listing = list_zip(win, MAX_ARCHIVE_ENTRIES)
    out = []
    for i, entry in enumerate(listing.entries):
        peek = b""
        if i < MAX_ARCHIVE_PEEKS and entry.size >= 16:
            try:
                start = local_data_offset(win, entry)
                raw = os.pread(fd, min(entry.compressed_size, 4096 if entry.method else 16), start)
                if entry.method == 0:
                    peek = raw[:16]
                elif entry.method == 8:
                    peek = zlib.decompressobj(-15).decompress(raw, 16)  # 16 bytes out at most
            except (OSError, Malformed, Unavailable, zlib.error):
                peek = b""
        out.append((entry.name, entry.size, peek))
    return out


def _7z_entries(fd: int, size: int) -> tuple[list[tuple[str, int, bytes]], str]:
    """A 7z archive's files by name and size (content is compressed: no peeks)."""
    try:
        files = list_7z(lambda off, n: os.pread(fd, n, off), size)
    except NotListed as why:
        return [], f"7z archive with {why}: not listed"
    return [(name, n, b"") for name, n in files[:MAX_ARCHIVE_ENTRIES]], "7z listing"


def _inflate_front(kind: str, head: bytes, limit: int = 64 << 10) -> bytes:
    if kind == "zstd":
        import zstandard  # only when a zstd archive is met: most hosts have none

        # Bounded both ways: `limit` bytes out, and a window no larger than zstd's level 19 uses
        # (--long or --ultra archives are refused rather than given 128 MiB of memory).
        reader = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).stream_reader(head)
        with reader:
            try:
                return reader.read(limit)
            except zstandard.ZstdError as exc:
                raise ValueError(f"zstd: {exc}") from None
    if kind == "gzip":
        return zlib.decompressobj(31).decompress(head, limit)
    if kind == "xz":
        return lzma.LZMADecompressor().decompress(head, max_length=limit)
    return bz2.BZ2Decompressor().decompress(head, max_length=limit)


def _tar_entries(read: Callable[[int, int], bytes], size: int) -> list[tuple[str, int, bytes]]:
    out: list[tuple[str, int, bytes]] = []
    offset = 0
    while len(out) < MAX_ARCHIVE_ENTRIES and offset + 512 <= size:
        header = read(offset, 512)
        if len(header) < 512 or header == b"\0" * 512:
            break
        if header[257:262] != b"ustar":
            break
        name = header[:100].split(b"\0", 1)[0]
        prefix = header[345:500].split(b"\0", 1)[0]
        try:
            length = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
        except ValueError:
            break
        full = (prefix + b"/" + name if prefix else name).decode("utf-8", "replace")
        if header[156:157] in (b"0", b"\0", b"7"):
            peek = read(offset + 512, 16) if len(out) < MAX_ARCHIVE_PEEKS else b""
            out.append((full, length, peek))
        offset += 512 + (length + 511) // 512 * 512
    return out

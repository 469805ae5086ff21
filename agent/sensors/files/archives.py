"""Archives that carry weights out: what kind of archive a file is, a bounded listing of its
first entries (nothing extracted), and which of them are model weights: by the entry's content
(its header read in place, agent/sensors/files/members.py) or by its hash matching a known
model's. A size match only decides which entries are worth hashing; an entry whose content
cannot be read is at most "same size as X, content not verified"."""

from __future__ import annotations

import bz2
import lzma
import os
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from agent.modelfiles import ModelFileInfo
from agent.modelfiles.identify import HARD_MIN_BYTES
from agent.modelfiles.model import Malformed, Unavailable
from agent.modelfiles.window import Window
from agent.modelfiles.ziplist import list_zip, local_data_offset
from agent.observations import ModelTransferObservation, ProcessObservation
from agent.sensors.files.inventory import TrackedModel
from agent.sensors.files.members import STREAM_CODECS, ZSTD_MAX_WINDOW, Member, identify_member
from agent.sensors.files.sevenzip import NotListed, list_7z
from agent.sensors.files.significance import ModelRule, array_counts, judge

ARCHIVE_SUFFIXES: Final = (".zip", ".tar", ".tgz", ".tar.gz", ".tar.xz", ".tar.bz2", ".tar.zst", ".7z")
MAX_ARCHIVE_ENTRIES: Final = 1024
MAX_ARCHIVE_PEEKS: Final = 64
LISTING_READ_BYTES: Final = 64 << 10  # what one listing reads, for the read budget
MAX_PACKED_FOUND: Final = 8  # entries of one archive reported or hashed, at most
MAX_ARCHIVE_HEADER_BYTES: Final = 64 << 20  # entry headers read (inflated) for one archive, at most
#: Confidence of weights not verified by content or hash: the policy's default floor (0.5), so they
#: are reported by default, and a stricter floor drops them before anything verified.
UNVERIFIED_CONFIDENCE: Final = 0.5
_TAR_MAGIC_AT: Final = 257


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
    read (see `list_members`)."""
    members, how = list_members(path, size)
    return [(m.name, m.size, m.peek) for m in members], how


def list_members(path: str, size: int) -> tuple[list[Member], str]:
    """The archive's first entries, each with how its bytes are reached, and how it was read.
    Bounded: at most MAX_ARCHIVE_ENTRIES names, MAX_ARCHIVE_PEEKS peeks, 64 KiB inflated from a
    compressed stream, 16 bytes from any one zip entry; nothing is written anywhere."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return [], "unreadable"
    kind = ""
    try:
        head = os.pread(fd, LISTING_READ_BYTES, 0)
        kind = archive_kind(head, path)
        if kind == "zip":
            return _zip_entries(fd, head, size), "zip listing"
        if kind == "tar":
            return _tar_entries(lambda off, n: os.pread(fd, n, off), size, ""), "tar listing"
        if kind in STREAM_CODECS:
            data = _inflate_front(kind, head)
            return _tar_entries(
                lambda off, n: data[off : off + n], len(data), kind
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


@dataclass(frozen=True)
class PackedMember:
    """An archive entry whose hash is to be computed: weights by content (`info` set), or as large
    as a known model, so that its hash decides (a size match orders the work, never decides it)."""

    archive: str
    member: Member
    how: str
    owner: str
    writer: ProcessObservation | None
    info: ModelFileInfo | None = None
    confidence: float = 0.0


@dataclass
class ArchiveVerdict:
    """What a new archive carries: transfers known now (content not verified: a size or a writer
    only) and entries to hash (their transfers follow their hashes)."""

    unverified: list[ModelTransferObservation] = field(default_factory=list)
    to_hash: list[PackedMember] = field(default_factory=list)
    bytes_read: int = 0


def examine_archive(
    path: str,
    size: int,
    owner: str,
    writer: ProcessObservation | None,
    reading: frozenset[str],
    models: Sequence[TrackedModel],
) -> ArchiveVerdict:
    """The weights a new archive may carry, entry by entry: an entry counts by its content (its
    header, read in place) or by its hash matching a known model's; an entry whose content cannot
    be read and that is as large as a known model is reported as unverified (low confidence and,
    in detection, low severity). `reading`: the files its writer had open."""
    members, how = list_members(path, size)
    out = ArchiveVerdict(bytes_read=LISTING_READ_BYTES)
    by_size: dict[int, list[TrackedModel]] = {}
    for model in models:
        by_size.setdefault(model.key[2], []).append(model)
    identified = 0
    for member in members:
        if len(out.to_hash) + len(out.unverified) >= MAX_PACKED_FOUND:
            break
        same_size = sorted(by_size.get(member.size, ()), key=lambda m: m.path)
        affordable = identified < MAX_ARCHIVE_PEEKS and out.bytes_read < MAX_ARCHIVE_HEADER_BYTES
        if member.access and affordable and member.size >= HARD_MIN_BYTES:
            identified += 1
            verdict = identify_member(path, member)
            out.bytes_read += verdict.bytes_read
            if verdict.is_model and verdict.info is not None:
                out.to_hash.append(
                    PackedMember(path, member, how, owner, writer, verdict.info, verdict.confidence)
                )
            elif same_size:
                out.to_hash.append(PackedMember(path, member, how, owner, writer))
        elif member.access and same_size:  # readable, but past this archive's header budget
            out.to_hash.append(PackedMember(path, member, how, owner, writer))
        elif same_size:
            out.unverified.append(_unverified(path, member, how, same_size, owner, writer, reading))
    # Nothing found in what was listed, but the listing is not the whole archive (none at all, or
    # only a compressed tar's first entries): its writer reading a known model is all there is.
    partial = not members or how.startswith("first entries")
    if partial and not out.to_hash and not out.unverified and writer is not None:
        read_models = sorted((m for m in models if m.path in reading), key=lambda m: m.path)
        if read_models:
            model = read_models[0]
            out.unverified.append(
                _archive_transfer(
                    path,
                    "",
                    model.key[2],
                    (model.path, "writer"),
                    UNVERIFIED_CONFIDENCE,
                    f"written by pid {writer.pid} while it read {model.path} ({how}): content not verified",
                    owner,
                    writer,
                    identified_by="writer",
                    like=model,
                )
            )
    return out


def _unverified(
    path: str,
    member: Member,
    how: str,
    same_size: Sequence[TrackedModel],
    owner: str,
    writer: ProcessObservation | None,
    reading: frozenset[str],
) -> ModelTransferObservation:
    model = same_size[0]
    others = f" and {len(same_size) - 1} other known model(s)" if len(same_size) > 1 else ""
    source = next(((m.path, "writer") for m in same_size if m.path in reading), ("", ""))
    return _archive_transfer(
        path,
        member.name,
        member.size,
        source,
        UNVERIFIED_CONFIDENCE,
        f"holds {member.name} ({how}): same size as {model.path}{others}, content not verified",
        owner,
        writer,
        identified_by="size",
        like=model,
    )


def packed_transfer(
    packed: PackedMember,
    sha: str,
    error: str,
    known: Sequence[TrackedModel],
    reading: frozenset[str],
    rule: ModelRule,
) -> ModelTransferObservation | None:
    """The transfer of a hashed entry: weights by content (whatever its hash), or by a hash that
    a known model has; None when neither. `known`: the models with this hash. The source is
    named only when its writer had one of them open."""
    member = packed.member
    source = next(((m.path, "writer") for m in known if m.path in reading), ("", ""))
    if len(known) == 1:
        same = f"the SHA-256 of {known[0].path}"
    else:
        same = f"the SHA-256 of {len(known)} known model files" if known else ""
    if packed.info is not None:
        info = packed.info
        reason = f"holds {member.name} ({packed.how}), {info.format} weights by content"
        reason += f", {same}" if same else ""
        if not sha:
            reason += f"; not hashed: {error or 'unknown'}"
        weight_names, arrays = array_counts(info.extra)
        verdict = judge(
            rule,
            member.name,
            info.format,
            member.size,
            info.parameter_count or 0,
            weight_names=weight_names,
            arrays=arrays,
        )
        transfer = _archive_transfer(
            packed.archive,
            member.name,
            member.size,
            source,
            packed.confidence or 0.9,
            reason,
            packed.owner,
            packed.writer,
            sha256=sha,
            fmt=info.format,
            model_name=info.model_name or (known[0].model_name if known else ""),
        )
        return replace(transfer, demoted=not verdict.counts, reasons=verdict.reasons)
    if not sha or not known:
        return None
    model = known[0]
    return _archive_transfer(
        packed.archive,
        member.name,
        member.size,
        source,
        0.95,
        f"holds {member.name} ({packed.how}), {same}",
        packed.owner,
        packed.writer,
        sha256=sha,
        identified_by="hash",
        like=model,
    )


def _archive_transfer(
    path: str,
    member: str,
    size: int,
    source: tuple[str, str],
    confidence: float,
    reason: str,
    owner: str,
    writer: ProcessObservation | None,
    *,
    sha256: str = "",
    identified_by: str = "content",
    fmt: str = "",
    model_name: str = "",
    like: TrackedModel | None = None,
) -> ModelTransferObservation:
    """`like`: the known model whose format, name and significance the entry is taken to share."""
    return ModelTransferObservation(
        source_path=source[0],
        destination=path,
        destination_root=path,
        kind="archive",
        sha256=sha256,
        size_bytes=size,
        format=fmt or (like.format if like else ""),
        model_name=model_name or (like.model_name if like else ""),
        confidence=confidence,
        reason=reason,
        owner=owner,
        process=writer,
        observed_at=time.time(),
        demoted=like.demoted if like else False,
        reasons=like.reasons if like else (),
        identified_by=identified_by,
        member=member,
        source_known_by=source[1],
    )


def _zip_entries(fd: int, head: bytes, size: int) -> list[Member]:
    def reader(offset: int, n: int) -> bytes:
        return os.pread(fd, n, offset)

    win = Window(size, head, b"", reader, 2 << 20)
    listing = list_zip(win, MAX_ARCHIVE_ENTRIES)
    out = []
    for i, entry in enumerate(listing.entries):
        peek, start = b"", -1
        if i < MAX_ARCHIVE_PEEKS and entry.size >= 16:
            try:
                start = local_data_offset(win, entry)
                raw = os.pread(fd, min(entry.compressed_size, 4096 if entry.method else 16), start)
                if entry.method == 0:
                    peek = raw[:16]
                elif entry.method == 8:
                    peek = zlib.decompressobj(-15).decompress(raw, 16)  # 16 bytes out at most
            except (OSError, Malformed, Unavailable, zlib.error):
                peek, start = b"", -1
        access = ""
        if start >= 0 and entry.method == 0 and entry.compressed_size == entry.size:
            access = "stored"
        elif start >= 0 and entry.method == 8:
            access = "deflate"
        out.append(Member(entry.name, entry.size, peek, access, max(start, 0), entry.compressed_size))
    return out


def _7z_entries(fd: int, size: int) -> tuple[list[Member], str]:
    """A 7z archive's files by name and size (content is compressed in solid blocks: not read)."""
    try:
        files = list_7z(lambda off, n: os.pread(fd, n, off), size)
    except NotListed as why:
        return [], f"7z archive with {why}: not listed"
    return [Member(name, n) for name, n in files[:MAX_ARCHIVE_ENTRIES]], "7z listing"


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


def _tar_entries(read: Callable[[int, int], bytes], size: int, codec: str) -> list[Member]:
    """A tar's entries from its headers; `codec` "" for a plain tar (entries stored in place),
    else the compression of the stream the bytes were inflated from."""
    out: list[Member] = []
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
            access = "stream" if codec else "stored"
            out.append(Member(full, length, peek, access, offset + 512, codec=codec))
        offset += 512 + (length + 511) // 512 * 512
    return out

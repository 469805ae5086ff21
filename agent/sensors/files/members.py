"""An archive's entries read in place, never extracted: whether an entry is model weights by its
content (the header read from the entry itself), and the SHA-256 of the entry's bytes as a job
the hashing budget paces, like a file's.

How an entry is reached (`Member.access`):

- "stored": its bytes lie as they are in the archive (a zip entry stored, any entry of a plain
  tar): read at random like a file (`identify_range`) and hashed as a byte range of the archive.
- "deflate": a zip entry deflated: inflated as a stream from its first byte, as zipfile's
  streaming `ZipExtFile` does, but from Umbra's own bounded listing (see ziplist.py for why
  not `ZipFile`); only as much as the header needs, or the whole entry for its hash.
- "stream": an entry of a gzip, xz, bzip2 or zstd tar, listed from the stream's first 64 KiB:
  the stream is decompressed from its start (tars have no index) up to the entry and through
  it. zstd keeps its 8 MiB window bound.
- "": its content cannot be read at a reasonable cost (a 7z solid block, a zip method other
  than stored or deflated): only its name and size are known, so it is never called weights
  by content; at most "same size as a known model, content not verified".

Decompressing never produces more than asked: every read names its output bound, so a bomb
costs what the entry claims and no more, within the hashing budget.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import os
import zlib
from dataclasses import dataclass
from typing import IO, Any, Final, Protocol

from agent.modelfiles import identify_header, looks_like_model_quick
from agent.modelfiles.identify import DEFAULT_MAX_HEADER_BYTES, FIRST_READ, identify_range
from agent.modelfiles.model import Identification
from agent.system.hashing import CHUNK_BYTES, FileKey, HashJob

#: Zips named like these are model containers (torch.save, np.savez, Keras) even when their first
#: entry is deflated, so the 16-byte check alone does not rule them out.
ZIP_MODEL_SUFFIXES: Final = frozenset({"npz", "keras", "pt", "pth", "ckpt", "bin", "mlmodel"})
STREAM_CODECS: Final = ("gzip", "xz", "bz2", "zstd")
ZSTD_MAX_WINDOW: Final = 8 << 20
_INPUT_CHUNK: Final = 256 << 10


@dataclass(frozen=True)
class Member:
    """One archive entry: its name, size and first 16 bytes (b"" when not read), and how its bytes
    are reached: `offset` is where they start in the archive ("stored", "deflate") or in the
    decompressed stream ("stream"); `packed_size` the deflated bytes; `codec` the stream's."""

    name: str
    size: int
    peek: bytes = b""
    access: str = ""
    offset: int = 0
    packed_size: int = 0
    codec: str = ""


def worth_identifying(head: bytes, name: str) -> bool:
    """The first bytes carry a model format's signature, or a zip named like a model container."""
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return looks_like_model_quick(head) or (head[:4] == b"PK\x03\x04" and suffix in ZIP_MODEL_SUFFIXES)


def identify_member(path: str, member: Member) -> Identification:
    """The entry's verdict by content, from its header read in place (at most the header bound);
    "not_model" without reading when its first bytes carry no model signature."""
    name = os.path.basename(member.name)
    if not member.access:
        return Identification("not_model", "content not readable in this archive")
    if member.peek and not worth_identifying(member.peek, name):
        return Identification("not_model", "no model format signature")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        return Identification("not_model", f"cannot open: {exc.strerror or exc}")
    try:
        if member.access == "stored":
            start, size = member.offset, member.size
            return identify_range(
                lambda off, n: os.pread(fd, max(0, min(n, size - off)), start + off), size, name
            )
        head = read_front(fd, member, FIRST_READ)
        verdict = identify_header(head, member.size, name)
        if verdict.reason.startswith("not enough bytes") and len(head) < member.size:
            head = read_front(fd, member, DEFAULT_MAX_HEADER_BYTES)  # a long header (thousands of tensors)
            verdict = identify_header(head, member.size, name)
        return Identification(
            verdict.verdict,
            verdict.reason,
            verdict.info,
            format=verdict.format,
            confidence=verdict.confidence,
            bytes_read=len(head),
        )
    except (OSError, ValueError, EOFError, zlib.error, lzma.LZMAError) as exc:
        return Identification("not_model", f"unreadable entry: {exc}")
    finally:
        os.close(fd)


def read_front(fd: int, member: Member, n: int) -> bytes:
    """The entry's first `n` bytes (fewer when it is shorter), decompressed as needed."""
    want = min(n, member.size)
    if member.access == "stored":
        return os.pread(fd, want, member.offset)
    with _Content(fd, member) as stream:
        _skip(stream, member.offset if member.access == "stream" else 0)
        return _read_exactly(stream, want)


class _Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class _Inflater:
    """A zip entry's raw deflate stream, `packed_size` bytes from `offset`, read with an output bound."""

    def __init__(self, fd: int, offset: int, packed_size: int) -> None:
        self._fd, self._at, self._left = fd, offset, packed_size
        self._z = zlib.decompressobj(-15)
        self._pending = b""

    def read(self, n: int = -1, /) -> bytes:
        out = bytearray()
        while len(out) < n and not self._z.eof:
            if not self._pending:
                if self._left <= 0:
                    break
                self._pending = os.pread(self._fd, min(_INPUT_CHUNK, self._left), self._at)
                if not self._pending:
                    break
                self._at += len(self._pending)
                self._left -= len(self._pending)
            out += self._z.decompress(self._pending, n - len(out))
            self._pending = self._z.unconsumed_tail
        return bytes(out)

    def close(self) -> None:
        pass


class _Content:
    """The entry's content stream, closed with everything it opened."""

    def __init__(self, fd: int, member: Member) -> None:
        self._raw: IO[bytes] | None = None
        self.stream: _Readable
        if member.access == "deflate":
            self.stream = _Inflater(fd, member.offset, member.packed_size)
            return
        if member.access != "stream" or member.codec not in STREAM_CODECS:
            raise ValueError(f"entry {member.name[:60]!r} cannot be read")
        self._raw = os.fdopen(os.dup(fd), "rb")
        self._raw.seek(0)  # a duplicate shares the offset an earlier read left
        if member.codec == "gzip":
            self.stream = gzip.GzipFile(fileobj=self._raw, mode="rb")
        elif member.codec == "xz":
            self.stream = lzma.LZMAFile(self._raw)  # noqa: SIM115 - closed by close()
        elif member.codec == "bz2":
            self.stream = bz2.BZ2File(self._raw)
        else:
            import zstandard  # only when a zstd archive is met

            self.stream = _ZstdStream(
                zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).stream_reader(
                    self._raw, read_across_frames=True
                ),
                zstandard.ZstdError,
            )

    def __enter__(self) -> _Readable:
        return self.stream

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stream.close()  # type: ignore[attr-defined]
        if self._raw is not None:
            with contextlib.suppress(OSError):
                self._raw.close()
            self._raw = None


class _ZstdStream:
    """zstandard's reader, its errors as ValueError like the standard library decoders' (the
    module is imported only when a zstd archive is met)."""

    def __init__(self, reader: Any, error: type[Exception]) -> None:
        self._reader, self._error = reader, error

    def read(self, n: int = -1, /) -> bytes:
        try:
            return bytes(self._reader.read(n))
        except self._error as exc:
            raise ValueError(f"zstd: {exc}") from None

    def close(self) -> None:
        self._reader.close()


def _skip(stream: _Readable, n: int) -> None:
    while n > 0:
        got = stream.read(min(n, CHUNK_BYTES))
        if not got:
            raise EOFError("the stream ended before the entry")
        n -= len(got)


def _read_exactly(stream: _Readable, n: int) -> bytes:
    parts = []
    while n > 0:
        got = stream.read(min(n, CHUNK_BYTES))
        if not got:
            break
        parts.append(got)
        n -= len(got)
    return b"".join(parts)


class StreamHashJob(HashJob):
    """SHA-256 of a compressed entry's bytes: HashJob's steps and checks (the archive must stay
    the same file version throughout), each step one bounded read of the decompressed entry."""

    def __init__(self, path: str, key: FileKey, member: Member) -> None:
        super().__init__(path, key, length=member.size)
        self.member = member
        self._content: _Content | None = None

    def _read(self, fd: int, n: int) -> bytes:
        try:
            if self._content is None:
                self._content = _Content(fd, self.member)
                _skip(self._content.stream, self.member.offset if self.member.access == "stream" else 0)
            data = self._content.stream.read(n)
        except (ValueError, EOFError, zlib.error, lzma.LZMAError) as exc:
            raise OSError(f"unreadable entry: {exc}") from None
        if len(data) < n:
            raise OSError("the entry ended before its declared size")
        return data

    def close(self) -> None:
        if self._content is not None:
            self._content.close()
            self._content = None
        super().close()


def member_hash_job(path: str, key: FileKey, member: Member) -> HashJob:
    """The job that hashes the entry's bytes: a byte range of the archive when stored."""
    if member.access == "stored":
        return HashJob(path, key, start=member.offset, length=member.size)
    return StreamHashJob(path, key, member)

"""Polite file work for the file sensor: rate budgets, incremental SHA-256, a persistent cache.

- `TokenBucket`: a rate budget (files/s, bytes/s). Taking may overdraw; the debt is the time
  to wait before the next take, so a large read is paid for after the fact, never refused.
- `HashJob`: SHA-256 of one file, one chunk per step, so the one worker thread can interleave
  hashing with watchdog events and the scan; the file's (device, inode, size, mtime) is
  checked after the last chunk, and a file that changed meanwhile yields no hash.
- `FileStateStore`: a small SQLite file in the agent's state dir (not the spool: a cache that
  may be deleted at any time, written often, never a promise). It keeps hashes by
  (device, inode, size, mtime), so restarts never re-hash, and the fingerprints of files
  already judged not to be models, so restarts never re-read them.
- `lower_thread_priority`: nice 10 and the idle I/O class for the calling thread (Linux:
  setpriority and ioprio_set on the thread id), best effort.
"""

from __future__ import annotations

import array
import bisect
import contextlib
import ctypes
import hashlib
import heapq
import os
import platform
import sqlite3
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from umbra.private import create_private_file

__all__ = [
    "CHUNK_BYTES",
    "FileKey",
    "FileStateStore",
    "HashJob",
    "SeenSet",
    "TokenBucket",
    "file_key",
    "lower_thread_priority",
    "sha256_file",
]

CHUNK_BYTES: Final = 1 << 20

#: (st_dev, st_ino, st_size, st_mtime_ns): a file version, without reading it.
FileKey = tuple[int, int, int, int]


def file_key(st: os.stat_result) -> FileKey:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up. rate <= 0 means unlimited."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(rate, 1.0))
        self._tokens = self.burst
        self._at = time.monotonic()

    def take(self, n: float) -> float:
        """Spend n tokens now; return the seconds to wait before the next take (0 when in credit)."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate) - n
        self._at = now
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def wait_time(self, hold: float = 0.0) -> float:
        """Seconds until the bucket holds `hold` tokens (capped at `burst`); with the default 0,
        until it is out of debt. 0 when it holds them already."""
        if self.rate <= 0:
            return 0.0
        tokens = min(self.burst, self._tokens + (time.monotonic() - self._at) * self.rate)
        want = min(hold, self.burst)
        return 0.0 if tokens >= want else (want - tokens) / self.rate


class HashJob:
    """SHA-256 of one file version, `step()` by `step()`; or of `length` bytes from `start` (an
    archive's stored entry), checked against the same file version."""

    def __init__(self, path: str, key: FileKey, start: int = 0, length: int | None = None) -> None:
        self.path = path
        self.key = key
        self.done = False
        self.sha256 = ""  # set when done and the file did not change
        self.error = ""
        self._h = hashlib.sha256()
        self._fd: int | None = None
        self._start = start
        self._length = key[2] - start if length is None else length
        self._offset = 0

    def step(self, max_bytes: int = CHUNK_BYTES) -> int:
        """Hash up to max_bytes; return the bytes read. Sets `done` at the end or on error."""
        if self.done:
            return 0
        try:
            if self._fd is None:
                self._fd = os.open(
                    self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
                )
                if file_key(os.fstat(self._fd)) != self.key:
                    return self._finish("changed before hashing")
            want = min(max_bytes, self._length - self._offset)
            chunk = self._read(self._fd, want) if want > 0 else b""
        except OSError as exc:
            return self._finish(exc.strerror or str(exc))
        self._h.update(chunk)
        self._offset += len(chunk)
        if len(chunk) < want or self._offset >= self._length:
            try:
                same = file_key(os.fstat(self._fd)) == self.key and self._offset == self._length
            except OSError:
                same = False
            if same:
                self.sha256 = self._h.hexdigest()
            self._finish("" if same else "changed while hashing")
        return len(chunk)

    def _read(self, fd: int, n: int) -> bytes:
        """The next `n` bytes to hash (fewer at the end); a subclass may read them otherwise."""
        return os.pread(fd, n, self._start + self._offset)

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _finish(self, error: str) -> int:
        self.error = error
        self.done = True
        self.close()
        return 0


def sha256_file(path: str, rate_bytes: float = 0.0, chunk: int = CHUNK_BYTES) -> str:
    """The whole file's SHA-256 at most `rate_bytes` a second (0: unthrottled); "" on failure."""
    st = os.stat(path)
    job = HashJob(path, file_key(st))
    bucket = TokenBucket(rate_bytes, burst=max(rate_bytes / 10, chunk)) if rate_bytes > 0 else None
    while not job.done:
        n = job.step(chunk)
        if bucket is not None:
            wait = bucket.take(n)
            if wait:
                time.sleep(wait)
    return job.sha256


def fingerprint(key: FileKey) -> int:
    """A signed 64-bit digest of a file version (for the not-a-model set)."""
    digest = hashlib.blake2b(
        struct.pack("<4q", *(k & 0x7FFFFFFFFFFFFFFF for k in key)), digest_size=8
    ).digest()
    return int.from_bytes(digest, "little", signed=True)


class SeenSet:
    """File versions already judged, 8 bytes each: a sorted array plus a small set of new ones.
    At most `limit` entries; past it, adds are ignored (those files are simply read again)."""

    def __init__(self, limit: int, data: bytes = b"") -> None:
        self.limit = limit
        self._sorted = array.array("q")
        if data:
            self._sorted.frombytes(data[: len(data) // 8 * 8][: limit * 8])
            if any(a >= b for a, b in zip(self._sorted, self._sorted[1:], strict=False)):  # not as saved
                self._sorted = array.array("q", _unique(sorted(self._sorted)))
        self._new: set[int] = set()

    def __len__(self) -> int:
        return len(self._sorted) + len(self._new)

    def __contains__(self, fp: int) -> bool:
        if fp in self._new:
            return True
        i = bisect.bisect_left(self._sorted, fp)
        return i < len(self._sorted) and self._sorted[i] == fp

    def add(self, fp: int) -> None:
        if len(self) < self.limit:
            self._new.add(fp)
            if len(self._new) >= 4096:
                self.compact()

    def compact(self) -> None:
        """Merge the new ones into the sorted array, one value at a time: a set or list of every
        entry would cost some 60 bytes an entry at once (12 MiB at 200,000), the array 8."""
        if self._new:
            self._sorted = array.array("q", _unique(heapq.merge(self._sorted, sorted(self._new))))
            self._new.clear()

    def to_bytes(self) -> bytes:
        self.compact()
        return self._sorted.tobytes()


def _unique(ordered: Iterable[int]) -> Iterator[int]:
    last = None
    for value in ordered:
        if value != last:
            yield value
            last = value


@dataclass
class FileStateStore:
    """Hashes and judged fingerprints, in SQLite. Use from one thread (the sensor's worker)."""

    path: Path
    max_hashes: int = 100_000

    def __post_init__(self) -> None:
        create_private_file(self.path)  # 0600 before SQLite opens it; its -wal and -shm take that mode
        self._db = sqlite3.connect(str(self.path), timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # a cache: losing the last writes costs a re-hash
        self._db.execute("PRAGMA cache_size=-512")  # KiB of page cache (SQLite's default: 2 MiB)
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS hashes (
                dev INTEGER NOT NULL, ino INTEGER NOT NULL, size INTEGER NOT NULL,
                mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL, at REAL NOT NULL,
                PRIMARY KEY (dev, ino, size, mtime_ns)) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS seen (
                id INTEGER PRIMARY KEY CHECK (id = 1), fingerprints BLOB NOT NULL);
            """
        )
        self._db.commit()
        (self._rows,) = self._db.execute("SELECT COUNT(*) FROM hashes").fetchone()

    def get_hash(self, key: FileKey) -> str:
        row = self._db.execute(
            "SELECT sha256 FROM hashes WHERE dev=? AND ino=? AND size=? AND mtime_ns=?", _signed(key)
        ).fetchone()
        return str(row[0]) if row else ""

    def put_hash(self, key: FileKey, sha256: str) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?, ?)",
                (*_signed(key), sha256, time.time()),
            )
            self._rows += 1
            if self._rows > self.max_hashes:  # the oldest go first
                self._db.execute(
                    "DELETE FROM hashes WHERE (dev, ino, size, mtime_ns) IN "
                    "(SELECT dev, ino, size, mtime_ns FROM hashes ORDER BY at LIMIT ?)",
                    (self._rows - self.max_hashes,),
                )
                (self._rows,) = self._db.execute("SELECT COUNT(*) FROM hashes").fetchone()

    def load_seen(self) -> bytes:
        row = self._db.execute("SELECT fingerprints FROM seen WHERE id = 1").fetchone()
        return bytes(row[0]) if row else b""

    def save_seen(self, data: bytes) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO seen VALUES (1, ?)", (data,))

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()


def _signed(key: FileKey) -> tuple[int, int, int, int]:
    """SQLite integers are signed 64-bit; device numbers and inodes fit, but be safe."""
    return tuple(k - (1 << 64) if k >= 1 << 63 else k for k in key)  # type: ignore[return-value]


# --- priority --------------------------------------------------------------------------------

#: ioprio_set(2) by machine (asm/unistd.h); other machines: nice only.
_IOPRIO_SET: Final = {
    "x86_64": 251,
    "aarch64": 30,
    "arm64": 30,
    "riscv64": 30,
    "i686": 289,
    "i386": 289,
    "armv7l": 314,
    "ppc64le": 273,
    "s390x": 282,
}
_IOPRIO_CLASS_IDLE: Final = 3
_IOPRIO_CLASS_SHIFT: Final = 13
_IOPRIO_WHO_PROCESS: Final = 1


def lower_thread_priority(nice: int = 10) -> list[str]:
    """Lower the calling thread's CPU and I/O priority; the list says what could not be done."""
    problems: list[str] = []
    if platform.system() != "Linux":
        return ["per-thread priority on Linux only"]
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), nice))
    except OSError as exc:
        problems.append(f"setpriority: {exc.strerror}")
    number = _IOPRIO_SET.get(platform.machine())
    if number is None:
        problems.append(f"ioprio_set: unknown syscall number on {platform.machine()}")
        return problems
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: the C library's
        rc = libc.syscall(number, _IOPRIO_WHO_PROCESS, tid, _IOPRIO_CLASS_IDLE << _IOPRIO_CLASS_SHIFT)
        if rc != 0:
            problems.append(f"ioprio_set: {os.strerror(ctypes.get_errno())}")
    except (OSError, AttributeError) as exc:
        problems.append(f"ioprio_set: {exc}")
    return problems

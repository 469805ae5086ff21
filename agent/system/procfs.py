"""Deep process facts from Linux's /proc: mapped files, files open for writing, env names.

Read only for processes worth it (runtimes, interpreters, large processes), at a slow
refresh, never per poll for every process. Every read is bounded, and a process that exits
or hides its facts (another user's process without root) gives empty facts, never an error.
On macOS and Windows these return nothing: psutil's memory_maps/open_files are the path
there, left for the platform work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
MAX_MAPS_BYTES = 8 * 1024 * 1024  # a browser's maps runs to a few hundred KiB
MAX_ENVIRON_BYTES = 1024 * 1024
MAX_FDS = 4096
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR


def _read(path: Path, limit: int) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(limit)
    except OSError:  # gone, or not ours to read
        return b""


def mapped_files(pid: int) -> tuple[str, ...]:
    """Distinct file paths mapped into the process (libraries and mmapped data), in map order."""
    seen: dict[str, None] = {}
    for line in _read(PROC / str(pid) / "maps", MAX_MAPS_BYTES).splitlines():
        # address perms offset dev inode pathname; the path may hold spaces.
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[4] != b"0" and parts[5].startswith(b"/"):
            path = parts[5].decode("utf-8", "surrogateescape")
            if path.endswith(" (deleted)"):
                path = path[: -len(" (deleted)")]
            seen.setdefault(path, None)
    return tuple(seen)


def open_files(pid: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(regular files open for reading only, regular files open for writing), bounded.

    String paths, not Path objects: this runs for every descriptor of a followed process.
    """
    fd_dir = f"/proc/{pid}/fd"
    reading: dict[str, None] = {}
    writing: dict[str, None] = {}
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return (), ()
    for fd in fds[:MAX_FDS]:
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if not target.startswith("/") or target.startswith(("/dev/", "/proc/", "/sys/")):
            continue  # sockets, pipes, anon inodes, devices
        flags = fd_flags(pid, fd)
        if flags is None:
            continue
        (writing if flags & WRITE_FLAGS else reading).setdefault(target, None)
    return tuple(reading), tuple(writing)


def fd_flags(pid: int, fd: str) -> int | None:
    """The open flags of one descriptor (octal `flags:` of fdinfo); None when gone or hidden."""
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}", "rb") as f:
            info = f.read(4096)
    except OSError:
        return None
    for line in info.splitlines():
        if line.startswith(b"flags:"):
            try:
                return int(line.split()[1], 8)
            except (IndexError, ValueError):
                return None
    return None


def env_var_names(pid: int, wanted: frozenset[str]) -> tuple[str, ...]:
    """Which of `wanted` are set in the process's environment. Names only: values are
    dropped here, at the point of reading, and never reach a finding."""
    found = []
    for entry in _read(PROC / str(pid) / "environ", MAX_ENVIRON_BYTES).split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep and value:
            text = name.decode("ascii", "replace")
            if text in wanted:
                found.append(text)
    return tuple(sorted(set(found)))


@dataclass(frozen=True)
class BasicFacts:
    name: str
    ppid: int
    create_time: float
    rss_bytes: int
    exe: str
    cmdline: tuple[str, ...]


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MAX_CMDLINE_BYTES = 32 * 1024


def basic_facts(pid: int, boot_time: float) -> BasicFacts | None:
    """Name, parent, start time, RSS, executable and command line in three reads.

    The process sensor's hot path on Linux: every new PID pays this, so it reads /proc
    directly instead of through psutil's per-process objects (a third of the cost). The
    start time is computed as psutil computes it, so the two agree.
    """
    base = PROC / str(pid)
    stat = _read(base / "stat", 4096)
    close = stat.rfind(b")")
    if close < 0:
        return None  # gone
    name = stat[stat.find(b"(") + 1 : close].decode("utf-8", "replace")
    fields = stat[close + 2 :].split()
    try:
        ppid = int(fields[1])
        create_time = boot_time + int(fields[19]) / _CLOCK_TICKS
        rss = int(fields[21]) * _PAGE_SIZE
    except (IndexError, ValueError):
        return None
    try:
        exe = os.readlink(base / "exe")
    except OSError:  # kernel thread, gone, or not ours
        exe = ""
    raw = _read(base / "cmdline", MAX_CMDLINE_BYTES)
    cmdline = (
        tuple(a.decode("utf-8", "surrogateescape") for a in raw.rstrip(b"\0").split(b"\0")) if raw else ()
    )
    return BasicFacts(name, ppid, create_time, rss, exe.removesuffix(" (deleted)"), cmdline)


def rss_bytes(pid: int) -> int:
    """Resident set size from /proc/PID/statm (0 when unknown)."""
    fields = _read(PROC / str(pid) / "statm", 256).split()
    try:
        return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
    except (IndexError, ValueError):
        return 0

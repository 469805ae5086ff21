"""Files only their owner may read: the agent's spool and state, the collector's database and keys.

Both sides keep findings, keys and credentials on disk, so both create those files 0600 and their
own directories 0700 at creation (never create-then-chmod, which leaves a window), and both
check at start what an older version, a restore or an operator left wider. One module, here
beside the wire code both sides import, so the rule is written once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Final

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "create_private_file",
    "make_private_dir",
    "sqlite_files",
    "tighten",
    "write_private",
]

FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700
_GROUP_OTHER: Final = 0o077


def make_private_dir(path: Path) -> Path:
    """`path` and any missing parents, each created 0700. An existing directory is left as it is
    (`tighten` reports it): it may be an operator's, shared with other things."""
    missing: list[Path] = []
    here = path
    while not here.exists() and here != here.parent:
        missing.append(here)
        here = here.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another process
            directory.mkdir(mode=DIR_MODE)
        with contextlib.suppress(OSError):
            os.chmod(directory, DIR_MODE)  # mkdir's mode passes through the umask
    return path


def create_private_file(path: Path) -> Path:
    """Create `path` empty and 0600 unless it exists (before SQLite opens it: SQLite creates a
    database 0644 and gives its -wal and -shm files the database's mode)."""
    make_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
    except FileExistsError:
        return path
    try:
        os.fchmod(fd, FILE_MODE)  # the umask may have taken bits the mode asked for; never adds any
    finally:
        os.close(fd)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` atomically with `data`, mode 0600, synced (file and directory) before it counts."""
    make_private_dir(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), FILE_MODE)  # a leftover .tmp keeps its old mode through O_CREAT
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # not every platform opens directories
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def sqlite_files(db: Path) -> list[Path]:
    """A SQLite database and the files SQLite keeps beside it in WAL mode."""
    return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]


def tighten(paths: Iterable[Path], log: logging.Logger) -> list[str]:
    """Check files (0600) and directories (0700) that exist among `paths`; narrow the ones this
    process owns and log a warning naming each path found wider. Returns the warnings.

    A directory with the sticky bit (/tmp) or owned by someone else is only reported: it is not
    ours to change. Symbolic links are not followed."""
    warnings: list[str] = []
    me = os.geteuid() if hasattr(os, "geteuid") else None
    for path in paths:
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISLNK(st.st_mode) or not st.st_mode & _GROUP_OTHER:
            continue
        is_dir = stat.S_ISDIR(st.st_mode)
        want = DIR_MODE if is_dir else FILE_MODE
        wide = f"{path} is mode {stat.S_IMODE(st.st_mode):04o}, open to other users"
        ours = me is None or st.st_uid == me
        if ours and not (is_dir and st.st_mode & stat.S_ISVTX):
            try:
                os.chmod(path, want)
            except OSError as exc:
                message = f"{wide}, and cannot be narrowed to {want:04o}: {exc.strerror}"
            else:
                message = f"{wide}: narrowed to {want:04o}"
        else:
            message = f"{wide}, and not ours to narrow: make it {want:04o}"
        log.warning("%s", message)
        warnings.append(message)
    return warnings

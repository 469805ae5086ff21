"""The mount table: /proc/self/mountinfo, re-read only when the kernel says it changed, and
whether a block device is removable (/sys/dev/block). psutil's partitions elsewhere."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import select
import time
from dataclasses import dataclass
from typing import Any, Final

import psutil

_LINUX = platform.system() == "Linux"
# File systems that never hold a user's files: their mounts are never removable media.
PSEUDO_FS: Final = frozenset(
    {
        "proc",
        "sysfs",
        "cgroup",
        "cgroup2",
        "devpts",
        "securityfs",
        "debugfs",
        "tracefs",
        "bpf",
        "binfmt_misc",
        "fusectl",
        "configfs",
        "mqueue",
        "hugetlbfs",
        "pstore",
        "autofs",
        "devtmpfs",
        "efivarfs",
        "nsfs",
        "overlay",
        "squashfs",
    }
)


# Where a block device's sysfs path says it is plugged in (drivers/usb, drivers/mmc).
_HOTPLUG_BUSES: Final = ("/usb", "/mmc_host/")


@dataclass(frozen=True)
class Mount:
    mount_point: str
    fstype: str
    source: str
    major: int
    minor: int


class MountWatcher:
    """/proc/self/mountinfo, re-read when the kernel says it changed (poll: POLLPRI)."""

    PATH = "/proc/self/mountinfo"

    def __init__(self) -> None:
        self._fd: int | None = None
        self._poll: Any = None
        self._fallback_at = 0.0
        if _LINUX:
            try:
                self._fd = os.open(self.PATH, os.O_RDONLY)
                self._poll = select.poll()
                self._poll.register(self._fd, select.POLLPRI | select.POLLERR)
            except OSError:
                self._fd = None

    def changed(self) -> bool:
        if self._poll is not None:
            try:
                return bool(self._poll.poll(0))
            except OSError:
                return False
        if time.monotonic() - self._fallback_at > 5.0:
            self._fallback_at = time.monotonic()
            return True
        return False

    def close(self) -> None:
        """Let go of the mount table's descriptor; a closed watcher reads through psutil."""
        if self._poll is not None and self._fd is not None:
            with contextlib.suppress(Exception):
                self._poll.unregister(self._fd)
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
        self._poll = None

    def read(self) -> list[Mount]:
        if self._fd is not None:
            try:
                os.lseek(self._fd, 0, os.SEEK_SET)
                chunks = []
                while chunk := os.read(self._fd, 65536):
                    chunks.append(chunk)
                return parse_mountinfo(b"".join(chunks).decode("utf-8", "replace"))
            except OSError:
                return []
        out = []
        with contextlib.suppress(Exception):
            for part in psutil.disk_partitions(all=False):
                out.append(Mount(part.mountpoint, part.fstype, part.device, 0, 0))
        return out


def parse_mountinfo(text: str) -> list[Mount]:
    """proc(5) mountinfo: `id parent maj:min root mount_point options [optional...] - fstype source super`."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 2:
            continue
        major, _, minor = fields[2].partition(":")
        try:
            mounts.append(Mount(_unescape(fields[4]), tail[0], _unescape(tail[1]), int(major), int(minor)))
        except ValueError:
            continue
    return mounts


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def removable_device(major: int, minor: int) -> bool:
    """/sys/dev/block/MAJ:MIN -> the disk (a partition's parent) -> its `removable` flag, or a
    disk attached through USB or an SD/MMC slot (USB SSDs and many sticks say removable=0)."""
    if major == 0:
        return False
    try:
        dev = os.path.realpath(f"/sys/dev/block/{major}:{minor}")
    except OSError:
        return False
    if any(bus in dev for bus in _HOTPLUG_BUSES):
        return True
    for candidate in (dev, os.path.dirname(dev)):
        try:
            with open(os.path.join(candidate, "removable"), "rb") as f:
                return f.read(1) == b"1"
        except OSError:
            continue
    return False

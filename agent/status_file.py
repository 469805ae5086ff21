"""The running daemon's own account of itself, for `umbra-agent status`: one JSON file in the state
directory, rewritten every few seconds.

A file rather than a Unix socket: the daemon opens no endpoint that anything could connect to
(nothing to authenticate, nothing to hang the daemon), the reader needs nothing from the daemon to
answer (a wedged daemon shows as a stale file, which is itself the answer), and it works unchanged
under the service's sandbox, where the state directory is the one writable place. It is replaced
atomically (written beside, then renamed) so a reader never sees half of it, and it is mode 0600 in
the state directory: it names the collector and sensors' reasons, which are the operator's.

The file is stale, and the daemon taken as not running, when its writer's process is gone (its pid
no longer exists or now belongs to a process started at another time) or when it has not been
rewritten for three intervals (a daemon that no longer makes progress).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = ["STATUS_FILE", "DaemonView", "read_status", "status_path", "write_status"]

STATUS_FILE: Final = "status.json"
FORMAT: Final = 1
STALE_INTERVALS: Final = 3


def status_path(state_dir: Path) -> Path:
    return state_dir / STATUS_FILE


def process_start(pid: int) -> float:
    """When `pid` started (seconds since boot, from /proc), or psutil's create time elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        import psutil

        try:
            return float(psutil.Process(pid).create_time())
        except psutil.Error:
            return -1.0


def write_status(path: Path, doc: dict[str, Any]) -> None:
    """Replace the status file with `doc` atomically, mode 0600."""
    body = json.dumps({"format": FORMAT, "written_at": time.time(), **doc}, indent=1).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an older file of the same name may have had another mode
        os.write(fd, body)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def remove_status(path: Path, pid: int) -> None:
    """At a clean stop: the file goes, unless another daemon wrote it since."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_bytes()).get("pid") == pid:
            path.unlink()


@dataclass(frozen=True)
class DaemonView:
    running: bool
    why: str  # why it is taken as not running; "" when it runs
    doc: dict[str, Any] | None  # the last status written (also when stale), None when there is none


def read_status(path: Path, now: float | None = None) -> DaemonView:
    """What the daemon last said about itself, and whether it still runs."""
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return DaemonView(False, "no status file (the daemon is not running, or never ran here)", None)
    except PermissionError:
        return DaemonView(False, f"cannot read {path}: permission denied (run as root)", None)
    except (OSError, ValueError) as exc:
        return DaemonView(False, f"cannot read {path}: {exc}", None)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        return DaemonView(False, f"{path} is not a status file this version reads", None)
    now = time.time() if now is None else now
    pid, start = doc.get("pid"), doc.get("process_start")
    interval = float(doc.get("interval", 5.0))
    age = now - float(doc.get("written_at", 0.0))
    if not isinstance(pid, int) or not isinstance(start, float) or abs(process_start(pid) - start) > 0.05:
        return DaemonView(False, f"its process {pid} is gone (last status {age:.0f} s ago)", doc)
    if age > STALE_INTERVALS * interval:
        return DaemonView(False, f"process {pid} has not written its status for {age:.0f} s (hung?)", doc)
    return DaemonView(True, "", doc)

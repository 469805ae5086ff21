"""Host facts for Hello, and a stable host id."""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import uuid
from pathlib import Path

from umbra import codec
from umbra.private import write_private
from umbra.v1 import agent_pb2 as apb

_MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))
HOST_ID_FILE = "host_id"  # in the state directory: a random id kept where no machine id exists


def host_id(configured: str, state_dir: Path) -> str:
    """The configured id; else one derived from the OS machine id; else a random one, kept.

    The machine id is hashed, not sent: it is a secret-ish identifier on some systems.
    """
    if configured:
        return configured
    for candidate in _MACHINE_ID_FILES:
        try:
            machine_id = candidate.read_text().strip()
        except OSError:
            continue
        if machine_id:
            return "h-" + hashlib.sha256(f"umbra:{machine_id}".encode()).hexdigest()[:20]
    kept = state_dir / HOST_ID_FILE
    try:
        return kept.read_text().strip()
    except OSError:
        value = "h-" + uuid.uuid4().hex[:20]
        write_private(kept, (value + "\n").encode())
        return value


def host_facts(host: str) -> apb.HostFacts:
    import psutil  # only the daemon needs it; `scan` and `status` start faster without

    return apb.HostFacts(
        host_id=host,
        hostname=socket.gethostname(),
        os=platform.system(),
        os_release=platform.release(),
        architecture=platform.machine(),
        cpu_count=os.cpu_count() or 0,
        memory_bytes=psutil.virtual_memory().total,
        boot_time=codec.timestamp(psutil.boot_time()),
    )

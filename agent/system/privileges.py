"""Which of the kernel's capabilities this process holds (Linux), so a sensor asks for what it
needs rather than for root: the service runs as an unprivileged dynamic user with only
CAP_NET_RAW, CAP_NET_ADMIN, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (agent/service's unit)."""

from __future__ import annotations

import os
from pathlib import Path

# <linux/capability.h>
CAP_DAC_READ_SEARCH = 2
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
CAP_SYS_PTRACE = 19

_STATUS = Path("/proc/self/status")


def has_capability(cap: int) -> bool:
    """True when `cap` is in this process's effective set; elsewhere than Linux, when root."""
    try:
        for line in _STATUS.read_text(encoding="ascii", errors="replace").splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split(":", 1)[1].strip(), 16) >> cap & 1)
    except (OSError, ValueError):
        pass
    return hasattr(os, "geteuid") and os.geteuid() == 0

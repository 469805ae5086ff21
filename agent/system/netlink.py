"""Opening a netlink socket: the one place that knows a platform may have none, and that a
socket whose set-up the kernel refuses is closed again.

The process connector (exec events) and sock_diag (sockets by address, their destroy events)
each open their own; a failure becomes a reason the caller shows in its status.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

__all__ = ["open_netlink"]


def open_netlink(
    protocol: int, unavailable: str, setup: Callable[[socket.socket], object], refused: str
) -> socket.socket | str:
    """A datagram netlink socket of this protocol family, made ready by `setup`, or why there is
    none: "no netlink on this platform", `unavailable` with the error, or `refused` with "{}"
    replaced by the error `setup` raised."""
    if not hasattr(socket, "AF_NETLINK"):
        return "no netlink on this platform"
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, protocol)
    except OSError as exc:
        return f"{unavailable}: {exc.strerror or exc}"
    try:
        setup(sock)
    except OSError as exc:
        sock.close()
        return refused.replace("{}", str(exc.strerror or exc))
    return sock

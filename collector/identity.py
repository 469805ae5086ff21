"""Who is on the other end of a stream: the one place the collector decides a host's identity.

With mutual TLS (the default) the identity is the client certificate's common name, which the
collector's CA signed at enrollment; the body of a message is never trusted, and a stream with
no client certificate is refused. In the explicit insecure development mode (`serve --insecure`)
the collector takes the host id the Hello claims, but only from loopback peers unless the
operator also allows remote ones.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from umbra.v1 import agent_pb2

from .storage.base import InvalidBatch, validate_host_id


class IdentityError(Exception):
    """The stream cannot be tied to a host; the server answers UNAUTHENTICATED."""


def certificate_common_name(auth_context: Mapping[str, Iterable[bytes]]) -> str | None:
    """The client certificate's CN from a gRPC auth context, or None on an insecure channel.

    Only meaningful when the server was built with `require_client_auth=True`, so that gRPC
    has verified the certificate chain before the RPC starts.
    """
    values = auth_context.get("x509_common_name") or []
    for raw in values:
        name = raw.decode("utf-8", "replace").strip()
        if name:
            return name
    return None


def is_loopback_peer(peer: str) -> bool:
    """True for gRPC peer strings of this machine: "ipv4:127.0.0.1:5", "ipv6:[::1]:5", "unix:..."."""
    kind, _, rest = peer.partition(":")
    if kind == "unix":
        return True
    if kind == "ipv4":
        host = rest.rsplit(":", 1)[0]
    elif kind == "ipv6":
        host = rest.rsplit(":", 1)[0].strip("[]").split("%", 1)[0]
    else:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def peer_host_id(
    context: Any,
    hello: agent_pb2.Hello,
    *,
    allow_insecure_remote: bool = False,
    require_certificate: bool = False,
) -> str:
    """The host id for a stream: certificate CN if there is one, else the Hello's claim (dev mode).

    `context` is the RPC's `grpc.aio.ServicerContext` (anything with `auth_context()` and `peer()`).
    With `require_certificate` (a TLS collector) there is no fallback to the claim.
    Raises IdentityError when no acceptable identity exists.
    """
    common_name = certificate_common_name(context.auth_context())
    if common_name is not None:
        host_id = common_name
    elif require_certificate:
        raise IdentityError(
            "no client certificate: enroll first (umbra-agent enroll), then stream on the mutual-TLS port"
        )
    else:
        peer = str(context.peer())
        if not allow_insecure_remote and not is_loopback_peer(peer):
            raise IdentityError(
                f"peer {peer} has no client certificate; without mTLS only loopback agents are accepted "
                "(start the collector with --allow-insecure-remote for a development fleet)"
            )
        host_id = hello.host.host_id.strip()
        if not host_id:
            raise IdentityError("Hello carries no host.host_id and the channel no client certificate")
    try:
        validate_host_id(host_id)
    except InvalidBatch as exc:
        raise IdentityError(str(exc)) from None
    return host_id

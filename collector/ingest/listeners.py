"""Listeners: the gRPC server's options, TLS credentials, and binding the stream and enrollment ports.

With TLS (the default) the collector listens twice on one gRPC server: the stream port requires a
client certificate signed by the collector's CA (mutual TLS), and the enrollment port is
server-authenticated TLS only, where an agent trades a token for its certificate. Python's gRPC
cannot ask for an optional client certificate, hence two ports. Without TLS (`--insecure`,
development) one plain port serves everything.
"""

from __future__ import annotations

import datetime as dt
import socket
from dataclasses import dataclass

import grpc
from grpc import aio

from ..addr import parse_addr
from ..pki import ServerIdentity
from .limits import DEFAULT_AGENT_CERT_VALIDITY, MAX_MESSAGE_BYTES, MIN_CLIENT_PING_INTERVAL_MS


class BindError(OSError):
    """A listener could not bind its address."""


def server_options(
    max_message_bytes: int = MAX_MESSAGE_BYTES, reuse_port: bool = False
) -> list[tuple[str, int]]:
    """gRPC server options; the agent's channel options (agent/delivery/stream.py) agree with these.

    `reuse_port`: several collector processes of one `serve --workers N` share the ports.
    """
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_metadata_size", 16 * 1024),
        # One agent needs one stream (plus a renewal now and then) per connection.
        ("grpc.max_concurrent_streams", 16),
        # No window growth by bandwidth probing: each agent's stream keeps HTTP/2's 64 KiB window,
        # so a thousand agents sending at once cannot park gigabytes in the transport's buffers
        # (an agent's few findings a second need no more).
        ("grpc.http2.bdp_probe", 0),
        # Ping idle agents so half-open connections (laptop asleep, NAT dropped) are noticed.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
        ("grpc.http2.max_pings_without_data", 0),
        # Without this, Linux lets a second collector bind the same port and steal half the agents;
        # `serve --workers N` sets it on purpose, so the kernel spreads connections over its processes.
        ("grpc.so_reuseport", int(reuse_port)),
    ]


@dataclass(frozen=True)
class ServerTLS:
    """Mutual TLS: the PKI, the enrollment listener, and what the CA issues to agents."""

    identity: ServerIdentity
    enroll_addr: str
    agent_validity: dt.timedelta = DEFAULT_AGENT_CERT_VALIDITY
    #: What EnrollResponse.stream_address says; None: ":<stream port>" (the host the agent enrolled at).
    advertise: str | None = None


def check_bindable(host: str, addr: str) -> None:
    """Fail with one clear line when a port is taken, before gRPC core logs its own noise."""
    _, port = parse_addr(addr)
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"cannot listen for gRPC on {addr}: {exc.strerror}") from None
    for family, kind, proto, _, sockaddr in infos[:1]:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                raise BindError(f"cannot listen for gRPC on {addr}: {exc.strerror or exc}") from None


def bind(server: aio.Server, grpc_addr: str, tls: ServerTLS | None, *, probe: bool) -> tuple[int, int]:
    """Add the stream port (and, with TLS, the enrollment port) to `server`: (stream port, enroll port).

    `probe`: check first that the ports are free, for one clear error line (not with shared ports,
    which the other workers of `serve --workers N` already hold). Raises BindError.
    """
    if probe:
        check_bindable(parse_addr(grpc_addr)[0], grpc_addr)
        if tls is not None:
            check_bindable(parse_addr(tls.enroll_addr)[0], tls.enroll_addr)
    try:
        if tls is None:
            port = server.add_insecure_port(grpc_addr)
        else:
            pair = [(tls.identity.key_pem, tls.identity.chain_pem)]
            port = server.add_secure_port(
                grpc_addr,
                grpc.ssl_server_credentials(
                    pair, root_certificates=tls.identity.ca_pem, require_client_auth=True
                ),
            )
    except RuntimeError as exc:
        raise BindError(f"cannot listen for gRPC on {grpc_addr}: {exc}") from None
    if port == 0:
        raise BindError(f"cannot listen for gRPC on {grpc_addr}")
    if tls is None:
        return port, 0
    try:
        eport = server.add_secure_port(
            tls.enroll_addr, grpc.ssl_server_credentials([(tls.identity.key_pem, tls.identity.chain_pem)])
        )
    except RuntimeError as exc:
        raise BindError(f"cannot listen for enrollment on {tls.enroll_addr}: {exc}") from None
    if eport == 0:
        raise BindError(f"cannot listen for enrollment on {tls.enroll_addr}")
    return port, eport

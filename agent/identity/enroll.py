"""`umbra-agent enroll`: trade a token for a client certificate; and renew it before it expires.

Enrollment, step by step:
1. The token is `<secret>.<pin>`; the pin is the SHA-256 of the collector's CA certificate.
2. The agent opens a TLS connection to the enrollment port without trusting anything yet, reads
   the certificate chain the collector presents, and keeps the certificate whose fingerprint is
   the pin: that is the CA, checked against something the operator gave it, not against the
   network (kubeadm's discovery-token-ca-cert-hash).
3. Over gRPC, now verifying the collector with that CA, it sends the token and a CSR for a key
   it generated itself, and gets its certificate back, whose common name is its host id.
4. It checks the certificate (its key, that CA, that host id) and saves everything in one file.

The host id is derived from the key (collector/pki.py), so an agent enrolling again keeps the key
of its saved identity and with it its host id: re-enrolling a machine (a new token, a moved
collector) does not make it a new host. `new_identity=True` (enroll --new-identity) starts over
with a new key, hence a new host id, for a machine whose old identity was revoked or removed.

Renewal: when a third of the certificate's lifetime is left, the daemon sends a new CSR over
mutual TLS with the current certificate (no token), and swaps the identity file atomically.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from umbra.v1 import agent_pb2 as apb
from umbra.v1 import agent_pb2_grpc as apb_grpc

if TYPE_CHECKING:  # cryptography is imported where enrollment needs it (see credentials.py)
    from cryptography.hazmat.primitives.asymmetric import ec

from agent.identity.credentials import (
    TLS_CHANNEL_OPTIONS,
    Identity,
    IdentityError,
    check_issued,
    csr_pem,
    key_pem,
    load_identity,
    new_key,
    save_identity,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0


class EnrollError(Exception):
    """Enrollment or renewal failed; the message is one line for the operator."""


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise EnrollError(f"bad collector address {address!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def stream_address(answer: str, enrolled_at: str) -> str:
    """EnrollResponse.stream_address -> HOST:PORT (":PORT" means the host we enrolled at)."""
    if not answer:
        return enrolled_at
    if answer.startswith(":"):
        host = enrolled_at.rpartition(":")[0]
        return f"{host}{answer}"
    return answer


def _pin(der: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def _unverified_chain(tls: ssl.SSLSocket) -> list[bytes]:
    """DER certificates the peer presented. Python 3.13 has SSLSocket.get_unverified_chain();
    3.10-3.12 have the same method on the underlying _ssl object only."""
    fn: Any = getattr(tls, "get_unverified_chain", None) or getattr(
        getattr(tls, "_sslobj", None), "get_unverified_chain", None
    )
    if fn is None:
        der = tls.getpeercert(binary_form=True)
        return [der] if der else []
    return [c if isinstance(c, bytes) else c.public_bytes(_ENCODING_DER) for c in fn() or []]


_ENCODING_DER = 2  # _ssl.ENCODING_DER


def fetch_pinned_ca(address: str, pin: str, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """The CA certificate (PEM) in the chain the collector presents whose fingerprint is `pin`."""
    host, port = split_address(address)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # nothing is trusted from here until the pin matches
    context.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname="umbra-collector") as tls,
        ):
            ders = _unverified_chain(tls)
            wants_certificate = _asks_for_client_certificate(tls, min(timeout, 5.0))
    except ssl.SSLError as exc:  # TLS 1.2 ends the handshake itself for want of a certificate
        if _asks_client_certificate(str(exc)):
            raise _stream_port(address) from None
        raise EnrollError(f"TLS with the collector at {address} failed: {exc}") from None
    except OSError as exc:
        raise EnrollError(
            f"cannot reach the collector at {address} ({getattr(exc, 'strerror', None) or exc}): check that "
            "`umbra-collector serve` runs there and that this host may connect to its enrollment port "
            "(serve --enroll, by default the stream port + 1)"
        ) from None
    if wants_certificate:
        raise _stream_port(address)
    from cryptography import x509  # enrollment only: see credentials.py
    from cryptography.hazmat.primitives import serialization

    for der in ders:
        if _pin(der) == pin:
            cert = x509.load_der_x509_certificate(der)
            return cert.public_bytes(serialization.Encoding.PEM)
    raise EnrollError(
        f"the collector at {address} does not present the CA this token was made for: check that the "
        "token was copied whole (its part after the '.' names the CA) and that the address is the "
        "collector that minted it; else a machine in the middle answered"
    )


def _asks_for_client_certificate(tls: ssl.SSLSocket, timeout: float) -> bool:
    """Whether the server ends the connection for want of a client certificate: the stream port
    does, right after a TLS 1.3 handshake (with an alert, or by closing), where the enrollment port
    sends its HTTP/2 settings."""
    tls.settimeout(timeout)
    try:
        return tls.recv(1) == b""
    except ssl.SSLError as exc:
        return _asks_client_certificate(str(exc))
    except OSError:
        return False


def _stream_port(address: str) -> EnrollError:
    host, port = split_address(address)
    return EnrollError(
        f"{address} is the collector's stream port (it asks for a client certificate); enroll at its "
        f"enrollment port, by default the stream port + 1: --collector {_join(host, port + 1)}"
    )


def _rpc_error(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return f"{code.name if code else 'ERROR'}: {details}"


def _enroll_refused(address: str, exc: grpc.RpcError) -> EnrollError:
    """The refusal as one line that names the fix: the commonest mistakes have their own."""
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else "") or ""
    if code == grpc.StatusCode.UNAVAILABLE and _asks_client_certificate(details):
        return _stream_port(address)
    if code == grpc.StatusCode.UNAVAILABLE:
        return EnrollError(
            f"enrollment at {address} failed ({_rpc_error(exc)}): check that this is the collector's "
            "enrollment port (serve --enroll, by default the stream port + 1) and that it runs"
        )
    if code == grpc.StatusCode.UNAUTHENTICATED and "token" in details:
        return EnrollError(
            f"the collector at {address} refused this token (UNAUTHENTICATED: unknown, expired or already "
            "used): check that it was copied whole, or mint a new one with `umbra-collector token create`"
        )
    if code == grpc.StatusCode.PERMISSION_DENIED and "revoked" in details:
        return EnrollError(
            f"{details} at {address}: enroll again as a new host with --new-identity "
            "(after `umbra-collector agent remove` if the old one should go)"
        )
    return EnrollError(f"enrollment refused by {address}: {_rpc_error(exc)}")


def _asks_client_certificate(details: str) -> bool:
    """gRPC's words for a TLS handshake the server ended for want of a client certificate."""
    text = details.lower()
    return any(w in text for w in ("certificate required", "certificate_required", "handshake failure"))


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _kept_key(state_dir: Path) -> ec.EllipticCurvePrivateKey | None:
    """The key of the identity saved in `state_dir`, if there is a usable one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        identity = load_identity(state_dir)
    except IdentityError:
        return None
    if identity is None:
        return None
    try:
        key = serialization.load_pem_private_key(identity.key_pem, password=None)
    except (ValueError, TypeError):
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def enroll(
    address: str,
    token: str,
    state_dir: Path,
    *,
    hostname: str | None = None,
    ca_pem: bytes | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    new_identity: bool = False,
) -> Identity:
    """Enroll with the collector's enrollment port; save and return the identity (the key of a
    saved one is kept, and so its host id, unless `new_identity`)."""
    secret, _, pin = token.strip().partition(".")
    if not secret:
        raise EnrollError("empty token")
    if ca_pem is None:
        if not pin:
            raise EnrollError("this token carries no CA fingerprint; give the collector's CA with --ca-file")
        ca_pem = fetch_pinned_ca(address, pin, timeout)
    host = socket.gethostname() if hostname is None else hostname
    key = (None if new_identity else _kept_key(state_dir)) or new_key()
    request = apb.EnrollRequest(token=token.strip(), csr_pem=csr_pem(key, host), hostname=host)
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    try:
        with grpc.secure_channel(address, credentials, options=TLS_CHANNEL_OPTIONS) as channel:
            response = apb_grpc.EnrollServiceStub(channel).Enroll(request, timeout=timeout)
    except grpc.RpcError as exc:
        raise _enroll_refused(address, exc) from None
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if response.ca_certificate_pem and _pin(
        x509.load_pem_x509_certificate(response.ca_certificate_pem).public_bytes(serialization.Encoding.DER)
    ) != _pin(x509.load_pem_x509_certificate(ca_pem).public_bytes(serialization.Encoding.DER)):
        raise EnrollError("the collector answered with a different CA than the one it presented")
    try:
        check_issued(response.certificate_pem, key, ca_pem, response.host_id)
    except IdentityError as exc:
        raise EnrollError(str(exc)) from None
    return save_identity(
        state_dir,
        response.host_id,
        stream_address(response.stream_address, address),
        key_pem(key),
        response.certificate_pem,
        ca_pem,
    )


def renew(
    state_dir: Path, identity: Identity, address: str | None = None, timeout: float = DEFAULT_TIMEOUT
) -> Identity:
    """A new key and certificate for the same host id, asked over mutual TLS with the current one."""
    target = address or identity.collector
    key = new_key()
    request = apb.EnrollRequest(csr_pem=csr_pem(key, socket.gethostname()), hostname=socket.gethostname())
    try:
        with grpc.secure_channel(target, identity.credentials(), options=TLS_CHANNEL_OPTIONS) as channel:
            response = apb_grpc.EnrollServiceStub(channel).Enroll(request, timeout=timeout)
    except grpc.RpcError as exc:
        raise EnrollError(f"renewal refused by {target}: {_rpc_error(exc)}") from None
    if response.host_id != identity.host_id:
        raise EnrollError(f"renewal answered for host {response.host_id!r}, not {identity.host_id!r}")
    try:
        check_issued(response.certificate_pem, key, identity.ca_pem, identity.host_id)
    except IdentityError as exc:
        raise EnrollError(str(exc)) from None
    return save_identity(
        state_dir,
        identity.host_id,
        identity.collector,
        key_pem(key),
        response.certificate_pem,
        identity.ca_pem,
    )


async def keep_renewed(
    state_dir: Path,
    stop: asyncio.Event,
    address: Callable[[], str],
    *,
    on_renewed: Callable[[Identity], None] | None = None,
    retry: float = 60.0,
) -> None:
    """Renew the certificate whenever it is due, until `stop`; failures are retried every `retry` s."""
    while not stop.is_set():
        try:
            identity = await asyncio.to_thread(load_identity, state_dir)
        except IdentityError as exc:
            log.error("identity: %s", exc)
            identity = None
        if identity is None:
            return
        wait = identity.renew_at() - time.time()
        if wait <= 0:
            try:
                identity = await asyncio.to_thread(renew, state_dir, identity, address())
            except (EnrollError, OSError) as exc:
                log.warning("certificate renewal failed (retrying in %.0f s): %s", retry, exc)
                wait = retry
            else:
                log.info(
                    "certificate renewed: host %s, valid until %s",
                    identity.host_id,
                    time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(identity.not_after)),
                )
                if on_renewed is not None:
                    on_renewed(identity)
                # Never renew twice in a row at once (the wait below is at least a second).
                wait = identity.renew_at() - time.time()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=min(max(wait, 1.0), 3600.0))

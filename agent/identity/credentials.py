"""The agent's identity for mutual TLS: its own key, the certificate the collector's CA signed for
it, that CA, the host id the certificate carries and the collector to stream to.

All of it is one file, `<state_dir>/identity.json` (mode 0600), replaced atomically, so a crash
during renewal leaves either the old identity or the new one, never a key that does not match its
certificate. The key is generated here (EC P-256) and never leaves the host: the collector only
ever sees a certificate signing request.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from umbra.private import write_private

# cryptography (about 8 MiB resident) is imported by the functions that make keys and read
# certificates, which run at enrollment and renewal; the daemon's steady state never needs it.
if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

IDENTITY_FILE = "identity.json"
#: The name every collector certificate carries (collector/pki.py); agents check it whatever address
#: they dial, so a collector moved behind a load balancer needs no new certificate.
SERVER_NAME = "umbra-collector"
#: Renew when less than this fraction of the certificate's lifetime is left.
RENEW_FRACTION = 1 / 3
TLS_CHANNEL_OPTIONS: list[tuple[str, str]] = [("grpc.ssl_target_name_override", SERVER_NAME)]


class IdentityError(Exception):
    """The identity file exists but cannot be used (one line for the operator)."""


@dataclass(frozen=True)
class Identity:
    host_id: str
    collector: str  # the stream address (mutual TLS)
    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes
    not_before: float
    not_after: float

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem, private_key=self.key_pem, certificate_chain=self.cert_pem
        )

    def renew_at(self) -> float:
        """When renewal is due: once less than RENEW_FRACTION of the lifetime is left."""
        return self.not_after - (self.not_after - self.not_before) * RENEW_FRACTION


def identity_path(state_dir: Path) -> Path:
    return state_dir / IDENTITY_FILE


def new_key() -> ec.EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def csr_pem(key: ec.EllipticCurvePrivateKey, hostname: str) -> bytes:
    """A CSR proving the key. The subject is a hint only: the collector assigns the host id."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (hostname or "umbra-agent")[:64])])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def check_issued(
    cert_pem: bytes, key: ec.EllipticCurvePrivateKey, ca_pem: bytes, host_id: str
) -> x509.Certificate:
    """The collector's answer must be a certificate for our key, from that CA, naming `host_id`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        ca = x509.load_pem_x509_certificate(ca_pem)
    except ValueError as exc:
        raise IdentityError(f"the collector sent an unreadable certificate: {exc}") from None
    if cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise IdentityError("the collector's certificate is not for this agent's key")
    try:
        cert.verify_directly_issued_by(ca)
    except Exception as exc:
        raise IdentityError(f"the collector's certificate is not signed by its CA: {exc}") from None
    names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if names != [host_id]:
        raise IdentityError(f"the certificate names {names}, not host {host_id!r}")
    return cert


def save_identity(
    state_dir: Path, host_id: str, collector: str, key: bytes, cert: bytes, ca: bytes
) -> Identity:
    not_before, not_after = _validity(cert)
    doc = {
        "host_id": host_id,
        "collector": collector,
        "key_pem": key.decode(),
        "cert_pem": cert.decode(),
        "ca_pem": ca.decode(),
        "not_before": not_before,  # kept so that loading needs no certificate parser
        "not_after": not_after,
        "saved_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    write_private(identity_path(state_dir), json.dumps(doc, indent=1).encode())
    return Identity(
        host_id,
        collector,
        key,
        cert,
        ca,
        not_before,
        not_after,
    )


def _validity(cert_pem: bytes) -> tuple[float, float]:
    """The certificate's notBefore and notAfter (POSIX seconds)."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()


def load_identity(state_dir: Path) -> Identity | None:
    """The saved identity, or None when this agent never enrolled. Raises IdentityError if broken."""
    path = identity_path(state_dir)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IdentityError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise IdentityError(f"{path} is damaged ({exc}); enroll again") from None
    try:
        cert_pem = doc["cert_pem"].encode()
        if isinstance(doc.get("not_before"), float) and isinstance(doc.get("not_after"), float):
            not_before, not_after = doc["not_before"], doc["not_after"]
        else:  # an identity saved before the validity was kept beside the certificate
            not_before, not_after = _validity(cert_pem)
        return Identity(
            host_id=str(doc["host_id"]),
            collector=str(doc["collector"]),
            key_pem=doc["key_pem"].encode(),
            cert_pem=cert_pem,
            ca_pem=doc["ca_pem"].encode(),
            not_before=not_before,
            not_after=not_after,
        )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise IdentityError(f"{path} is damaged ({type(exc).__name__}: {exc}); enroll again") from None


def credentials_loader(state_dir: Path) -> Callable[[], grpc.ChannelCredentials | None]:
    """For the transport: the identity's credentials, read again at every connect (after a renewal
    the new certificate is used), or None when the agent is not enrolled."""

    def load() -> grpc.ChannelCredentials | None:
        identity = load_identity(state_dir)
        return identity.credentials() if identity is not None else None

    return load


DEFAULT_COLLECTOR_ADDRESS = "127.0.0.1:50051"


def collector_address(configured: str, identity: Identity | None) -> str:
    """`[collector] address` when set; else the collector this agent enrolled with; else loopback."""
    if configured:
        return configured
    return identity.collector if identity is not None else DEFAULT_COLLECTOR_ADDRESS

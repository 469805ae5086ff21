"""The collector's own certificate authority, its TLS server certificate, and enrollment tokens.

Files in the PKI directory (created on first start, private key files mode 0600):

    ca.crt, ca.key          the CA (EC P-256, 10 years); an operator may supply their own instead
    server.crt, server.key  the collector's TLS certificate, signed by the CA, reissued when the
                            CA changes or it nears expiry; the file holds the chain (server + CA)

Agents' certificates carry the host id as common name and nothing an agent chose: the collector
derives the id from the agent's public key (``h-`` + 20 hex of SHA-256 over the key), the way
Velociraptor derives client ids, so a token holder cannot pick another host's name and the CSR's
subject is ignored. Every certificate the CA issues to a server has the DNS name
``umbra-collector``; agents check that name (gRPC's target-name override), whatever address
they dial, and no agent certificate can carry it (host ids start with ``h-``).

Tokens: ``<secret>.<pin>``. The secret is 32 random bytes (base64url); the collector stores only
its SHA-256. The pin is the SHA-256 of the CA certificate (base64url), so `umbra-agent enroll`
can check the collector it reached before it trusts anything it says (kubeadm's discovery hash).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import ipaddress
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from umbra.private import make_private_dir, write_private

# The files of a PKI directory (umbra-pki/ beside the SQLite file by default).
CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "server.crt", "server.key"

#: The DNS name every collector server certificate carries and every agent verifies.
SERVER_NAME = "umbra-collector"
CA_COMMON_NAME = "Umbra collector CA"
CA_VALIDITY = dt.timedelta(days=3650)
SERVER_VALIDITY = dt.timedelta(days=397)
DEFAULT_AGENT_VALIDITY = dt.timedelta(days=30)
#: Reissue the server certificate when less than this is left.
SERVER_RENEW_BEFORE = dt.timedelta(days=30)
#: Largest CSR accepted (a P-256 CSR is ~500 bytes, RSA-4096 ~1.7 KB).
MAX_CSR_BYTES = 16 * 1024
_BACKDATE = dt.timedelta(minutes=5)  # tolerate clocks a little behind


class PKIError(Exception):
    """The PKI directory or an operator-supplied CA cannot be used."""


class CSRError(ValueError):
    """A certificate signing request that cannot be signed (INVALID_ARGUMENT)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def certificate_pin(cert_pem: bytes) -> str:
    """base64url(SHA-256(DER)) of a PEM certificate: what a token pins."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return _b64(cert.fingerprint(hashes.SHA256()))


def host_id_for_key(public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> str:
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "h-" + hashlib.sha256(spki).hexdigest()[:20]


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


# ---- tokens


@dataclass(frozen=True)
class Token:
    secret: str
    pin: str

    @property
    def text(self) -> str:
        return f"{self.secret}.{self.pin}"


def new_token_secret() -> str:
    # "T" first: base64url may start with "-", which a command line would take for an option.
    return "T" + _b64(secrets.token_bytes(32))


def token_hash(secret: str) -> str:
    """What the store keeps: the secret is high-entropy, so a plain SHA-256 is enough."""
    return hashlib.sha256(secret.encode()).hexdigest()


def split_token(text: str) -> tuple[str, str]:
    """``secret.pin`` -> (secret, pin); a bare secret has pin ""."""
    secret, _, pin = text.strip().partition(".")
    return secret, pin


# ---- the CA


@dataclass(frozen=True)
class IssuedCertificate:
    host_id: str
    certificate_pem: bytes
    serial: int
    not_after: float  # Unix seconds


class CertificateAuthority:
    """Signs agents' CSRs and the collector's server certificate."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
        self.cert = cert
        self.key = key
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        self.pin = certificate_pin(self.cert_pem)

    @classmethod
    def create(cls) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME),
                x509.NameAttribute(NameOID.SERIAL_NUMBER, secrets.token_hex(8)),
            ]
        )
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> CertificateAuthority:
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except OSError as exc:
            raise PKIError(f"cannot read CA: {exc.strerror or exc}: {exc.filename}") from None
        except (ValueError, TypeError) as exc:
            raise PKIError(f"cannot load CA from {cert_path} / {key_path}: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise PKIError(f"CA key {key_path}: only EC and RSA keys are supported")
        if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
            raise PKIError(f"CA key {key_path} does not belong to certificate {cert_path}")
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise PKIError(f"{cert_path} is not a CA certificate (basicConstraints CA:TRUE missing)")
        return cls(cert, key)

    def _issue(
        self,
        subject: x509.Name,
        public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
        validity: dt.timedelta,
        usage: x509.ObjectIdentifier,
        san: list[x509.GeneralName] | None = None,
    ) -> x509.Certificate:
        now = _now()
        not_after = min(now + validity, self.cert.not_valid_after_utc)
        # Backdated for clocks a little behind, but by a tenth of the validity at most, so an agent
        # renewing at a third of the lifetime left does not renew a short-lived certificate at once.
        backdate = min(_BACKDATE, validity / 10)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - backdate)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def issue_server(self, key: ec.EllipticCurvePrivateKey, extra_names: list[str]) -> x509.Certificate:
        names: list[x509.GeneralName] = [x509.DNSName(SERVER_NAME), x509.DNSName("localhost")]
        seen = {SERVER_NAME, "localhost"}
        for raw in [socket.gethostname(), "127.0.0.1", "::1", *extra_names]:
            if not raw or raw in seen:
                continue
            seen.add(raw)
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(raw)))
            except ValueError:
                names.append(x509.DNSName(raw))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
        return self._issue(subject, key.public_key(), SERVER_VALIDITY, ExtendedKeyUsageOID.SERVER_AUTH, names)

    def sign_agent_csr(
        self, csr_pem: bytes, validity: dt.timedelta, host_id: str | None = None
    ) -> IssuedCertificate:
        """Sign an agent's CSR. The CN is `host_id` (renewal) or derived from the CSR's key.

        Raises CSRError for anything that is not a well-formed, self-signed request for an
        EC (P-256/P-384) or RSA (>= 2048 bits) key.
        """
        if not csr_pem or len(csr_pem) > MAX_CSR_BYTES:
            raise CSRError(f"CSR missing or larger than {MAX_CSR_BYTES} bytes")
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError:
            raise CSRError("CSR is not a PEM PKCS#10 request") from None
        if not csr.is_signature_valid:
            raise CSRError("CSR signature does not verify (the request must prove its key)")
        try:
            public_key = csr.public_key()
        except (ValueError, TypeError) as exc:  # unsupported algorithm
            raise CSRError(f"CSR key not supported: {exc}") from None
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            if public_key.curve.name not in ("secp256r1", "secp384r1"):
                raise CSRError(f"CSR key curve {public_key.curve.name} not supported (P-256 or P-384)")
        elif isinstance(public_key, rsa.RSAPublicKey):
            if public_key.key_size < 2048:
                raise CSRError("CSR RSA key shorter than 2048 bits")
        else:
            raise CSRError("CSR key must be EC (P-256/P-384) or RSA")
        assigned = host_id or host_id_for_key(public_key)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, assigned)])
        cert = self._issue(subject, public_key, validity, ExtendedKeyUsageOID.CLIENT_AUTH)
        return IssuedCertificate(
            host_id=assigned,
            certificate_pem=cert.public_bytes(serialization.Encoding.PEM),
            serial=cert.serial_number,
            not_after=cert.not_valid_after_utc.timestamp(),
        )

    def issued(self, cert: x509.Certificate) -> bool:
        """True when `cert` was signed by this CA's key."""
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True


@dataclass(frozen=True)
class ServerIdentity:
    """What the gRPC server needs: its key, its chain (server then CA), and the CA to verify agents."""

    ca: CertificateAuthority
    key_pem: bytes
    chain_pem: bytes

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert_pem


def private_paths(pki_dir: Path) -> list[Path]:
    """The PKI directory and the files the collector keeps in it (all its owner's alone)."""
    return [pki_dir, *(pki_dir / name for name in (CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY))]


def load_or_create_ca(
    pki_dir: Path, *, ca_cert: Path | None = None, ca_key: Path | None = None
) -> CertificateAuthority:
    """The operator's CA when given, else the one in `pki_dir`, created there on first use."""
    try:
        make_private_dir(pki_dir)
    except OSError as exc:
        raise PKIError(f"cannot create PKI directory {pki_dir}: {exc.strerror or exc}") from None
    if (ca_cert is None) != (ca_key is None):
        raise PKIError("give both --ca-cert and --ca-key, or neither")
    if ca_cert is not None and ca_key is not None:
        return CertificateAuthority.load(ca_cert, ca_key)
    cert_path, key_path = pki_dir / CA_CERT, pki_dir / CA_KEY
    if cert_path.exists() or key_path.exists():
        return CertificateAuthority.load(cert_path, key_path)
    ca = CertificateAuthority.create()
    try:
        # Certificates too: they are public by nature, but the directory is the CA's, 0600 throughout.
        write_private(key_path, _key_pem(ca.key))  # type: ignore[arg-type]
        write_private(cert_path, ca.cert_pem)
    except OSError as exc:
        raise PKIError(f"cannot write CA to {pki_dir}: {exc.strerror or exc}") from None
    return ca


def load_or_create(
    pki_dir: Path,
    *,
    ca_cert: Path | None = None,
    ca_key: Path | None = None,
    server_names: list[str] | None = None,
) -> ServerIdentity:
    """The collector's PKI: the CA (the operator's, or created once in `pki_dir`) and a server
    certificate it signed (reissued when missing, expiring, signed by another CA or lacking a
    requested name). Raises PKIError."""
    names = [n for n in (server_names or []) if n]
    ca = load_or_create_ca(pki_dir, ca_cert=ca_cert, ca_key=ca_key)

    server_crt, server_key = pki_dir / SERVER_CERT, pki_dir / SERVER_KEY
    reuse = False
    with contextlib.suppress(OSError, ValueError):
        chain = x509.load_pem_x509_certificates(server_crt.read_bytes())
        key = serialization.load_pem_private_key(server_key.read_bytes(), password=None)
        leaf = chain[0]
        dns = set(
            leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
                x509.DNSName
            )
        )
        ips = {
            str(ip)
            for ip in leaf.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            ).value.get_values_for_type(x509.IPAddress)
        }
        reuse = (
            ca.issued(leaf)
            and isinstance(key, ec.EllipticCurvePrivateKey)
            and key.public_key().public_numbers() == leaf.public_key().public_numbers()  # type: ignore[union-attr]
            and leaf.not_valid_after_utc - _now() > SERVER_RENEW_BEFORE
            and all(n in dns or n in ips for n in names)
        )
    if not reuse:
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = ca.issue_server(key, names)
        try:
            write_private(server_key, _key_pem(key))
            write_private(server_crt, leaf.public_bytes(serialization.Encoding.PEM) + ca.cert_pem)
        except OSError as exc:
            raise PKIError(f"cannot write server certificate to {pki_dir}: {exc.strerror or exc}") from None
    return ServerIdentity(ca=ca, key_pem=server_key.read_bytes(), chain_pem=server_crt.read_bytes())

"""Console credentials, stdlib only (the CLI uses them without the web stack).

Passwords: scrypt (hashlib, OpenSSL's) with a random 16-byte salt, kept as
``scrypt$N$r$p$salt$hash`` so the cost can be raised later and old hashes still verify. N=2^15,
r=8, p=3 is one of OWASP's recommended scrypt settings (32 MiB, a few hundred ms here).
API keys and session ids are 32 random bytes: guessing one is hopeless, so a plain SHA-256 is
what the store keeps (as for enrollment tokens); the database alone logs nobody in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 3
_SCRYPT_MAXMEM = 64 * 1024 * 1024
KEY_PREFIX = "umbra_"
MIN_PASSWORD = 10
MAX_PASSWORD = 1024


class WeakPassword(ValueError):
    """A password the console refuses to keep (too short or too long)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise WeakPassword(f"password too short: at least {MIN_PASSWORD} characters")
    if len(password.encode()) > MAX_PASSWORD:
        raise WeakPassword(f"password too long: at most {MAX_PASSWORD} bytes")


def hash_password(password: str) -> str:
    check_password(password)
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=_SCRYPT_MAXMEM, dklen=32
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of `password` against a stored ``scrypt$...`` string."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt" or len(password.encode()) > MAX_PASSWORD:
            return False
        want = _unb64(digest)
        got = hashlib.scrypt(
            password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p),
            maxmem=_SCRYPT_MAXMEM, dklen=len(want),
        )  # fmt: skip
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


#: Verified against when the user does not exist, so a login takes as long either way and the
#: response time does not tell which names exist.
DUMMY_HASH = f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(b'0' * 16)}${_b64(b'0' * 32)}"


def secret_hash(secret: str) -> str:
    """SHA-256 hex of a high-entropy secret (API key, session id): what the store keeps."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_api_key() -> tuple[str, str]:
    """(public id, key): the key is ``umbra_<id>_<secret>``, shown once; the id names it in lists."""
    key_id = secrets.token_hex(4)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def new_secret() -> str:
    """A session id or a CSRF token."""
    return secrets.token_urlsafe(32)


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())

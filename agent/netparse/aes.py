"""The two AES operations QUIC Initials need (RFC 9001 §5.3-5.4): one block of AES-128-ECB (the
header-protection mask) and AES-128-GCM decryption with its tag checked.

They are called through ctypes in the OpenSSL libcrypto that Python's own `ssl` and `hashlib`
already hold in the process, so the daemon's first QUIC packet costs no new library: the
`cryptography` package would add about 8 MiB resident for these two calls. Where libcrypto cannot be
loaded (no OpenSSL 1.1/3 under its usual name) they fall back to `cryptography`.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any, Final

from agent.system.libraries import library_names

__all__ = ["ecb_block", "gcm_decrypt"]

_EVP_CTRL_GCM_SET_IVLEN: Final = 0x9
_EVP_CTRL_GCM_SET_TAG: Final = 0x11
_TAG: Final = 16


@functools.cache
def _libcrypto() -> Any:
    """libcrypto with the EVP calls typed, or None (then `cryptography` does the work)."""
    for name in library_names(("libcrypto.so.3", "libcrypto.so.1.1"), "crypto"):
        try:
            lib: Any = ctypes.CDLL(name)
            lib.EVP_CIPHER_CTX_new.restype = ctypes.c_void_p
        except (OSError, AttributeError):
            continue
        lib.EVP_CIPHER_CTX_free.argtypes = [ctypes.c_void_p]
        for cipher in ("EVP_aes_128_ecb", "EVP_aes_128_gcm"):
            getattr(lib, cipher).restype = ctypes.c_void_p
        init = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
        lib.EVP_EncryptInit_ex.argtypes = init
        lib.EVP_DecryptInit_ex.argtypes = init
        update = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_int),
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        lib.EVP_EncryptUpdate.argtypes = update
        lib.EVP_DecryptUpdate.argtypes = update
        lib.EVP_DecryptFinal_ex.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
        lib.EVP_CIPHER_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
        lib.EVP_CIPHER_CTX_set_padding.argtypes = [ctypes.c_void_p, ctypes.c_int]
        return lib
    return None


def ecb_block(key: bytes, block: bytes) -> bytes:
    """AES-128-ECB encryption of one 16-byte block."""
    if len(key) != 16 or len(block) != 16:
        raise ValueError("AES-128-ECB takes a 16-byte key and one 16-byte block")
    lib = _libcrypto()
    if lib is None:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        return encryptor.update(block) + encryptor.finalize()
    ctx = lib.EVP_CIPHER_CTX_new()
    if not ctx:
        raise MemoryError("EVP_CIPHER_CTX_new")
    try:
        out = ctypes.create_string_buffer(32)
        n = ctypes.c_int(0)
        if (
            lib.EVP_EncryptInit_ex(ctx, lib.EVP_aes_128_ecb(), None, key, None) != 1
            or lib.EVP_CIPHER_CTX_set_padding(ctx, 0) != 1
            or lib.EVP_EncryptUpdate(ctx, ctypes.addressof(out), ctypes.byref(n), block, 16) != 1
        ):
            raise ValueError("AES-128-ECB failed")
        return out.raw[: n.value]
    finally:
        lib.EVP_CIPHER_CTX_free(ctx)


def gcm_decrypt(key: bytes, nonce: bytes, data: bytes, aad: bytes) -> bytes | None:
    """AES-128-GCM: the plaintext of `data` (ciphertext then 16-byte tag), None when the tag is wrong."""
    if len(key) != 16 or not nonce or len(data) < _TAG:
        return None
    lib = _libcrypto()
    if lib is None:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        try:
            return AESGCM(key).decrypt(nonce, data, aad)
        except (InvalidTag, ValueError):
            return None
    ciphertext, tag = data[:-_TAG], data[-_TAG:]
    ctx = lib.EVP_CIPHER_CTX_new()
    if not ctx:
        raise MemoryError("EVP_CIPHER_CTX_new")
    try:
        out = ctypes.create_string_buffer(len(ciphertext) + 16)
        n = ctypes.c_int(0)
        tail = ctypes.c_int(0)
        ok = (
            lib.EVP_DecryptInit_ex(ctx, lib.EVP_aes_128_gcm(), None, None, None) == 1
            and lib.EVP_CIPHER_CTX_ctrl(ctx, _EVP_CTRL_GCM_SET_IVLEN, len(nonce), None) == 1
            and lib.EVP_DecryptInit_ex(ctx, None, None, key, nonce) == 1
            and lib.EVP_DecryptUpdate(ctx, None, ctypes.byref(n), aad, len(aad)) == 1
            and lib.EVP_DecryptUpdate(
                ctx, ctypes.addressof(out), ctypes.byref(n), ciphertext, len(ciphertext)
            )
            == 1
            and lib.EVP_CIPHER_CTX_ctrl(ctx, _EVP_CTRL_GCM_SET_TAG, _TAG, tag) == 1
            and lib.EVP_DecryptFinal_ex(ctx, ctypes.addressof(out) + n.value, ctypes.byref(tail)) == 1
        )
        return out.raw[: n.value + tail.value] if ok else None
    finally:
        lib.EVP_CIPHER_CTX_free(ctx)

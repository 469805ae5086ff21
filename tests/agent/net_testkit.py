"""Builders for the network tests: real and hand-made TLS ClientHellos, TLS records."""

from __future__ import annotations

import ssl
import struct

import pytest


def real_client_hello(server_name: str) -> bytes:
    """The TLS records Python's OpenSSL sends first, for this SNI (a real-world ClientHello)."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        conn.do_handshake()
    return outgoing.read()


def handshake_of(records: bytes) -> bytes:
    """The handshake message inside TLS records."""
    out, pos = b"", 0
    while pos + 5 <= len(records):
        length = struct.unpack_from("!H", records, pos + 3)[0]
        out += records[pos + 5 : pos + 5 + length]
        pos += 5 + length
    return out


def build_hello(extensions: list[tuple[int, bytes]], suites: list[int] | None = None) -> bytes:
    """A ClientHello handshake message with the given extensions (GREASE welcome)."""
    suites = suites if suites is not None else [0x0A0A, 0x1301, 0x1302]
    body = b"\x03\x03" + bytes(32) + b"\x20" + bytes(32)
    body += struct.pack("!H", 2 * len(suites)) + b"".join(struct.pack("!H", s) for s in suites)
    body += b"\x01\x00"
    ext = b"".join(struct.pack("!HH", t, len(d)) + d for t, d in extensions)
    body += struct.pack("!H", len(ext)) + ext
    return b"\x01" + len(body).to_bytes(3, "big") + body


def sni_ext(name: bytes) -> tuple[int, bytes]:
    entry = b"\x00" + struct.pack("!H", len(name)) + name
    return 0, struct.pack("!H", len(entry)) + entry


def records(message: bytes, size: int = 16384) -> bytes:
    out = b""
    for i in range(0, len(message), size):
        chunk = message[i : i + size]
        out += b"\x16\x03\x01" + struct.pack("!H", len(chunk)) + chunk
    return out

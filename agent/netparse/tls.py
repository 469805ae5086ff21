"""TLS ClientHello: the server name (SNI) a client asks for, from TCP or from QUIC CRYPTO data.

Two layers:

- `parse_client_hello(message)` reads one handshake message (type 1) as TLS 1.0-1.3 and QUIC
  send it: version, random, session id, cipher suites (GREASE values are just numbers here),
  compression methods, extensions. It returns the SNI host name (extension 0, name type 0), the
  ALPN list, and whether the hello is an Encrypted Client Hello's outer hello (extension 0xfe0d,
  type outer: the real server name travels encrypted, the SNI is the provider's public name).
  Every length is checked against the bytes present.
- `ClientHelloBuffer` reassembles the handshake message from the TLS record layer of a TCP
  stream: a ClientHello may be split over several records and over several TCP segments
  (post-quantum key shares make 1.5 KiB ClientHellos common). It is bounded in bytes
  (`MAX_HELLO`) and the caller bounds it in time (it drops buffers older than its timeout).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "ECH_PUBLIC_NAMES",
    "MAX_HELLO",
    "ClientHello",
    "ClientHelloBuffer",
    "looks_like_handshake_record",
    "parse_client_hello",
]

MAX_HELLO: Final = 65536  # bytes of handshake message we are willing to hold for one flow
_MAX_EXTENSIONS: Final = 128  # more than any real client sends (browsers: ~20)
_MAX_ALPN: Final = 16

HANDSHAKE: Final = 22
CLIENT_HELLO: Final = 1
_EXT_SERVER_NAME: Final = 0
_EXT_ALPN: Final = 16
_EXT_ECH: Final = 0xFE0D  # encrypted_client_hello (RFC 9849; draft-ietf-tls-esni-18 and later)
_ECH_OUTER: Final = 0  # ECHClientHello.type: outer (on the wire); inner (1) is only ever encrypted
#: The public names ECH-fronting providers put in the outer SNI: a hello naming one of these
#: with ECH hides its real server. Cloudflare: "Encrypted Client Hello - the last puzzle piece
#: to privacy" (blog.cloudflare.com, 2023), its one public name for every site it fronts.
ECH_PUBLIC_NAMES: Final = frozenset({"cloudflare-ech.com"})
_HOST_BYTES: Final = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._*")


@dataclass(frozen=True, slots=True)
class ClientHello:
    legacy_version: int
    server_name: str | None  # lower case, no trailing dot; None when the hello names none
    alpn: tuple[str, ...] = ()
    # An ECH outer hello. Browsers also send GREASE ECH (random bytes, to every server), which
    # is the same on the wire: the SNI is then the real name. `name_hidden` tells them apart.
    ech: bool = False

    @property
    def name_hidden(self) -> bool:
        """The SNI is an ECH-fronting provider's public name: the real server name is encrypted."""
        return self.ech and self.server_name in ECH_PUBLIC_NAMES


def looks_like_handshake_record(data: bytes) -> bool:
    """True when `data` starts a TLS handshake record (what the sensor's BPF filter tests too)."""
    return (
        len(data) >= 6 and data[0] == HANDSHAKE and data[1] == 3 and data[2] <= 4 and data[5] == CLIENT_HELLO
    )


def parse_client_hello(msg: bytes) -> ClientHello | None:
    """Parse a complete handshake message of type ClientHello; None when malformed."""
    n = len(msg)
    if n < 4 + 38 or msg[0] != CLIENT_HELLO:
        return None
    end = 4 + ((msg[1] << 16) | (msg[2] << 8) | msg[3])
    if end > n:
        return None
    version = (msg[4] << 8) | msg[5]
    pos = 4 + 2 + 32
    sid = msg[pos]
    pos += 1 + sid
    if sid > 32 or pos + 2 > end:
        return None
    suites = (msg[pos] << 8) | msg[pos + 1]
    pos += 2 + suites
    if suites % 2 or pos + 1 > end:
        return None
    pos += 1 + msg[pos]
    if pos > end:
        return None
    if pos == end:  # no extensions at all (SSLv3-era hello): valid, names nothing
        return ClientHello(version, None)
    extensions = _vector(msg, pos, end)
    if extensions is None:
        return None
    pos, ext_end = extensions
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    ech = False
    for _ in range(_MAX_EXTENSIONS):
        if pos + 4 > ext_end:
            break
        etype = (msg[pos] << 8) | msg[pos + 1]
        elen = (msg[pos + 2] << 8) | msg[pos + 3]
        body = pos + 4
        pos = body + elen
        if pos > ext_end:
            return None
        if etype == _EXT_SERVER_NAME and sni is None:
            sni = _server_name(msg, body, pos)
        elif etype == _EXT_ALPN:
            alpn = _alpn(msg, body, pos)
        elif etype == _EXT_ECH:
            ech = elen > 0 and msg[body] == _ECH_OUTER
    return ClientHello(version, sni, alpn, ech)


def _vector(msg: bytes, pos: int, end: int) -> tuple[int, int] | None:
    """Where the body of the vector at `pos` (two-byte length) starts and ends; None when it
    does not fit before `end`."""
    if pos + 2 > end:
        return None
    body_end = pos + 2 + ((msg[pos] << 8) | msg[pos + 1])
    return None if body_end > end else (pos + 2, body_end)


def _server_name(msg: bytes, pos: int, end: int) -> str | None:
    names = _vector(msg, pos, end)
    if names is None:
        return None
    pos, list_end = names
    while pos + 3 <= list_end:
        kind = msg[pos]
        length = (msg[pos + 1] << 8) | msg[pos + 2]
        pos += 3
        if pos + length > list_end:
            return None
        if kind == 0:
            return _host(msg[pos : pos + length])
        pos += length
    return None


def _host(raw: bytes) -> str | None:
    """A host name as sent; None for empty, over-long or non-printable names."""
    if not raw or len(raw) > 255:
        return None
    if not all(b in _HOST_BYTES for b in raw):
        return None
    return raw.decode("ascii").lower().rstrip(".") or None


def _alpn(msg: bytes, pos: int, end: int) -> tuple[str, ...]:
    if pos + 2 > end:
        return ()
    list_end = min(end, pos + 2 + ((msg[pos] << 8) | msg[pos + 1]))
    pos += 2
    out: list[str] = []
    while pos < list_end and len(out) < _MAX_ALPN:
        length = msg[pos]
        pos += 1
        if pos + length > list_end:
            break
        out.append(msg[pos : pos + length].decode("ascii", "replace"))
        pos += length
    return tuple(out)


class ClientHelloBuffer:
    """Reassembles a ClientHello from TLS records arriving in TCP segments, in order.

    `feed(segment)` returns the parsed hello once complete, None while more is needed, and sets
    `failed` when the stream is not a TLS handshake or breaks the bounds (then it holds nothing).
    Segments must be fed in sequence order (the caller drops retransmissions and gaps).
    """

    __slots__ = ("_handshake", "_records", "failed", "started")

    def __init__(self, started: float = 0.0) -> None:
        self._records = b""  # undecoded record-layer bytes
        self._handshake = bytearray()  # handshake bytes taken out of records so far
        self.failed = False
        self.started = started

    @property
    def size(self) -> int:
        return len(self._records) + len(self._handshake)

    def feed(self, segment: bytes) -> ClientHello | None:
        if self.failed:
            return None
        data = self._records + segment if self._records else segment
        pos = 0
        while pos + 5 <= len(data):
            if data[pos] != HANDSHAKE or data[pos + 1] != 3:
                self._fail()
                return None
            length = (data[pos + 3] << 8) | data[pos + 4]
            if length == 0 or length > 18432:  # 2^14 + 2048: the record limit of RFC 8446 §5.2
                self._fail()
                return None
            if pos + 5 + length > len(data):
                break
            self._handshake += data[pos + 5 : pos + 5 + length]
            pos += 5 + length
            hello = self._complete()
            if hello is not None or self.failed:
                return hello
        self._records = data[pos:]
        if self.size > MAX_HELLO:
            self._fail()
            return None
        return None

    def _complete(self) -> ClientHello | None:
        hs = self._handshake
        if len(hs) < 4:
            return None
        if hs[0] != CLIENT_HELLO:
            self._fail()
            return None
        need = 4 + ((hs[1] << 16) | (hs[2] << 8) | hs[3])
        if need > MAX_HELLO:
            self._fail()
            return None
        if len(hs) < need:
            return None
        hello = parse_client_hello(bytes(hs[:need]))
        self._records, self._handshake = b"", bytearray()
        if hello is None:
            self.failed = True
        return hello

    def _fail(self) -> None:
        self.failed = True
        self._records, self._handshake = b"", bytearray()

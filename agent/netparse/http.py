"""Plain HTTP/1.x requests: the Host a client names (RFC 9112 §3.2), from bounded headers.

A request line is `METHOD SP target SP HTTP/1.x`; the method must be a known one, so RTSP,
SIP and binary protocols on port 80 are never read as HTTP. The headers are read up to
`MAX_HEADER_BYTES` and `MAX_HEADERS` lines. An absolute-form target (`GET http://h/ HTTP/1.1`,
what a proxy sees) or a CONNECT authority names the host when no Host header does.
`HttpRequestBuffer` collects a request whose header block is split across TCP segments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "METHODS",
    "HttpRequest",
    "HttpRequestBuffer",
    "looks_like_request",
    "parse_http_request",
]

MAX_HEADER_BYTES: Final = 8192
MAX_HEADERS: Final = 100
METHODS: Final = frozenset(
    {b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE"}
)
_PREFIXES: Final = tuple(m + b" " for m in METHODS)
_HOST_BYTES: Final = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._:[]")


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    host: str | None  # lower case, without port; None when the request names no usable host
    complete: bool  # the header block ended (CRLF CRLF) within the bound


def looks_like_request(data: bytes) -> bool:
    """True when `data` starts with a known method and a space."""
    return data.startswith(_PREFIXES)


def parse_http_request(data: bytes) -> HttpRequest | None:
    """Parse the request line and headers at the start of `data`; None when it is not HTTP/1.x.

    Returns a request with `host` as soon as the Host header is read, even if later header
    lines are still missing; `complete` says whether the header block ended.
    """
    if not looks_like_request(data):
        return None
    head = data[:MAX_HEADER_BYTES]
    line_end = head.find(b"\r\n")
    if line_end < 0:
        return None
    parts = head[:line_end].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return None
    method, target = parts[0], parts[1]
    pos = line_end + 2
    host: str | None = None
    complete = False
    for _ in range(MAX_HEADERS):
        end = head.find(b"\r\n", pos)
        if end < 0:
            break
        if end == pos:
            complete = True
            break
        line = head[pos:end]
        pos = end + 2
        colon = line.find(b":")
        if colon > 0 and line[:colon].strip().lower() == b"host":
            host = _host(line[colon + 1 :].strip())
            break
    if host is None:
        host = _target_host(method, target)
    return HttpRequest(method.decode("ascii"), host, complete or host is not None)


def _target_host(method: bytes, target: bytes) -> str | None:
    if method == b"CONNECT":
        return _host(target)
    lower = target.lower()
    for scheme in (b"http://", b"https://"):
        if lower.startswith(scheme):
            authority = target[len(scheme) :].split(b"/", 1)[0].split(b"?", 1)[0]
            return _host(authority.rsplit(b"@", 1)[-1])
    return None


def _host(raw: bytes) -> str | None:
    if not raw or len(raw) > 261 or not all(b in _HOST_BYTES for b in raw):
        return None
    text = raw.decode("ascii").lower()
    if text.startswith("["):  # [v6]:port
        close = text.find("]")
        return text[1:close] or None if close > 0 else None
    if text.count(":") == 1:
        text = text.split(":", 1)[0]
    return text.rstrip(".") or None


class HttpRequestBuffer:
    """Collects the first request of a connection across segments, up to `MAX_HEADER_BYTES`."""

    __slots__ = ("_buf", "failed", "started")

    def __init__(self, started: float = 0.0) -> None:
        self._buf = b""
        self.failed = False
        self.started = started

    @property
    def size(self) -> int:
        return len(self._buf)

    def feed(self, segment: bytes) -> HttpRequest | None:
        """The request once its host is known or its header block ended; None while waiting."""
        if self.failed:
            return None
        self._buf = (self._buf + segment)[: MAX_HEADER_BYTES + 1]
        if len(self._buf) < 8:
            if not any(p.startswith(self._buf) or self._buf.startswith(p) for p in _PREFIXES):
                self.failed = True
            return None
        req = parse_http_request(self._buf)
        if req is None:
            if not looks_like_request(self._buf) or len(self._buf) > MAX_HEADER_BYTES or b"\r\n" in self._buf:
                self.failed = True
                self._buf = b""
            return None
        if req.host is None and not req.complete and len(self._buf) <= MAX_HEADER_BYTES:
            return None
        self._buf = b""
        self.failed = True  # one request per connection is all we read
        return req

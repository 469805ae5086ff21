"""HOST:PORT listen addresses, parsed once so every listener and error message agrees."""

from __future__ import annotations

import ipaddress


def parse_addr(text: str) -> tuple[str, int]:
    """ "127.0.0.1:50051" -> ("127.0.0.1", 50051); "[::1]:0" -> ("::1", 0). ValueError if malformed."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"bad address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:50051")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"bad address {text!r}: write IPv6 hosts in brackets, e.g. [::1]:50051")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"bad port in {text!r}: expected 0..65535 (0 picks a free port)")
    return host, int(port_text)


def format_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

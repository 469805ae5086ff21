"""Short-lived clients: each a new process that makes one exchange and exits at once.

`python short_clients.py tls|dns|quic COUNT NAME SERVER_IP [fork|inline]`, run in the client's
network namespace. With `fork` (the default) the parent forks COUNT children one after another;
each child opens a new socket, makes one exchange with the test server (`short_service.py`),
prints one JSON line (its pid, its socket's local port where it knows it, and how long the
exchange took) and ends with `os._exit`, so its descriptors are gone the moment the exchange
is. With `inline` one long-lived process makes the COUNT exchanges itself, each on a new socket
(a browser or an SDK server, whose sockets the sensor has not met before). The exchanges:

- tls:  connect to NAME:443 (the hosts file), TLS handshake with SNI NAME (SSL_CERT_FILE
        trusts the test CA), one request, the answer, close;
- dns:  `socket.getaddrinfo(NAME)` through the C library's resolver (resolv.conf names the
        test server): its A and AAAA questions; the resolver's port is its own (port: null);
- quic: one QUIC v1 Initial naming NAME (the QUIC tests' Initial builder around OpenSSL's real
        ClientHello) from a UDP socket that `sendto`s without connecting, and the reply.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent"))
from net_testkit import handshake_of, real_client_hello
from test_netparse import crypto_frame, protect_initial

from agent.netparse import quic


def tls_exchange(name: str, server_ip: str) -> int:
    ctx = ssl.create_default_context()
    with socket.create_connection((name, 443), timeout=5) as raw:
        port = int(raw.getsockname()[1])
        with ctx.wrap_socket(raw, server_hostname=name) as conn:
            conn.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\n\r\n".encode())
            while conn.recv(4096):
                pass
    return port


def dns_exchange(name: str, server_ip: str) -> None:
    found = {info[4][0] for info in socket.getaddrinfo(name, 443, type=socket.SOCK_STREAM)}
    if server_ip not in found:
        raise SystemExit(f"the resolver gave {found} for {name}, not {server_ip}")


def quic_exchange(name: str, server_ip: str, hello: bytes) -> int:
    datagram = protect_initial(quic.V1, os.urandom(8), crypto_frame(0, hello), scid=os.urandom(8))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(datagram, (server_ip, 443))
        port = int(sock.getsockname()[1])
        sock.recvfrom(65536)
    return port


def exchange(kind: str, name: str, server_ip: str, hello: bytes) -> None:
    """One exchange; its JSON line on stdout (written at once: no buffer a fork could copy)."""
    started = time.perf_counter()
    port: int | None = None
    if kind == "tls":
        port = tls_exchange(name, server_ip)
    elif kind == "dns":
        dns_exchange(name, server_ip)
    else:
        port = quic_exchange(name, server_ip, hello)
    took = (time.perf_counter() - started) * 1000
    line = {"pid": os.getpid(), "port": port, "ms": round(took, 2)}
    os.write(1, (json.dumps(line) + "\n").encode())


def main() -> None:
    kind, count, name, server_ip = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    inline = len(sys.argv) > 5 and sys.argv[5] == "inline"
    hello = handshake_of(real_client_hello(name)) if kind == "quic" else b""
    failed = 0
    for _ in range(count):
        if inline:
            exchange(kind, name, server_ip, hello)
            continue
        child = os.fork()
        if child == 0:
            code = 0
            try:
                exchange(kind, name, server_ip, hello)
            except BaseException as exc:  # a child must never return into the parent's loop
                os.write(2, f"child {os.getpid()}: {exc!r}\n".encode())
                code = 1
            os._exit(code)
        failed += os.waitpid(child, 0)[1] != 0
    if failed:
        raise SystemExit(f"{failed} of {count} children failed")


if __name__ == "__main__":
    main()

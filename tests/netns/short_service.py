"""A server for short exchanges: TLS over TCP, DNS over UDP and QUIC Initials, each answered late.

Run inside the server's network namespace: `python short_service.py CERT KEY DELAY_MS ADDRESS`. It
prints "ready" once it listens on:

- TCP 443: TLS with the test CA's certificate; reads one request line, waits DELAY_MS, answers
  `HTTP/1.1 200` and closes;
- UDP 53: a DNS server answering every A question with ADDRESS (AAAA and others: no
  answer) DELAY_MS after the question, as a resolver on the internet does after a round trip;
- UDP 443: takes a QUIC Initial and, DELAY_MS later, sends back one datagram (a short-header
  packet: the handshake's reply stands in for the server's Initial).

DELAY_MS sets how long each client's exchange lasts at least: the tests' "flow of 20 ms".
"""

from __future__ import annotations

import socket
import ssl
import struct
import sys
import threading
from collections.abc import Callable


def _later(delay: float, action: Callable[..., object], *args: object) -> None:
    timer = threading.Timer(delay, action, args)
    timer.daemon = True
    timer.start()


def serve_tls(listener: socket.socket, cert: str, key: str, delay: float) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)

    def one(conn: socket.socket) -> None:
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(5)
                tls.recv(4096)
                threading.Event().wait(delay)
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        except (OSError, ssl.SSLError):
            pass

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=one, args=(conn,), daemon=True).start()


def dns_answer(query: bytes, address: str) -> bytes | None:
    """A response to one DNS question: A -> `address`, anything else -> no answer."""
    if len(query) < 12:
        return None
    end = 12
    while end < len(query) and query[end] != 0:
        end += 1 + query[end]
    if end + 5 > len(query):
        return None
    question = query[12 : end + 5]
    qtype = struct.unpack_from("!H", query, end + 1)[0]
    answers = b""
    if qtype == 1:
        answers = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(address)
    header = query[:2] + struct.pack("!HHHHH", 0x8180, 1, 1 if answers else 0, 0, 0)
    return header + question + answers


def serve_dns(sock: socket.socket, address: str, delay: float) -> None:
    while True:
        query, peer = sock.recvfrom(4096)
        answer = dns_answer(query, address)
        if answer is not None:
            _later(delay, sock.sendto, answer, peer)


def serve_quic(sock: socket.socket, delay: float) -> None:
    while True:
        datagram, peer = sock.recvfrom(65536)
        if datagram and datagram[0] & 0x80:  # a long header: the client's Initial
            _later(delay, sock.sendto, b"\x40" + bytes(40), peer)


def _udp(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    return sock


def main() -> None:
    cert, key, delay, address = sys.argv[1], sys.argv[2], float(sys.argv[3]) / 1000, sys.argv[4]
    tcp = socket.create_server(("0.0.0.0", 443), backlog=128)
    servers = (
        (serve_tls, (tcp, cert, key, delay)),
        (serve_dns, (_udp(53), address, delay)),
        (serve_quic, (_udp(443), delay)),
    )
    for target, args in servers:
        threading.Thread(target=target, args=args, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()

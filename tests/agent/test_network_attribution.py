"""Per-process attribution: the live network sensor names the process that owns an AI flow.

Also the pieces it is made of, on real sockets: the kernel's exact-tuple socket lookup
(sock_diag), the inode -> pid map, and the flow analyzer telling a new socket on an old flow's
ports from the old flow (each gets its own owner). The namespace test with 100 short-lived
clients per protocol is tests/netns/test_short_flow_attribution.py.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from net_testkit import handshake_of, real_client_hello
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from test_netparse import crypto_frame, protect_initial
from test_network_sensor import self_signed

from agent.netparse import quic
from agent.netparse.frames import LINKTYPE_ETHERNET
from agent.observations import NetworkObservation
from agent.sensors.network.flows import FlowAnalyzer
from agent.sensors.network.sensor import NetworkSensor
from agent.system.sockdiag import SockDiag
from agent.system.socket_owners import SocketOwners

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="packet capture needs root (CAP_NET_RAW)")

# A separate program holding a TLS connection open, as an SDK client with keep-alive does.
CLIENT = """
import socket, ssl, sys, time
port, name, cafile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)
raw = socket.create_connection(("127.0.0.1", port))
conn = ctx.wrap_socket(raw, server_hostname=name)
conn.sendall(b"x" * 50_000)
print("sent", flush=True)
time.sleep(60)
"""


@needs_root
def test_flow_is_attributed_to_the_process_that_owns_the_socket(tmp_path: Path) -> None:
    name = "api.anthropic.com"
    cert, key = self_signed(tmp_path, name)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])
    held: list[ssl.SSLSocket] = []

    def serve() -> None:
        conn, _ = listener.accept()
        tls = server_ctx.wrap_socket(conn, server_side=True)
        tls.recv(65536)
        held.append(tls)

    threading.Thread(target=serve, daemon=True).start()
    sensor = NetworkSensor(watch=lambda host: host == name)
    sensor.start()
    script = tmp_path / "assistant_client.py"
    script.write_text(CLIENT)
    client = subprocess.Popen(
        [sys.executable, str(script), str(port), name, str(cert)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert client.stdout is not None and client.stdout.readline().strip() == "sent"
        deadline = time.monotonic() + 15
        attributed = None
        while time.monotonic() < deadline and attributed is None:
            for obs in sensor.poll():
                if obs.host_name == name and obs.process is not None:
                    attributed = obs
            time.sleep(0.2)
        assert attributed is not None, "the flow was never attributed to a process"
        assert attributed.process is not None
        assert attributed.process.pid == client.pid
        assert attributed.process.cmdline[1] == str(script)
        assert attributed.client_port != port and attributed.server_port == port
    finally:
        client.kill()
        client.wait()
        sensor.stop()
        listener.close()
        for tls in held:
            tls.close()


# --- the pieces ------------------------------------------------------------------------------


def test_sock_diag_finds_the_exact_socket_tcp_and_udp() -> None:
    diag = SockDiag()
    listener = socket.create_server(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])
    tcp = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    connected = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    connected.connect(("127.0.0.1", 9))
    unconnected = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a QUIC client's sendto
    unconnected.sendto(b"x", ("127.0.0.1", 9))
    try:
        for sock, transport, remote_port in (
            (tcp, "tcp", port),
            (connected, "udp", 9),
            (unconnected, "udp", 9),
        ):
            local_port = sock.getsockname()[1]
            found = diag.lookup(transport, "127.0.0.1", local_port, "127.0.0.1", remote_port)
            assert found is not None, transport
            assert found.inode == os.fstat(sock.fileno()).st_ino and found.uid == os.geteuid()
        # the server's end of the loopback connection is not the client's socket
        client_port = tcp.getsockname()[1]
        served = diag.lookup("tcp", "127.0.0.1", port, "127.0.0.1", client_port)
        assert served is not None and served.inode == os.fstat(accepted.fileno()).st_ino
        assert diag.lookup("udp", "127.0.0.1", 1, "127.0.0.1", 9) is None  # no such socket
        tcp.close()  # closed: FIN_WAIT with no descriptor, inode 0
        after = diag.lookup("tcp", "127.0.0.1", client_port, "127.0.0.1", port)
        assert after is None or after.inode == 0
        assert diag.lookup("sctp", "127.0.0.1", 1, "127.0.0.1", 2) is None
    finally:
        diag.close()
        for s in (tcp, accepted, connected, unconnected, listener):
            s.close()


@needs_root
def test_socket_owners_names_new_and_old_processes() -> None:
    owners = SocketOwners()
    owners.warm()
    mine = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a new socket of an old process
    child = subprocess.Popen(
        [sys.executable, "-c", "import os, socket, sys; s = socket.socket(); "
         "print(os.fstat(s.fileno()).st_ino, flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdin is not None
        inode = int(child.stdout.readline())
        assert owners.owner(inode, os.geteuid()) == child.pid
        scans = owners.scans
        assert owners.owner(inode) == child.pid and owners.scans == scans  # known now: no scan
        assert owners.owner(os.fstat(mine.fileno()).st_ino, os.geteuid()) == os.getpid()
        assert owners.owner(0) is None and owners.owner(2**31 - 7) is None
        child.stdin.close()
        child.wait(5)
        assert owners.owner(inode) is None  # its holder exited
    finally:
        mine.close()
        child.kill()
        child.wait()


def _feed(analyzer: FlowAnalyzer, packets: list[object], start: float = 1700000000.0) -> None:
    for i, p in enumerate(packets):
        analyzer.feed(start + i * 0.01, LINKTYPE_ETHERNET, bytes(Ether() / p))  # type: ignore[operator]


def test_a_new_socket_on_an_old_flows_ports_is_a_new_flow() -> None:
    """UDP ports are drawn at random and come round again: a new DNS question after the last
    was answered, a new QUIC connection id, a TCP SYN with a new sequence number each open a
    new flow, named again (so the sensor looks up its owner again)."""
    named: list[NetworkObservation] = []
    analyzer = FlowAnalyzer(on_name=named.append)
    client, resolver, server = "10.1.1.2", "10.1.1.53", "10.1.1.9"

    def question(qid: int) -> list[object]:
        q = (
            IP(src=client, dst=resolver)
            / UDP(sport=40000, dport=53)
            / DNS(id=qid, qd=DNSQR(qname="api.mistral.ai"))
        )
        a = (
            IP(src=resolver, dst=client)
            / UDP(sport=53, dport=40000)
            / DNS(
                id=qid,
                qr=1,
                qd=DNSQR(qname="api.mistral.ai"),
                an=DNSRR(rrname="api.mistral.ai", rdata=server),
            )
        )
        return [q, a]

    hello = handshake_of(real_client_hello("api.anthropic.com"))

    def initial(scid: bytes) -> object:
        datagram = protect_initial(quic.V1, os.urandom(8), crypto_frame(0, hello), scid=scid)
        return IP(src=client, dst=server) / UDP(sport=40001, dport=443) / datagram

    def syn(seq: int) -> object:
        return IP(src=client, dst=server) / TCP(sport=40002, dport=80, flags="S", seq=seq)

    def request(seq: int) -> object:
        head = b"GET / HTTP/1.1\r\nHost: api.openai.com\r\n\r\n"
        return IP(src=client, dst=server) / TCP(sport=40002, dport=80, flags="PA", seq=seq + 1) / head

    _feed(analyzer, [*question(1), *question(1)[:1]])  # the same id again: a retry, the same flow
    _feed(analyzer, question(2), start=1700000001.0)  # a new question after the answer: a new flow
    _feed(analyzer, [initial(b"\x01" * 8), initial(b"\x01" * 8)], start=1700000002.0)
    _feed(analyzer, [initial(b"\x02" * 8)], start=1700000003.0)
    _feed(analyzer, [syn(100), syn(100), request(100)], start=1700000004.0)  # a SYN sent twice
    _feed(analyzer, [syn(900), request(900)], start=1700000005.0)
    flows = analyzer.drain(final=True)
    packets = {
        name: [o.packets for o in flows if o.host_name == name] for name in {o.host_name for o in flows}
    }
    assert packets == {"api.mistral.ai": [3, 2], "api.anthropic.com": [2, 1], "api.openai.com": [3, 2]}
    names = [o.host_name for o in named]
    assert names == ["api.mistral.ai"] * 2 + ["api.anthropic.com"] * 2 + ["api.openai.com"] * 2

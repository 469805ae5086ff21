"""Upload volume from the kernel's counters for the socket, not from captured packets.

On real sockets: sock_diag's tcp_info agrees with the socket's own TCP_INFO; the destroy events
give a closed socket's final counts; the flow analyzer calls back on a named flow's FIN or RST;
and the live sensor reports a TLS upload that opened and closed between two polls with the
kernel's exact count, saying the kernel counted it. The loaded namespace test is
tests/netns/test_upload_volume.py.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from net_testkit import handshake_of, real_client_hello
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from test_netparse import crypto_frame, protect_initial
from test_network_sensor import self_signed

from agent.netparse import quic
from agent.netparse.frames import LINKTYPE_ETHERNET
from agent.observations import NetworkObservation
from agent.sensors.network.flows import FlowAnalyzer
from agent.sensors.network.kernel_counts import KernelCounts
from agent.sensors.network.sensor import NetworkSensor
from agent.system.sockdiag import ClosedSockets, SockDiag

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="capture and destroy events need root")


def own_sent(sock: socket.socket) -> tuple[int, int]:
    """What the socket's own TCP_INFO says: (bytes sent less retransmitted, bytes received)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
    sent, retrans = struct.unpack_from("=QQ", info, 200)
    return sent - retrans, struct.unpack_from("=Q", info, 128)[0]


def connected_pair(dual_stack: bool = False) -> tuple[socket.socket, socket.socket, socket.socket]:
    """A TCP connection on 127.0.0.1; `dual_stack`: the client is an IPv6 socket speaking IPv4
    (its addresses are IPv4-mapped, ::ffff:127.0.0.1, its packets plain IPv4)."""
    listener = socket.create_server(("127.0.0.1", 0))
    if dual_stack:
        client = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        client.connect(("::ffff:127.0.0.1", listener.getsockname()[1]))
    else:
        client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    return listener, client, server


def transfer(client: socket.socket, server: socket.socket, up: int, down: int) -> None:
    client.sendall(b"u" * up)
    got = 0
    while got < up:
        got += len(server.recv(1 << 20))
    server.sendall(b"d" * down)
    got = 0
    while got < down:
        got += len(client.recv(1 << 20))


def test_sock_diag_reads_the_sockets_own_byte_counters() -> None:
    diag = SockDiag()
    listener, client, server = connected_pair()
    try:
        transfer(client, server, 2_500_000, 70_000)
        host, port = client.getsockname()
        found = diag.lookup("tcp", host, port, *listener.getsockname())
        assert found is not None and found.tcp_bytes is not None
        assert (found.tcp_bytes.sent, found.tcp_bytes.received) == own_sent(client) == (2_500_000, 70_000)
        assert found.cookie != 0
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.sendto(b"x" * 500, ("127.0.0.1", 9))
        udp_found = diag.lookup("udp", "127.0.0.1", udp.getsockname()[1], "127.0.0.1", 9)
        assert udp_found is not None and udp_found.tcp_bytes is None  # UDP: no counters in inet_diag
        udp.close()
    finally:
        diag.close()
        for s in (client, server, listener):
            s.close()


@needs_root
@pytest.mark.parametrize("dual_stack", [False, True], ids=["ipv4", "ipv4-mapped"])
def test_a_destroyed_socket_reports_its_final_counts(dual_stack: bool) -> None:
    closed = ClosedSockets()
    assert closed.open(), closed.reason
    listener, client, server = connected_pair(dual_stack)
    try:
        transfer(client, server, 1_234_567, 4_321)
        local, remote = ("127.0.0.1", client.getsockname()[1]), listener.getsockname()
        cookie = SockDiag().lookup("tcp", *local, *remote)
        assert cookie is not None
        client.close()  # after close the socket lingers without counters, then is destroyed
        server.close()
        events = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(e.local_port == local[1] for e in events):
            select.select([closed], [], [], 0.5)
            events += closed.read()
        ends = (*local, *remote)
        mine = [e for e in events if (e.local_ip, e.local_port, e.remote_ip, e.remote_port) == ends]
        assert len(mine) == 1, events
        assert mine[0].cookie == cookie.cookie
        assert mine[0].tcp_bytes.sent == 1_234_567
        # the peer's FIN counts one byte in the kernel's received count
        assert mine[0].tcp_bytes.received - 4_321 in (0, 1)
    finally:
        closed.close()
        listener.close()


def test_the_analyzer_calls_back_on_a_named_flows_fin_or_rst() -> None:
    closing: list[NetworkObservation] = []
    analyzer = FlowAnalyzer(on_close=closing.append)
    c, s = IP(src="10.1.1.2", dst="10.1.1.9"), IP(src="10.1.1.9", dst="10.1.1.2")
    hello = real_client_hello("api.openai.com")
    packets = [
        c / TCP(sport=50000, dport=443, flags="S", seq=99),
        c / TCP(sport=50000, dport=443, flags="PA", seq=100) / hello,
        c / TCP(sport=50000, dport=443, flags="PA", seq=100 + len(hello)) / bytes(1000),
        c / TCP(sport=50000, dport=443, flags="FA", seq=1100 + len(hello)),
        s / TCP(sport=443, dport=50000, flags="R", seq=7000),
        c / TCP(sport=50001, dport=443, flags="S", seq=5),  # an unnamed flow: no call back
        c / TCP(sport=50001, dport=443, flags="R", seq=6),
    ]
    for i, p in enumerate(packets):
        analyzer.feed(1700000000.0 + i, LINKTYPE_ETHERNET, bytes(Ether() / p))
    assert [(o.host_name, o.client_port) for o in closing] == [("api.openai.com", 50000)] * 2
    assert closing[0].bytes_out > 1000


@needs_root
def test_an_upload_between_two_polls_is_counted_by_the_kernel(tmp_path: Path) -> None:
    """The flow opens, uploads and closes between two polls: its final count is the kernel's,
    from the socket's destruction, exactly what the client's socket sent."""
    name = "upload.openai.com"
    cert, key = self_signed(tmp_path, name)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    upload = 3_000_000

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            got = 0
            while got < upload:
                got += len(tls.recv(65536))
            tls.sendall(b"ok")

    sensor = NetworkSensor("lo", watch=lambda host: host == name, report_step=10**9)
    sensor.start()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        time.sleep(0.2)
        sensor.poll()
        ctx = ssl.create_default_context(cafile=str(cert))
        with ctx.wrap_socket(socket.create_connection(listener.getsockname()), server_hostname=name) as tls:
            tls.sendall(bytes(upload))
            assert tls.recv(2) == b"ok"
            truth, _ = own_sent(tls)
            port = tls.getsockname()[1]
        thread.join(5)
        seen: list[NetworkObservation] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            seen += [o for o in sensor.poll() if o.client_port == port and o.host_name == name]
            if any(o.bytes_source == "kernel" and o.bytes_out >= upload for o in seen):
                break
            time.sleep(0.2)
        final = seen[-1]
        assert final.bytes_source == "kernel", seen
        assert final.bytes_out == truth, (final.bytes_out, truth)  # TLS records, no IP headers
        assert upload < truth < upload * 1.01
        assert final.capture_drops == 0
        assert sensor.kernel.finals >= 1  # the destroy event gave it
    finally:
        sensor.stop()
        listener.close()


FLOOD = """
import socket, sys, time
initial, seconds = bytes.fromhex(sys.argv[1]), float(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.sendto(initial, ("127.0.0.1", 443))  # a QUIC Initial naming api.openai.com
print(sock.getsockname()[1], flush=True)
time.sleep(0.5)  # named and watched by now: the flow's every datagram is captured
short = bytes([0x40]) + bytes(1199)  # QUIC short-header datagrams: the flow's bulk
sent, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    for _ in range(1000):
        sock.sendto(short, ("127.0.0.1", 443))
    sent += 1000
print(sent, flush=True)
"""


@needs_root
def test_a_capture_counted_flow_says_how_many_packets_the_capture_lost() -> None:
    """UDP has no byte counters in inet_diag: a QUIC flow's bytes are the capture's. A flood of
    its datagrams outruns the capture; the packets lost are counted (PACKET_STATISTICS) and the
    flow's observation says how many were lost while it lived."""
    hello = handshake_of(real_client_hello("api.openai.com"))
    initial = protect_initial(quic.V1, os.urandom(8), crypto_frame(0, hello), scid=b"\x07" * 8)
    sensor = NetworkSensor("lo", watch=lambda host: host == "api.openai.com", report_step=10**9)
    sensor.start()
    try:
        time.sleep(0.2)
        flood = subprocess.Popen(
            [sys.executable, "-c", FLOOD, initial.hex(), "3"], stdout=subprocess.PIPE, text=True
        )
        assert flood.stdout is not None
        port = int(flood.stdout.readline())
        seen: list[NetworkObservation] = []
        while flood.poll() is None:
            seen += [o for o in sensor.poll() if o.client_port == port]
            time.sleep(0.5)
        sent = int(flood.stdout.readline())
        deadline = time.monotonic() + 10  # its final count comes once the capture thread caught up
        while time.monotonic() < deadline and not any(o.capture_drops for o in seen):
            time.sleep(0.5)
            seen += [o for o in sensor.poll() if o.client_port == port]
        assert sensor.dropped > 0, f"the capture kept up with {sent} datagrams: nothing to count"
        last = seen[-1]
        assert (last.host_name, last.source, last.bytes_source) == ("api.openai.com", "quic_sni", "capture")
        assert 0 < last.capture_drops <= sensor.dropped
        assert last.bytes_out < (sent + 1) * 1228  # short: some datagrams were never seen
        assert sensor.captured > 0
    finally:
        sensor.stop()


def test_a_socket_gone_unread_keeps_its_last_reading_plus_the_captures_growth() -> None:
    """No destroy event heard (none listened to here): the last kernel reading stays, and what the
    capture saw after it is added, and the source says so."""
    diag = SockDiag()
    counts = KernelCounts(diag)
    listener, client, server = connected_pair()
    try:
        transfer(client, server, 300_000, 1_000)
        host, port = client.getsockname()
        remote, remote_port = listener.getsockname()
        flow = NetworkObservation(
            "api.openai.com", "tls_sni", host, port, remote, remote_port, "tcp", 1.0, 2.0, 310_000, 2_000, 40
        )
        counts.follow(flow, diag.lookup("tcp", host, port, remote, remote_port))
        assert counts.count(flow).bytes_source == "kernel"
        assert (counts.count(flow).bytes_out, counts.count(flow).bytes_in) == (300_000, 1_000)
        transfer(client, server, 50_000, 0)
        flow = replace(flow, bytes_out=360_000)  # what the capture had counted by this read
        assert not counts.read(flow)  # still open: a fresh reading
        assert counts.count(flow).bytes_out == 350_000
        client.close()
        server.close()
        assert counts.read(replace(flow, bytes_out=371_000))  # gone, no final count: its destroy event is due
        counted = counts.count(replace(flow, bytes_out=372_000))  # the capture saw 12,000 more since the read
        assert (counted.bytes_source, counted.bytes_out) == ("kernel+capture", 350_000 + 12_000)
        assert not counts.final(flow)
    finally:
        diag.close()
        listener.close()

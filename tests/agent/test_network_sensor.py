"""The live network sensor on real loopback traffic: a TLS client and server on 127.0.0.1.

Needs root (packet capture); skipped with the reason otherwise. The kernel filter is checked
too: bulk TCP traffic that names no host must not reach Python.
"""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.sensors.base import SensorState
from agent.sensors.network.flows import NetworkObservation
from agent.sensors.network.sensor import BPF_FILTER, NetworkSensor

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="packet capture needs root (CAP_NET_RAW)")


def self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def tls_exchange(tmp_path: Path, server_name: str, upload: int) -> int:
    """A real TLS handshake on 127.0.0.1 with this SNI, then `upload` bytes; the server's port."""
    cert, key = self_signed(tmp_path, server_name)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])
    received = []

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls_conn:
            total = 0
            while total < upload:
                chunk = tls_conn.recv(65536)
                if not chunk:
                    break
                total += len(chunk)
            received.append(total)
            tls_conn.sendall(b"ok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(cert))
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        client_ctx.wrap_socket(raw, server_hostname=server_name) as conn,
    ):
        conn.sendall(bytes(upload))
        assert conn.recv(2) == b"ok"
    thread.join(5)
    listener.close()
    assert received == [upload]
    return port


def bulk_plain_tcp(megabytes: int) -> None:
    """Traffic no filter clause admits: plain bytes over TCP on loopback."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def sink() -> None:
        conn, _ = listener.accept()
        with conn:
            while conn.recv(65536):
                pass

    thread = threading.Thread(target=sink, daemon=True)
    thread.start()
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.sendall(b"\x00" * (megabytes << 20))
    thread.join(5)
    listener.close()


def poll_until(sensor: NetworkSensor, predicate: object, timeout: float = 5.0) -> list[NetworkObservation]:
    seen: list[NetworkObservation] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen += [o for o in sensor.poll() if isinstance(o, NetworkObservation)]
        if callable(predicate) and predicate(seen):
            break
        time.sleep(0.1)
    return seen


def test_captures_sni_on_loopback_behind_the_kernel_filter(tmp_path: Path) -> None:
    # Other tests may talk TLS on lo at the same time: we look for our own flow only.
    sensor = NetworkSensor("lo", watch=lambda name: name.endswith("openai.com"), report_step=100_000)
    assert sensor.status().state is SensorState.ACTIVE
    sensor.start()
    try:
        time.sleep(0.2)
        bulk_plain_tcp(8)
        port = tls_exchange(tmp_path, "api.openai.com", upload=200_000)
        seen = poll_until(sensor, lambda obs: any(o.host_name == "api.openai.com" for o in obs))
        hits = [o for o in seen if o.host_name == "api.openai.com"]
        assert hits, f"no observation for api.openai.com in {seen}"
        obs = hits[0]
        assert (obs.source, obs.server_ip, obs.server_port, obs.transport) == (
            "tls_sni",
            "127.0.0.1",
            port,
            "tcp",
        )
        # 8 MiB of plain TCP crossed lo, yet Python saw only the few filtered packets.
        assert sensor.analyzer.stats.packets < 200, sensor.analyzer.stats
        assert sensor.watched == ("127.0.0.1",)
        # From now on the watched server's packets all come through: a second upload is counted.
        tls_exchange(tmp_path, "api.openai.com", upload=3_000_000)
        later = poll_until(sensor, lambda obs: any(o.bytes_out > 3_000_000 - 100_000 for o in obs))
        uploads = [o for o in later if o.host_name == "api.openai.com"]
        # Reports come each 100 kB (report_step) of growth; the count is the socket's own (kernel).
        assert max(o.bytes_out for o in uploads) > 3_000_000 - 100_000, (uploads, sensor.dropped)
        assert {o.bytes_source for o in uploads} == {"kernel"}, uploads
        # The capture sees every packet of the watched server too (its count is the fallback for
        # UDP and unreadable sockets): all of them once the reader thread has caught up.
        counted = 0
        deadline = time.monotonic() + 5
        while counted <= 3_000_000 and time.monotonic() < deadline and not sensor.dropped:
            time.sleep(0.1)
            active = sensor.analyzer.active()  # a copy: the reader thread may add flows meanwhile
            counted = max(o.bytes_out for o in active if o.host_name == "api.openai.com")
        assert counted > 3_000_000 or sensor.dropped, counted
        if not sensor.dropped:
            assert sensor.status().state is SensorState.ACTIVE
    finally:
        sensor.stop()


def test_filter_compiles_with_libpcap_as_scapy_compiles_it() -> None:
    """Our ctypes call into libpcap yields the very program scapy's compiler path does (an
    independent caller of the same library), and a broken expression is a clear error."""
    from scapy.arch.common import compile_filter as scapy_compile

    from agent.sensors.network.bpf import FilterError, compile_filter

    ours = compile_filter(BPF_FILTER, linktype=1)
    theirs = scapy_compile(BPF_FILTER, linktype=1)
    assert len(ours) == theirs.bf_len > 20
    assert ours == [(i.code, i.jt, i.jf, i.k) for i in theirs.bf_insns[: theirs.bf_len]]
    with pytest.raises(FilterError, match="bad filter"):
        compile_filter("tcp port ninety", linktype=1)

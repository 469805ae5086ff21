"""Per-process attribution: the live network sensor names the process that owns an AI flow."""

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
from test_network_sensor import self_signed

from agent.sensors.network.sensor import NetworkSensor

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="packet capture needs root (CAP_NET_RAW)")

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

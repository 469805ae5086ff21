"""Benchmark: what the live network sensor costs while bulk traffic that is not AI crosses lo.

In a network namespace of its own (so no other traffic on the machine counts), a child process
runs the real `NetworkSensor` (every interface, kernel BPF filter, the packaged catalog as its
watch list) polling every 2 s, while a load generator pushes bulk TCP over loopback at a target
rate (default 1 Gbit/s) for 10 s. Reported: the sensor process's CPU (psutil, user + system, over
the load window) as a percentage of one core, its RSS, and how many packets reached Python
against how many the interface carried (`/sys/class/net/lo/statistics/rx_packets`).

Then the upload count under load (issue 16): with one CPU burner per core running, a TLS client
sends `--upload-mib` MiB to "api.openai.com" (a server on lo with a certificate for that name),
`--runs` times, while a fresh sensor polls every 2 s as the daemon does. Each run prints the
sensor's count (the kernel's, from the socket's counters) and the capture's own count of the same
flow against the true bytes (what the client application wrote), and the packets the capture lost.

Needs root (packet capture and `ip netns`); prints why and exits 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
from umbra.table import Column, render_table

REPO = Path(__file__).resolve().parents[1]

SENSOR = """
import json, sys, time
from agent.catalog.endpoints import default_endpoint_catalog
from agent.sensors.network.sensor import NetworkSensor
catalog = default_endpoint_catalog()
sensor = NetworkSensor(watch=lambda h: catalog.match(h) is not None)
sensor.start()
print(json.dumps({"state": sensor.status().state.value, "reason": sensor.status().reason}), flush=True)
observations = 0
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    time.sleep(2.0)
    observations += len(sensor.poll())
sensor.stop()
stats = sensor.analyzer.stats
result = {"packets": stats.packets, "dropped": sensor.dropped, "observations": observations}
print(json.dumps(result), flush=True)
"""

LOAD = """
import socket, sys, threading, time
rate, seconds = float(sys.argv[1]), float(sys.argv[2])
listener = socket.create_server(("127.0.0.1", 0))
port = listener.getsockname()[1]
received = [0]
def sink():
    conn, _ = listener.accept()
    while True:
        data = conn.recv(1 << 20)
        if not data:
            return
        received[0] += len(data)
threading.Thread(target=sink, daemon=True).start()
out = socket.create_connection(("127.0.0.1", port))
chunk = b"\\x00" * 65536
sent, start = 0, time.monotonic()
while (now := time.monotonic()) - start < seconds:
    if sent > rate * (now - start):
        time.sleep(0.001)
        continue
    out.sendall(chunk)
    sent += len(chunk)
out.close()
time.sleep(0.2)
print(sent, time.monotonic() - start, flush=True)
"""


UPLOAD_SENSOR = """
import json, select, sys, time
from agent.catalog.endpoints import default_endpoint_catalog
from agent.sensors.network.sensor import NetworkSensor
catalog = default_endpoint_catalog()
sensor = NetworkSensor(watch=lambda h: catalog.match(h) is not None)
sensor.start()
print("ready", flush=True)
seen = []
port, settled = None, 0.0
while port is None or time.monotonic() < settled:
    time.sleep(2.0)
    seen += [o for o in sensor.poll() if o.host_name == "api.openai.com"]
    if port is None and select.select([sys.stdin], [], [], 0)[0]:
        port = int(sys.stdin.readline())
        settled = time.monotonic() + 4.0  # the final count: the quiet report after 1 s, two polls
sensor.stop()
mine = [o for o in seen if o.client_port == port]
captured = [o for o in sensor.analyzer.active() if o.client_port == port and o.host_name == "api.openai.com"]
print(json.dumps({
    "counted": mine[-1].bytes_out if mine else 0,
    "source": mine[-1].bytes_source if mine else "",
    "captured": captured[0].bytes_out if captured else 0,
    "dropped": sensor.dropped,
    "delivered": sensor.captured,
}), flush=True)
"""

UPLOAD = """
import json, socket, ssl, sys, tempfile, threading
from pathlib import Path
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from collector.pki import CertificateAuthority
size = int(sys.argv[1])
key = ec.generate_private_key(ec.SECP256R1())
cert = CertificateAuthority.create().issue_server(key, ["api.openai.com"])
folder = Path(tempfile.mkdtemp())
(folder / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
(folder / "k.pem").write_bytes(key.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
server_ctx.load_cert_chain(folder / "c.pem", folder / "k.pem")
listener = socket.create_server(("127.0.0.1", 0))
received = [0]
def serve():
    conn, _ = listener.accept()
    with server_ctx.wrap_socket(conn, server_side=True) as tls:
        while received[0] < size:
            received[0] += len(tls.recv(1 << 20))
        tls.sendall(b"ok")
thread = threading.Thread(target=serve)
thread.start()
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # only the SNI matters here
raw = socket.create_connection(listener.getsockname())
with ctx.wrap_socket(raw, server_hostname="api.openai.com") as tls:
    port = tls.getsockname()[1]
    block = bytes(65536)
    for start in range(0, size, len(block)):
        tls.sendall(block[: size - start])
    tls.recv(2)
thread.join()
print(json.dumps({"port": port, "sent": size, "received": received[0]}), flush=True)
"""


def _ns(name: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", name, *argv]


def _rx(name: str) -> int:
    out = subprocess.run(
        _ns(name, "cat", "/sys/class/net/lo/statistics/rx_packets"), capture_output=True, text=True
    )
    return int(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gbit", type=float, default=1.0, help="load in Gbit/s")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--upload-mib", type=int, default=20, help="the upload counted under load")
    parser.add_argument("--runs", type=int, default=3, help="uploads, each with a fresh sensor")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_network_sensor: needs root (packet capture, network namespaces): skipped")
        return 0
    name = f"umbra-bench-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    procs: list[subprocess.Popen[str]] = []
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'proto'}"}
        sensor = subprocess.Popen(
            _ns(name, sys.executable, "-c", SENSOR, str(args.seconds + 4)),
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        procs.append(sensor)
        assert sensor.stdout is not None
        state = json.loads(sensor.stdout.readline())
        time.sleep(1.0)  # past start-up (imports, catalog): measure the steady state
        me = psutil.Process(sensor.pid)
        cpu0, rx0, wall0 = sum(me.cpu_times()[:2]), _rx(name), time.monotonic()
        load = subprocess.Popen(
            _ns(name, sys.executable, "-c", LOAD, str(args.gbit * 1e9 / 8), str(args.seconds)),
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(load)
        out, _ = load.communicate(timeout=args.seconds + 60)
        sent, took = out.split()
        cpu1, rx1, wall1 = sum(me.cpu_times()[:2]), _rx(name), time.monotonic()
        rss = me.memory_info().rss
        final = json.loads(sensor.stdout.readline())
        sensor.wait(timeout=30)
        uploads = [_upload_under_load(name, env, args.upload_mib << 20) for _ in range(args.runs)]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        subprocess.run(["ip", "netns", "del", name], check=False)
    window = wall1 - wall0
    cpu_pct = (cpu1 - cpu0) / window * 100
    wire = rx1 - rx0
    gbit = int(sent) * 8 / float(took) / 1e9
    rows = [
        ["sensor state", state["state"], "active", state["reason"] or "kernel BPF filter attached"],
        ["load: bulk TCP on lo (Gbit/s)", f"{gbit:.2f}", f"{args.gbit:g}",
         f"{int(sent) / 1e6:,.0f} MB in {float(took):.1f} s"],
        ["sensor CPU, % of one core", f"{cpu_pct:.2f}", "< 1", f"{cpu1 - cpu0:.3f} s CPU in {window:.1f} s"],
        ["sensor RSS (MiB)", f"{rss / 2**20:.0f}", "", "Python, scapy's BPF compiler, the catalog"],
        ["packets on lo (rx_packets)", f"{wire:,}", "", "the kernel's count in the bench namespace"],
        ["packets delivered to Python", f"{final['packets']:,}", "~0", "lo shows each packet twice to a tap"],
        ["delivered per packet on the wire", f"{final['packets'] / max(wire, 1):.5f}", "~0",
         "tcpdump: 1 (no filter)"],
        ["packets dropped", str(final["dropped"]), "0", ""],
    ]  # fmt: skip
    for i, up in enumerate(uploads, 1):
        truth = up["sent"]
        rows += [
            [f"upload {i}, loaded: count error (%)", f"{(up['counted'] - truth) / truth * 100:+.2f}",
             "within 1", f"{up['counted']:,} B, by the {up['source']}; {truth:,} B written"],
            [f"upload {i}: capture's own error (%)", f"{(up['captured'] - truth) / truth * 100:+.2f}",
             "", f"{up['captured']:,} IP bytes; {up['dropped']:,} of {up['delivered']:,} packets lost"],
        ]  # fmt: skip
    print(
        f"$ sudo python bench/bench_network_sensor.py   "
        f"# {args.gbit:g} Gbit/s for {args.seconds:g} s, poll 2 s; "
        f"{args.runs} uploads of {args.upload_mib} MiB with {os.cpu_count()} CPU burners"
    )
    columns = [
        Column("figure"),
        Column("value", align="right"),
        Column("goal"),
        Column("peer / note", flex=True),
    ]
    print(render_table(columns, rows))
    return 0


def _upload_under_load(name: str, env: dict[str, str], size: int) -> dict[str, Any]:
    """One upload to api.openai.com on lo while every core runs a busy loop; the sensor's view."""
    sensor = subprocess.Popen(
        _ns(name, sys.executable, "-c", UPLOAD_SENSOR),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    burn = [sys.executable, "-c", "while True: pass"]
    burners: list[subprocess.Popen[Any]] = [subprocess.Popen(burn) for _ in range(os.cpu_count() or 2)]
    try:
        assert sensor.stdout is not None and sensor.stdin is not None
        assert sensor.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        out = subprocess.run(
            _ns(name, sys.executable, "-c", UPLOAD, str(size)),
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=300,
            check=True,
        )
        upload: dict[str, Any] = json.loads(out.stdout)
        sensor.stdin.write(f"{upload['port']}\n")
        sensor.stdin.flush()
        seen: dict[str, Any] = json.loads(sensor.stdout.readline())
        sensor.wait(timeout=60)
    finally:
        for proc in [*burners, sensor]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return {**upload, **seen}


if __name__ == "__main__":
    raise SystemExit(main())

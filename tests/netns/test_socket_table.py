"""Without packet capture: the socket tables, names the agent resolves itself, a degraded state.

Two levels. The sensor on its own, on loopback, with an injected resolver (runs as any user).
Then the agent as it runs for a user without root: `umbra-agent scan` and `status` as uid
65534 inside a network namespace whose hosts file resolves api.anthropic.com to a local
server, and whose resolver points at a loopback port where nothing answers, so no other name
resolves and no query leaves the namespace. `build_pipeline` must put the socket-table sensor
in the capture sensor's place, and the finding must name the (unprivileged) client process.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netnskit import NETNS_ETC, netns_usable
from umbra.v1 import finding_pb2 as fpb

from agent.catalog.endpoints import default_endpoint_catalog
from agent.config import ConfigError, load_config
from agent.detection.network import CONF_DNS_ADDRESS, NetworkDetector
from agent.sensors.base import SensorState
from agent.sensors.network.socket_table import SocketTableSensor, catalog_names

AGENT = Path(sys.executable).parent / "umbra-agent"
NOBODY = 65534
HOLD = """
import socket, sys, time
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])))
print("connected", conn.getsockname()[1], flush=True)
time.sleep(60)
"""


def _server(address: str) -> socket.socket:
    listener = socket.create_server((address, 0))
    listener.listen(8)
    return listener


def test_a_connection_to_a_resolved_catalog_address_is_reported_once_with_its_process(
    tmp_path: Path,
) -> None:
    listener = _server("127.0.0.77")  # an address no other test talks to
    port = int(listener.getsockname()[1])
    resolved: list[str] = []

    def resolver(name: str) -> list[str]:
        resolved.append(name)
        return ["127.0.0.77"] if name == "api.openai.com" else []

    names = catalog_names(default_endpoint_catalog())
    assert "api.openai.com" in names and not any("*" in n for n in names)
    sensor = SocketTableSensor(names, resolver=resolver, resolve_per_second=5000, capture_reason="not root")
    script = tmp_path / "chat_client.py"
    script.write_text(HOLD)
    client = subprocess.Popen(
        [sys.executable, str(script), "127.0.0.77", str(port)], stdout=subprocess.PIPE, text=True
    )
    sensor.start()
    try:
        assert client.stdout is not None
        words = client.stdout.readline().split()
        assert words[0] == "connected"
        client_port = int(words[1])
        deadline = time.monotonic() + 20
        while sensor.rounds < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sensor.addresses.get("127.0.0.77") == "api.openai.com"
        mine = [o for o in sensor.poll() if o.server_port == port]
        assert len(mine) == 1, mine  # the client's socket; not the server side of the connection
        obs = mine[0]
        assert (obs.host_name, obs.source, obs.transport) == ("api.openai.com", "socket_table", "tcp")
        assert (obs.client_port, obs.bytes_out, obs.resolved) == (client_port, 0, True)
        assert obs.process is not None and obs.process.pid == client.pid
        assert obs.process.cmdline[1] == str(script)
        assert [o for o in sensor.poll() if o.server_port == port] == []  # once per connection

        drafts = NetworkDetector(default_endpoint_catalog(), upload_threshold=0).detect(obs)
        assert [d.kind for d in drafts] == [fpb.KIND_AI_SERVICE_ACCESS]
        assert drafts[0].confidence == CONF_DNS_ADDRESS  # an address, not a handshake: no upload
        status = sensor.status()
        assert status.state is SensorState.DEGRADED
        assert status.reason == "no packet capture (not root): socket tables only; no byte counts"
    finally:
        sensor.stop()
        client.kill()
        client.wait()
        listener.close()
    assert len(resolved) == len(names)  # one pass at the bounded rate, then it waits to refresh


def test_resolve_rate_is_validated(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("[sensors.network]\nresolve_per_second = -1\n")
    with pytest.raises(ConfigError, match="resolve_per_second"):
        load_config(config)
    config.write_text("[sensors.network]\nresolve_per_second = 0.5\n")
    assert load_config(config).sensors.network.resolve_per_second == 0.5


_why_not = netns_usable() or ("" if shutil.which("setpriv") else "util-linux's setpriv is missing")


@pytest.fixture
def user_namespace() -> Iterator[tuple[str, Path]]:
    """A namespace (loopback only) whose hosts file knows one AI name, and a work folder
    that uid 65534 owns. Everything is removed afterwards."""
    name = f"umbra-u-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    work = Path(tempfile.mkdtemp(prefix="umbra-nobody-"))
    made_etc = not NETNS_ETC.exists()
    try:
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True)
        etc = NETNS_ETC / name
        etc.mkdir(parents=True)
        (etc / "hosts").write_text("127.0.0.1 localhost\n127.0.0.77 api.anthropic.com\n")
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        os.chown(work, NOBODY, NOBODY)
        yield name, work
    finally:
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
        for pid in pids:  # only this test's processes run in its namespace
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        shutil.rmtree(NETNS_ETC / name, ignore_errors=True)
        if made_etc:
            with contextlib.suppress(OSError):
                NETNS_ETC.rmdir()
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.skipif(bool(_why_not), reason=_why_not or "-")
@pytest.mark.timeout(90)
def test_without_root_the_agent_falls_back_to_socket_tables(user_namespace: tuple[str, Path]) -> None:
    ns, work = user_namespace
    config = work / "agent.toml"
    config.write_text(
        f'[agent]\nstate_dir = "{work / "state"}"\n'
        "[sensors.process]\nenabled = false\ninterval = 0.5\n"
        "[sensors.gpu]\nenabled = false\n[sensors.files]\nenabled = false\n"
        "[sensors.network]\nresolve_per_second = 1000\n"
    )
    script = work / "claude_client.py"
    script.write_text(HOLD)
    as_nobody = [
        "ip",
        "netns",
        "exec",
        ns,
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
    ]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work)}
    server = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c",
         "import socket, time\ns = socket.create_server(('127.0.0.77', 443))\nprint('ready', flush=True)\n"
         "conns = [s.accept() for _ in range(1)]\ntime.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    client = subprocess.Popen(
        [*as_nobody, sys.executable, str(script), "api.anthropic.com", "443"],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert client.stdout is not None and client.stdout.readline().startswith("connected")

    status = subprocess.run(
        [*as_nobody, str(AGENT), "status", "--format", "json", "--config", str(config)],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    network = next(s for s in json.loads(status.stdout)["sensors"] if s["name"] == "network")
    assert network["state"] == "degraded"
    assert network["reason"] == (
        "no packet capture (not root: capturing packets needs CAP_NET_RAW): "
        "socket tables only; no byte counts"
    )

    scan = subprocess.run(
        [*as_nobody, str(AGENT), "scan", "--duration", "4s", "--format", "json", "--config", str(config)],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert scan.returncode == 0, scan.stderr
    findings = [json.loads(line) for line in scan.stdout.splitlines() if line.strip()]
    access = [f for f in findings if f["kind"] == "AI_SERVICE_ACCESS"]
    assert len(access) == 1, (findings, scan.stderr)
    evidence = next(e for e in access[0]["evidence"] if e["type"] == "network")
    assert (evidence["host_name"], evidence["vendor"], evidence["source"]) == (
        "api.anthropic.com",
        "Anthropic",
        "socket_table",
    )
    assert evidence["bytes_out"] == 0
    assert access[0]["process"]["pid"] == client.pid
    assert access[0]["process"]["cmdline"][1:] == [str(script), "api.anthropic.com", "443"]
    assert access[0]["user"] == "nobody"
    assert not [f for f in findings if f["kind"] == "AI_DATA_UPLOAD"]

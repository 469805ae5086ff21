"""The short-flow scenario, shared by the attribution test and its benchmark.

Two namespaces on a veth pair. In the server namespace `short_service.py` answers TLS on TCP
443, DNS on UDP 53 and QUIC Initials on UDP 443, each `delay_ms` after the client's first
bytes (a server's or a resolver's round trip). In the client namespace the live
`NetworkSensor` runs (`sensor_probe.py`), and `short_clients.py` makes `runs` exchanges per
protocol, first from forked children (each a new process that makes one exchange on a new
socket and exits the moment it ends), then from one long-lived process (each exchange a new
socket of an old process). Every run uses its own host name, so its flows are told apart.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netnskit import NetnsPair, make_test_ca

HERE = Path(__file__).parent
MODES = ("fork", "inline")
#: kind -> (transport, the sensor's source, a host name pattern the endpoint catalog matches)
KINDS = {
    "tls": ("tcp", "tls_sni", "{}.api.openai.com"),
    "dns": ("udp", "dns", "{}-dns.openai.com"),
    "quic": ("udp", "quic_sni", "{}.anthropic.com"),
}
#: (mode, kind) -> the host name its flows use
NAMES = {(mode, kind): spec[2].format(mode) for mode in MODES for kind, spec in KINDS.items()}


@dataclass
class Run:
    transport: str
    source: str
    exchanges: list[dict[str, Any]]  # per exchange: pid, port (None: the resolver's own), ms
    observations: list[dict[str, Any]]  # the sensor's, for this run's name

    def attributed(self) -> Score:
        """How the sensor did on this run's flows. A flow is one exchange's socket, matched by
        its client port where the client knows it (TLS, QUIC); the resolver's port is its own,
        so a DNS flow counts when it names one of the run's pids. Raises when a flow is
        attributed to a process that made none of them."""
        kind = (self.transport, self.source)
        ours = [o for o in self.observations if (o["transport"], o["source"]) == kind]
        pids = {e["pid"] for e in self.exchanges}
        strangers = sorted({o["pid"] for o in ours if o["pid"] is not None} - pids)
        if strangers:
            raise AssertionError(f"flows attributed to processes that made none: {strangers}")
        by_port: dict[int, set[int]] = {}  # a port drawn again by a later exchange names both
        for e in self.exchanges:
            if e["port"] is not None:
                by_port.setdefault(e["port"], set()).add(e["pid"])
        score = Score(len(pids))
        # A flow reported again with the same answer (its record expired and a late packet opened
        # another) is one flow: a port and pid count as often as exchanges used them, a miss on a
        # port as often as exchanges used the port.
        used = Counter((e["port"], e["pid"]) for e in self.exchanges if e["port"] is not None)
        ports = Counter(e["port"] for e in self.exchanges if e["port"] is not None)
        reports: Counter[tuple[int, int | None]] = Counter()
        for obs in ours:
            expected = by_port.get(obs["client_port"]) if by_port else {obs["pid"]}
            if not expected:
                continue  # not one of this run's sockets
            if by_port:
                port, pid = obs["client_port"], obs["pid"]
                reports[port, pid] += 1
                if reports[port, pid] > (used[port, pid] if pid in expected else ports[port]):
                    continue
            score.seen += 1
            if obs["pid"] is not None and obs["pid"] in expected:
                score.named += 1
                score.pids_named.add(obs["pid"])
            else:
                score.missed.append(f"port {obs['client_port']} -> {obs['pid']} (expected {expected})")
        return score


@dataclass
class Score:
    pids: int  # processes that made the run's exchanges
    seen: int = 0  # the run's flows the sensor reported
    named: int = 0  # of those, attributed to the pid that made them
    pids_named: set[int] = field(default_factory=set)
    missed: list[str] = field(default_factory=list)


@dataclass
class Scenario:
    runs: dict[tuple[str, str], Run]
    sensor: dict[str, Any]  # the probe's summary: its attribution counters


def run_scenario(work: Path, delay_ms: float, runs: int) -> Scenario:
    """Set up, run every (mode, kind) `runs` times, tear down. Raises with the reason on failure."""
    tls_names = [name for (_, kind), name in NAMES.items() if kind == "tls"]
    ca, cert, key = make_test_ca(work, [name for (_, kind), name in NAMES.items() if kind != "dns"])
    env = {"PATH": "/usr/bin:/bin", "SSL_CERT_FILE": str(ca)}
    # only the TLS names are in the hosts file: the DNS names are asked of the test's server
    with NetnsPair(tls_names, dns_server=True) as ns:
        service = [sys.executable, str(HERE / "short_service.py"), str(cert), str(key), str(delay_ms)]
        server = subprocess.Popen(
            ns.exec_argv(ns.server, [*service, ns.server_ip]),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None and server.stderr is not None
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the short service did not start: {server.stderr.read()}")
        probe = subprocess.Popen(
            ns.exec_argv(ns.client, [sys.executable, str(HERE / "sensor_probe.py")]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert probe.stdout is not None and probe.stderr is not None
        ready = json.loads(probe.stdout.readline() or "{}")
        if ready.get("state") != "active":
            raise RuntimeError(f"the sensor is not active: {ready} {probe.stderr.read()}")
        exchanges: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for (mode, kind), name in NAMES.items():
            argv = [sys.executable, str(HERE / "short_clients.py"), kind, str(runs), name, ns.server_ip, mode]
            clean_env = ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items())]
            client = subprocess.run(
                ns.exec_argv(ns.client, [*clean_env, *argv]), capture_output=True, text=True, timeout=180
            )
            lines = [json.loads(line) for line in client.stdout.splitlines()]
            if client.returncode != 0 or len(lines) != runs:
                raise RuntimeError(f"{mode} {kind} clients failed: {client.stderr[-3000:]}")
            exchanges[mode, kind] = lines
        out, err = probe.communicate("", timeout=60)
        if probe.returncode != 0:
            raise RuntimeError(f"the sensor failed: {err[-3000:]}")
        server.kill()
        server.wait()
    lines = [json.loads(line) for line in out.splitlines()]
    seen = [o for o in lines if "host" in o]
    return Scenario(
        {
            (mode, kind): Run(*KINDS[kind][:2], exchanges[mode, kind], [o for o in seen if o["host"] == name])
            for (mode, kind), name in NAMES.items()
        },
        lines[-1],
    )

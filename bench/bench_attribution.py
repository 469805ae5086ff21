"""Benchmark: attributing short flows to their process, and what it costs per new flow.

The scenario of tests/netns/test_short_flow_attribution.py (two namespaces; a server that
answers each exchange DELAY ms after the client's first bytes; the live `NetworkSensor` in
the client's namespace): per protocol (TLS over TCP, DNS through the C library's resolver,
QUIC Initials) RUNS exchanges from forked children that exit the moment their exchange ends,
and RUNS from one long-lived process, each on a new socket. Run at several server delays, so
the table shows the rate for flows shorter than the 20 ms the sensor promises too.

Reported: the share of flows attributed to the pid that made them, the median exchange time,
and the sensor's cost per new watched flow (sock_diag lookup, inode -> pid, describing the
process), against one walk of the socket table the way psutil (and `ss -p`, lsof) does it,
which is what the sensor did before.

Needs root (network namespaces, packet capture); prints why and exits 0 otherwise.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
from umbra.table import Column, render_table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "netns"))
from netnskit import netns_usable  # noqa: E402
from short_flows import KINDS, MODES, run_scenario  # noqa: E402

from agent.system.sockdiag import SockDiag  # noqa: E402


def _sock_diag_us(n: int = 2000) -> float:
    """One exact-tuple lookup of a live UDP socket, in microseconds."""
    diag = SockDiag()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("127.0.0.1", 9))
        port = sock.getsockname()[1]
        started = time.perf_counter()
        for _ in range(n):
            diag.lookup("udp", "127.0.0.1", port, "127.0.0.1", 9)
        took = time.perf_counter() - started
    diag.close()
    return took / n * 1e6


def _walk_ms(n: int = 5) -> float:
    """One psutil.net_connections() walk (every socket table, every process's descriptors), ms."""
    started = time.perf_counter()
    for _ in range(n):
        psutil.net_connections(kind="inet")
    return (time.perf_counter() - started) / n * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="exchanges per protocol and mode")
    parser.add_argument("--delays", default="0,5,20", help="server delays in ms, comma-separated")
    args = parser.parse_args()
    why_not = netns_usable()
    if why_not:
        print(f"bench_attribution: {why_not}: skipped")
        return 0
    rows: list[list[str]] = []
    costs: list[float] = []
    for delay in [float(d) for d in args.delays.split(",")]:
        with tempfile.TemporaryDirectory() as work:
            scenario = run_scenario(Path(work), delay, args.runs)
        sensor = scenario.sensor
        per_flow = sensor["seconds"] / max(sensor["asked"], 1) * 1e6
        costs.append(per_flow)
        for mode in MODES:
            for kind in KINDS:
                run = scenario.runs[mode, kind]
                score = run.attributed()
                took = statistics.median(e["ms"] for e in run.exchanges)
                goal = ">= 99 %" if delay >= 20 else ""
                rows.append(
                    [
                        f"{kind} {mode}, server delay {delay:g} ms",
                        f"{score.named / max(score.seen, 1) * 100:.0f} %",
                        goal,
                        f"{score.named}/{score.seen} flows, {len(score.pids_named)}/{score.pids} pids; "
                        f"exchange {took:.1f} ms (median)",
                    ]
                )
        rows.append(
            [
                f"cost per new watched flow, delay {delay:g} ms",
                f"{per_flow:.0f} µs",
                "< 1000 µs",
                f"{sensor['asked']} flows, {sensor['found']} named; describing the process "
                f"{sensor['describe_seconds'] / max(sensor['asked'], 1) * 1e6:.0f} µs of it",
            ]
        )
    rows.append(["sock_diag exact-tuple lookup", f"{_sock_diag_us():.1f} µs", "", "one netlink round trip"])
    rows.append(
        [
            "peer: one socket-table walk (psutil)",
            f"{_walk_ms() * 1000:.0f} µs",
            "",
            f"{len(psutil.pids())} processes here; as `ss -p` and lsof; the sensor's way before",
        ]
    )
    print(f"$ sudo python bench/bench_attribution.py --runs {args.runs} --delays {args.delays}")
    columns = [
        Column("figure"),
        Column("value", align="right"),
        Column("goal"),
        Column("note", flex=True),
    ]
    print(render_table(columns, rows, width=160))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

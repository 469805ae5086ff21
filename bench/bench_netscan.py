"""Benchmark: the offline network scan (`scan_pcap`'s engine) over the shared real captures.

Reads every capture in shared/pcaps/pcap (74 files, nDPI's test suite) several rounds and
reports packets per second and CPU per 1,000 packets. When tshark is installed, the peer figure
is tshark doing the comparable job: `tshark -r FILE -Y 'tls.handshake.extensions_server_name or
dns'` (dissect every packet, keep those naming a host), run once on all captures merged.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from umbra.table import Column, render_table

from agent.catalog.endpoints import load_endpoint_catalog
from agent.cli.pcap import analyze_pcap, scan_pcap

PCAPS = Path(__file__).resolve().parents[2] / "shared" / "pcaps" / "pcap"
TSHARK_FILTER = "tls.handshake.extensions_server_name or dns"


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def run_ours(files: list[Path], rounds: int) -> tuple[int, list[float], list[float], int]:
    """(packets per round, wall per round, CPU per round, names found)."""
    walls, cpus = [], []
    packets = names = 0
    for _ in range(rounds):
        packets = names = 0
        wall0, cpu0 = time.perf_counter(), _cpu()
        for path in files:
            observations, stats = analyze_pcap(path)
            packets += stats.packets
            names += len({o.host_name for o in observations})
        walls.append(time.perf_counter() - wall0)
        cpus.append(_cpu() - cpu0)
    return packets, walls, cpus, names


def run_tshark(files: list[Path], tmp: Path) -> tuple[float, float, float] | None:
    """tshark on all the captures merged into one file (one process, so its start-up counts once):
    (wall seconds, CPU seconds, start-up wall seconds measured on an empty capture), or None."""
    tshark, mergecap = shutil.which("tshark"), shutil.which("mergecap")
    if tshark is None or mergecap is None:
        return None
    merged = tmp / "all.pcapng"
    subprocess.run([mergecap, "-a", "-w", str(merged), *map(str, files)], check=True)
    empty = tmp / "empty.pcapng"
    subprocess.run([mergecap, "-w", str(empty), str(files[0])], check=True)

    def timed(path: Path) -> tuple[float, float]:
        before, wall0 = os.times(), time.perf_counter()
        subprocess.run(
            [tshark, "-n", "-r", str(path), "-Y", TSHARK_FILTER],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        after = os.times()
        cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
        return time.perf_counter() - wall0, cpu

    startup = min(timed(empty)[0] for _ in range(3))
    wall, cpu = min(timed(merged) for _ in range(3))
    return wall, cpu, startup


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    files = sorted(PCAPS.glob("*.pcap*")) if PCAPS.is_dir() else []
    if not files:
        print(f"no captures at {PCAPS}: skipped")
        return 0
    catalog = load_endpoint_catalog()
    for path in files:  # warm the imports and caches once; also proves the full detector path runs
        scan_pcap(path, catalog)
    packets, walls, cpus, names = run_ours(files, args.rounds)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    with tempfile.TemporaryDirectory() as tmp:
        peer = run_tshark(files, Path(tmp))
    if peer is None:
        peer_pps, peer_cpu, peer_wall = "tshark not installed", "", ""
    else:
        work = max(peer[0] - peer[2], 1e-6)
        peer_pps = f"tshark: {packets / work:,.0f}/s (start-up {peer[2]:.2f} s excluded)"
        peer_cpu = f"tshark: {peer[1] / packets * 1e6:.1f} ms (start-up included)"
        peer_wall = f"tshark: {peer[0]:.2f} s, one process on the merged file"
    rows = [
        ["captures / packets per round", f"{len(files)} / {packets:,}", "", "nDPI test captures"],
        ["host names found per round", str(names), "", ""],
        ["packets/s (median of rounds)", f"{packets / wall:,.0f}", ">= 50,000", peer_pps],
        ["CPU per 1,000 packets (ms)", f"{cpu / packets * 1000 * 1000:.1f}", "< 20", peer_cpu],
        ["wall per round (s)", f"{wall:.2f}", "", peer_wall],
    ]
    print(f"$ python bench/bench_netscan.py   # {args.rounds} rounds over shared/pcaps, one process, 1 core")
    columns = [Column("figure"), Column("value", align="right"), Column("goal"), Column("peer", flex=True)]
    print(render_table(columns, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

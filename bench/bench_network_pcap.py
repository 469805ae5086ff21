"""Benchmark: `umbra-agent scan --pcap` against tshark, file by file, on the same captures.

For every capture in shared/pcaps/pcap, in one run and interleaved (so both see the same
machine load): the wall time of `umbra-agent scan --pcap FILE --format json` (a new process
per file: start-up, catalog, policy, detection, output) and of
`tshark -n -r FILE -T fields -e tls.handshake.extensions_server_name -e dns.qry.name` (a new
process per file: start-up, dissecting every packet, printing the names). The figure is the
ratio of the totals (goal: at most 1.0). Also the host names each side found, as a sanity
check that both did the job, and our engine alone (in process, no start-up) for scale.

tshark is Debian's (`apt-get install -y tshark`); without it the bench says so and gives our
figures only.
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from umbra.table import Column, render_table

from agent.cli.pcap import analyze_pcap

REPO = Path(__file__).resolve().parents[1]
PCAPS = REPO.parent / "shared" / "pcaps" / "pcap"
AGENT = Path(sys.executable).parent / "umbra-agent"
TSHARK_FIELDS = ["-e", "tls.handshake.extensions_server_name", "-e", "dns.qry.name"]


def _timed(argv: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, out.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    files = sorted(PCAPS.glob("*.pcap*")) if PCAPS.is_dir() else []
    if not files:
        print(f"no captures at {PCAPS}: skipped")
        return 0
    tshark = shutil.which("tshark")
    with tempfile.TemporaryDirectory() as tmp:  # start-up alone: a capture with no packets
        empty = Path(tmp) / "empty.pcap"
        empty.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        our_start = min(_timed([str(AGENT), "scan", "--pcap", str(empty)])[0] for _ in range(3))
        their_start = (
            min(_timed([tshark, "-n", "-r", str(empty), "-T", "fields", *TSHARK_FIELDS])[0] for _ in range(3))
            if tshark
            else 0.0
        )
    ours = theirs = engine = 0.0
    our_findings = their_names = 0
    names_ours: set[str] = set()
    _timed([str(AGENT), "scan", "--pcap", str(files[0]), "--format", "json"])  # warm the page cache
    for path in files:
        wall, out = _timed([str(AGENT), "scan", "--pcap", str(path), "--format", "json"])
        ours += wall
        our_findings += len(out.splitlines())
        start = time.perf_counter()
        observations, _ = analyze_pcap(path)
        engine += time.perf_counter() - start
        names_ours |= {o.host_name for o in observations}
        if tshark is not None:
            wall, out = _timed([tshark, "-n", "-r", str(path), "-T", "fields", *TSHARK_FIELDS])
            theirs += wall
            their_names += len({n for line in out.splitlines() for n in line.split("\t") if n})
    per_file = ours / len(files) * 1000
    if tshark is None:
        peer = "tshark not installed (DEBIAN_FRONTEND=noninteractive apt-get install -y tshark)"
        ratio = "-"
        peer_total = peer_per_file = peer_names = ""
    else:
        peer = "tshark -T fields -e tls...server_name -e dns.qry.name"
        ratio = f"{ours / theirs:.2f}"
        peer_total = f"tshark: {theirs:.2f} s"
        peer_per_file = f"tshark: {theirs / len(files) * 1000:.0f} ms"
        peer_names = f"tshark: {their_names} (names per file, summed)"
    peer_start = f"tshark: {their_start * 1000:.0f} ms" if tshark else ""
    rows = [
        ["captures", str(len(files)), "", "nDPI's test captures (shared/pcaps/pcap)"],
        ["scan --pcap, total wall (s)", f"{ours:.2f}", "", peer_total],
        ["scan --pcap, per file (ms)", f"{per_file:.0f}", "", peer_per_file],
        ["ratio scan --pcap / tshark", ratio, "<= 1.0", peer],
        ["start-up, empty capture (ms)", f"{our_start * 1000:.0f}", "", peer_start],
        ["engine only, in process (s)", f"{engine:.2f}", "", "analyze_pcap: no start-up, no detection"],
        ["distinct host names (ours)", str(len(names_ours)), "", peer_names],
        ["findings printed (AI services)", str(our_findings), "", "the catalog's services in these captures"],
    ]
    print("$ python bench/bench_network_pcap.py   # each capture once, a new process per file, interleaved")
    columns = [Column("figure"), Column("value", align="right"), Column("goal"), Column("peer", flex=True)]
    print(render_table(columns, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

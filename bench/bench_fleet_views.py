"""Fleet views at scale: each read-side view's time over a filled store, and peak memory.

Fills a fresh store (SQLite, or with `--db postgres` a PostgreSQL server started for the run from
Debian's packages with its default, durable settings: tests/pg_server.py) with N findings
(default 1,000,000) over 1,000 hosts straight through the store's group commit (rows built from
a reused message per kind, then store_prepared, as the batch writer does; no gRPC) in a child
process (10,000,000 in a few minutes on SQLite), then brings the kept summaries up to date as
the collector's monitor would, times every fleet view of collector.query in this process (median
of R runs) and prints the process's peak RSS: the views aggregate in SQL, so it must not grow
with N.

    .venv/bin/python bench/bench_fleet_views.py [--findings 1000000] [--hosts 1000] [--runs 3]
        [--db FILE|postgres] [--keep-pg DIR]

`--db postgres --keep-pg DIR` keeps the server's cluster in DIR: the first run fills it, later runs
start the server on it again (migrations applied on open, as `serve` does) and time the same data.

On PostgreSQL the fill ends with VACUUM ANALYZE (what autovacuum does to a table that stops
changing), so the views' index-only scans find the visibility map set.

The mix: half AI-service contacts (most approved), local runtimes, exposed servers, GPU and
fine-tuning, model files drawn from 2,000 distinct weights, downloads, exfiltration, uploads,
health; 2,000 users; last seen spread over 120 days.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "proto"), str(REPO / "tests")]

from umbra import codec  # noqa: E402
from umbra.v1 import finding_pb2 as fpb  # noqa: E402

from collector.query import activity, snapshots  # noqa: E402
from collector.query.documents import fleet_view, hosts_view  # noqa: E402
from collector.query.findings import finding_filter, list_findings  # noqa: E402
from collector.query.risk import refresh, risk_board  # noqa: E402
from collector.storage import Store, open_store  # noqa: E402
from collector.storage.base import FindingRow, PreparedBatch  # noqa: E402

GOAL_MS = 200.0
NOW = time.time()
KINDS = (  # (kind, share, severity, approved share)
    ("AI_SERVICE_ACCESS", 0.50, "low", 0.7),
    ("LOCAL_MODEL_RUNTIME", 0.10, "medium", 0.3),
    ("MODEL_SERVER_EXPOSED", 0.03, "critical", 0.0),
    ("GPU_AI_WORKLOAD", 0.05, "medium", 0.5),
    ("FINE_TUNING", 0.02, "high", 0.2),
    ("MODEL_ARTIFACT", 0.15, "medium", 0.5),
    ("MODEL_DOWNLOAD", 0.04, "low", 0.5),
    ("MODEL_EXFILTRATION", 0.01, "critical", 0.0),
    ("AI_DATA_UPLOAD", 0.05, "high", 0.0),
    ("AGENT_HEALTH", 0.05, "info", 1.0),
)
SERVICES = [(f"api.vendor{i}.ai", f"Vendor{i}") for i in range(60)]
RUNTIMES = ["ollama", "vllm", "llamacpp", "lmstudio", "localai", "tgi"]
PROCESSES = ("python", "curl", "ollama", "code")


class Maker:
    """Findings of the mix as the store's rows (base.FindingRow), fast enough for 10,000,000.

    One Finding message a kind is reused: each finding sets only what differs (id, confidence,
    user, approval, process, the fields of its evidence, times) and is serialized, so every stored
    body is a whole, true finding. Its evidence facts are known from the choices, so rows skip
    the protobuf reads of ingest (base.finding_rows covers that path in the ingest benches)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.templates: dict[str, fpb.Finding] = {}
        for kind, _, severity, _ in KINDS:
            f = fpb.Finding(kind=codec.kind_value(kind), severity=codec.severity_value(severity), count=1)
            f.policy.rule = "bench"
            if kind in ("AI_SERVICE_ACCESS", "AI_DATA_UPLOAD", "MODEL_DOWNLOAD"):
                f.evidence.add().network.host_name = ""
            if kind in ("LOCAL_MODEL_RUNTIME", "MODEL_SERVER_EXPOSED", "GPU_AI_WORKLOAD"):
                f.evidence.add().runtime.runtime_id = ""
            if kind == "MODEL_ARTIFACT":
                f.evidence.add().model_file.CopyFrom(
                    fpb.ModelFileEvidence(format="gguf", size_bytes=4 * 10**9, architecture="llama",
                                          parameter_count=7 * 10**9)
                )  # fmt: skip
            if kind == "MODEL_EXFILTRATION":
                f.evidence.add().transfer.CopyFrom(
                    fpb.TransferEvidence(
                        source_path="/m/w.gguf", destination="/media/usb", size_bytes=4 * 10**9
                    )
                )
            self.templates[kind] = f

    def row(self, host_id: str, n: int) -> FindingRow:
        rng = self.rng
        r = rng.random()
        kind, _, _, approved_share = KINDS[-1]
        for entry in KINDS:
            r -= entry[1]
            if r <= 0:
                kind, _, _, approved_share = entry
                break
        f = self.templates[kind]
        fid, user, process = f"f-{host_id}-{n}", f"user{rng.randrange(2000)}", rng.choice(PROCESSES)
        confidence, approved = rng.choice((0.5, 0.8, 1.0)), rng.random() < approved_share
        f.id, f.host_id, f.confidence, f.user, f.summary = fid, host_id, confidence, user, f"{kind} {n}"
        f.policy.approved = approved
        f.process.pid, f.process.name = 1000 + n % 500, process
        runtime = service = vendor = sha = fmt = arch = path = ""
        nbytes = params = 0
        if kind in ("AI_SERVICE_ACCESS", "AI_DATA_UPLOAD", "MODEL_DOWNLOAD"):
            service, vendor = rng.choice(SERVICES)
            nbytes = rng.randrange(10**7)
            net = f.evidence[0].network
            net.host_name, net.vendor, net.bytes_out = service, vendor, nbytes
        elif kind in ("LOCAL_MODEL_RUNTIME", "MODEL_SERVER_EXPOSED", "GPU_AI_WORKLOAD"):
            runtime = f.evidence[0].runtime.runtime_id = rng.choice(RUNTIMES)
        elif kind == "MODEL_ARTIFACT":
            sha, fmt, arch = f"{rng.randrange(2000):064x}", "gguf", "llama"
            params, nbytes = 7 * 10**9, 4 * 10**9
            path = f"/home/u/models/{sha[:8]}.gguf"
            model = f.evidence[0].model_file
            model.sha256, model.path = sha, path
        elif kind == "MODEL_EXFILTRATION":
            sha, path, nbytes = f"{rng.randrange(2000):064x}", "/m/w.gguf", 4 * 10**9
            f.evidence[0].transfer.sha256 = sha
        last = int((NOW - rng.random() * 120 * 86400) * 1e9)
        first = last - 3600 * 10**9
        f.last_seen.FromNanoseconds(last)
        f.first_seen.FromNanoseconds(first)
        return (
            host_id, fid, f.kind, f.severity, confidence, int(approved), first, last, 1,
            f.SerializeToString(), user, process, runtime, service, vendor, nbytes, sha, fmt, arch, params,
            path,
        )  # fmt: skip


def fill(url: str, findings: int, hosts: int) -> None:
    """Rows straight through the store's group commit (store_prepared, as the batch writer does),
    200 batches of 1,000 a transaction."""
    maker = Maker(random.Random(7))
    per_host = findings // hosts
    with open_store(url) as store:
        pending: list[PreparedBatch] = []
        for host in range(hosts):
            host_id = f"host-{host:05d}"
            for start in range(0, per_host, 1000):
                rows = [maker.row(host_id, n) for n in range(start, min(start + 1000, per_host))]
                pending.append(PreparedBatch(host_id, start // 1000 + 1, rows))
                if len(pending) >= 200:
                    store.store_prepared(pending)
                    pending = []
        if pending:
            store.store_prepared(pending)
    if url.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE) findings")


def timed(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--findings", type=int, default=1_000_000)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--db",
        default=None,
        help="an SQLite file to reuse or keep (default: a temporary one), or `postgres`: a PostgreSQL "
        "server started for the run",
    )
    parser.add_argument(
        "--keep-pg",
        type=Path,
        default=None,
        help="with --db postgres: keep the cluster in this directory and reuse it (filled once)",
    )
    parser.add_argument(
        "--prepare-only",
        action="store_true",
        help="with --keep-pg: fill (when new) and refresh the kept summaries, time nothing",
    )
    parser.add_argument("--fill-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fill_only:
        fill(args.db, args.findings, args.hosts)
        return
    with contextlib.ExitStack() as cleanup:
        tmp = cleanup.enter_context(tempfile.TemporaryDirectory())
        if args.db == "postgres":
            from pg_server import PostgresServer

            if args.keep_pg is None:
                server = PostgresServer(durable=True).start()
                cleanup.callback(server.destroy)
                url, fresh = server.create_database(), True
            else:
                url, fresh = kept_postgres(cleanup, args.keep_pg)
        else:
            db = args.db or str(Path(tmp) / "views.db")
            url, fresh = f"sqlite:///{db}", not Path(db).exists()
        if fresh:
            started = time.perf_counter()
            cmd = [sys.executable, __file__, "--fill-only", "--db", url, "--findings", str(args.findings)]
            subprocess.run([*cmd, "--hosts", str(args.hosts)], check=True)
            took = time.perf_counter() - started
            print(f"filled {args.findings:,} findings over {args.hosts:,} hosts in {took:.0f} s")
        # A kept cluster may hold an older schema: migrate it as `serve` would on start.
        store = open_store(url, create=args.keep_pg is not None)
        if args.prepare_only:
            started = time.perf_counter()
            redone = refresh(store)
            print(f"refreshed {redone:,} keys in {time.perf_counter() - started:.0f} s")
            store.close()
            return
        print_views(store, args.findings, args.runs, "postgres" if args.db == "postgres" else "sqlite")


def kept_postgres(cleanup: contextlib.ExitStack, root: Path) -> tuple[str, bool]:
    """The URL of the bench's database in the cluster kept in `root` (started, stopped at the end)
    and whether it is new (to fill)."""
    from pg_server import PostgresServer

    root = root.resolve()
    fresh = not (root / "data").exists()
    server = PostgresServer(durable=True, root=root).start()
    cleanup.callback(server.stop)
    if fresh:
        server.admin('CREATE DATABASE "views"')
    return server.url("views"), fresh


def print_views(store: Store, findings: int, runs: int, backend: str) -> None:
    # What the collector's monitor does after ingest: bring the kept summaries up to date.
    started = time.perf_counter()
    redone = refresh(store)
    first_refresh = (time.perf_counter() - started) * 1000
    where = finding_filter(kinds=("AI_DATA_UPLOAD",), approved=False)
    views: list[tuple[str, Callable[[], Any]]] = [
        ("fleet (CLI fleet, 50 findings)", lambda: fleet_view(store, 50)),
        ("hosts with risk", lambda: hosts_view(store)),
        ("risk: top hosts and users", lambda: risk_board(store, 20)),
        ("AI services", lambda: activity.services(store)),
        ("runtimes and exposed servers", lambda: activity.runtimes(store)),
        ("GPU and fine-tuning", lambda: activity.compute(store)),
        ("exfiltration and downloads", lambda: activity.transfers(store)),
        ("model census (top 100)", lambda: activity.census(store, 100)),
        ("silent hosts", lambda: activity.silent_hosts(store, 300)),
        ("findings page (100, newest)", lambda: list_findings(store, finding_filter(), 100)),
        ("findings page (unapproved uploads)", lambda: list_findings(store, where, 100)),
        ("daily snapshot (write)", lambda: snapshots.take(store)),
        ("summary refresh, nothing stored since", lambda: refresh(store)),
    ]
    rows = []
    for name, fn in views:
        ms = timed(fn, runs)
        rows.append((name, f"{ms:,.0f}", f"< {GOAL_MS:.0f}", "ok" if ms < GOAL_MS else "over"))
    rows.append((f"summary refresh, all {redone:,} keys dirty", f"{first_refresh:,.0f}", "", "monitor, once"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(("peak RSS of this process (MiB)", f"{peak:.0f}", "flat in N", ""))
    store.close()
    header = (f"view (median ms, {backend})", f"{findings:,} findings", "goal", "")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()

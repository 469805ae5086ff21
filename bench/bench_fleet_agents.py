"""Fleet load: 1,000 concurrent simulated agents over mutual TLS into the collector, on SQLite or
on PostgreSQL (`--db postgres`: a durable server started from Debian's packages, tests/pg_server.py).

Starts `umbra-collector serve` (TLS, its own CA) as its own process, enrolls N agents through
the real Enroll RPC (a token with N uses; each agent its own key and certificate), then runs
the agents in a few worker processes (asyncio, one mTLS channel and one stream per agent). All
streams connect and say Hello first; once the collector holds every stream, every agent sends
B batches of F findings (pre-serialized, at most W batches in flight) and waits for each Ack.

Prints findings/s stored (all acked, counted in the database; from "go" to the last Ack), p50/p95
batch acknowledgement latency, the streams the collector held, and the collector's CPU and peak
RSS. With --runs N it measures N times and prints the median run's table.

    .venv/bin/python bench/bench_fleet_agents.py [--agents 1000] [--workers 4] [--batches 4]
        [--batch-size 250] [--window 2] [--db sqlite|postgres] [--collector-workers 2] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "proto"), str(REPO / "tests")]
BIN = Path(sys.executable).parent

import grpc  # noqa: E402
import psutil  # noqa: E402
from bench_collector_ingest import finding  # noqa: E402
from umbra.contract import PROTOCOL_VERSION  # noqa: E402
from umbra.v1 import agent_pb2 as apb  # noqa: E402
from umbra.v1 import agent_pb2_grpc as apb_grpc  # noqa: E402

from agent.identity.credentials import TLS_CHANNEL_OPTIONS, csr_pem, key_pem, new_key  # noqa: E402
from collector.storage import open_store  # noqa: E402

#: The ingest goal on each backend (README, issue 11).
GOALS = {"sqlite": ">= 100,000", "postgres": ">= 50,000"}

STREAM = "/umbra.v1.StreamService/Stream"


# ---- worker side


def batch_bytes(host: str, agent: int, seq: int, size: int) -> bytes:
    """One agent's batch as it goes on the wire; the findings of the plain-TCP ingest benchmark,
    stamped with the agent's host id as a real agent stamps them."""
    findings = [finding(agent, seq * size + i) for i in range(size)]
    for f in findings:
        f.host_id = host
    return apb.AgentMessage(batch=apb.FindingBatch(sequence=seq, findings=findings)).SerializeToString()


async def run_agent(
    address: str,
    ca: bytes,
    ident: dict[str, Any],
    index: int,
    payloads: list[bytes],
    window: int,
    connected: asyncio.Event,
    go: asyncio.Event,
    latencies: list[float],
    acked: list[float],
    failures: list[str],
) -> None:
    creds = grpc.ssl_channel_credentials(ca, ident["key"].encode(), ident["cert"].encode())
    options = [*TLS_CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
    try:
        async with grpc.aio.secure_channel(address, creds, options=options) as channel:
            call = channel.stream_stream(
                STREAM, request_serializer=None, response_deserializer=apb.CollectorMessage.FromString
            )()
            hello = apb.AgentMessage(
                hello=apb.Hello(
                    host=apb.HostFacts(host_id=ident["host_id"], hostname=f"sim-{index}"),
                    agent_version="bench",
                    protocol_version=PROTOCOL_VERSION,
                )
            )
            await call.write(hello.SerializeToString())
            connected.set()
            await go.wait()
            slots = asyncio.Semaphore(window)
            sent_at: dict[int, float] = {}

            async def reader() -> None:
                done = 0
                async for message in call:
                    if message.HasField("ack"):
                        latencies.append((time.perf_counter() - sent_at[message.ack.sequence]) * 1000)
                        slots.release()
                        done += 1
                        if done == len(payloads):
                            acked.append(time.monotonic())  # system-wide clock: the parent compares
                            return

            acks = asyncio.create_task(reader())
            for seq, payload in enumerate(payloads, start=1):
                await slots.acquire()
                sent_at[seq] = time.perf_counter()
                await call.write(payload)
            await acks
            await call.done_writing()
    except Exception as exc:  # reported, not fatal to the other agents
        failures.append(f"{ident['host_id']}: {type(exc).__name__}: {exc}")
        connected.set()


async def worker_main(spec_path: Path, first: int, count: int, batches: int, size: int, window: int) -> None:
    spec = json.loads(spec_path.read_text())
    ca = spec["ca"].encode()
    idents = spec["agents"][first : first + count]
    payloads = [
        [batch_bytes(ident["host_id"], first + k, seq, size) for seq in range(1, batches + 1)]
        for k, ident in enumerate(idents)
    ]
    go = asyncio.Event()
    connected = [asyncio.Event() for _ in idents]
    latencies: list[float] = []
    acked: list[float] = []
    failures: list[str] = []
    tasks = [
        asyncio.create_task(
            run_agent(
                spec["address"],
                ca,
                ident,
                first + k,
                payloads[k],
                window,
                connected[k],
                go,
                latencies,
                acked,
                failures,
            )
        )
        for k, ident in enumerate(idents)
    ]
    await asyncio.gather(*(e.wait() for e in connected))
    print("connected", flush=True)
    line = await asyncio.to_thread(sys.stdin.readline)
    assert line.strip() == "go"
    go.set()
    await asyncio.gather(*tasks)
    last_ack = max(acked, default=None)
    print(
        json.dumps(
            {"latencies": latencies, "last_ack": last_ack, "failures": failures[:5], "failed": len(failures)}
        ),
        flush=True,
    )


# ---- parent side


def start_collector(work: Path, workers: int, url: str) -> tuple[subprocess.Popen[str], str, str, str]:
    proc = subprocess.Popen(
        [
            str(BIN / "umbra-collector"),
            "serve",
            "--db",
            url,
            "--pki-dir",
            str(work / "umbra-pki"),
            "--grpc",
            "127.0.0.1:0",
            "--enroll",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--log-level",
            "error",
            "--workers",
            str(workers),
            "--monitor-interval",
            "1s",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if found := re.search(r"listening grpc=(\S+) http=(\S+) enroll=(\S+)", line):
            return proc, found.group(1), found.group(3), found.group(2)
    raise SystemExit(f"collector did not start (exit {proc.wait()})")


async def enroll_all(enroll_address: str, ca: bytes, token: str, n: int) -> list[dict[str, Any]]:
    creds = grpc.ssl_channel_credentials(root_certificates=ca)
    out: list[dict[str, Any]] = []
    async with grpc.aio.secure_channel(enroll_address, creds, options=TLS_CHANNEL_OPTIONS) as channel:
        stub = apb_grpc.EnrollServiceStub(channel)
        limit = asyncio.Semaphore(8)  # the collector allows 16 streams per connection

        async def one(i: int) -> None:
            key = new_key()
            async with limit:
                reply = await stub.Enroll(
                    apb.EnrollRequest(token=token, csr_pem=csr_pem(key, f"sim-{i}"), hostname=f"sim-{i}"),
                    timeout=120,
                )
            out.append(
                {
                    "host_id": reply.host_id,
                    "key": key_pem(key).decode(),
                    "cert": reply.certificate_pem.decode(),
                }
            )

        await asyncio.gather(*(one(i) for i in range(n)))
    return out


def health(http: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{http}/healthz", timeout=30) as resp:
        doc: dict[str, Any] = json.load(resp)
    return doc


def stored_findings(url: str) -> int:
    if url.startswith("sqlite:"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as con:
            return int(con.execute("SELECT COUNT(*) FROM findings").fetchone()[0])
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM findings").fetchone()
    return int(row[0]) if row else 0


def postgres_processes(server: Any) -> list[psutil.Process]:
    """The PostgreSQL server's processes (postmaster and its backends), for their CPU."""
    if server is None:
        return []
    pid = int((server.data / "postmaster.pid").read_text().split()[0])
    postmaster = psutil.Process(pid)
    return [postmaster, *postmaster.children(recursive=True)]


def run_once(args: argparse.Namespace) -> tuple[float, list[tuple[str, str, str, str]]]:
    """One measurement: a fresh collector and store; findings/s and the table's rows."""
    pg_server: Any = None
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as cleanup:
        work = Path(tmp)
        url = f"sqlite:///{work / 'bench.db'}"
        if args.db == "postgres":
            from pg_server import PostgresServer

            pg_server = PostgresServer(durable=True).start()
            cleanup.callback(pg_server.destroy)
            url = pg_server.create_database()
        collector, address, enroll_address, http = start_collector(work, args.collector_workers, url)
        try:
            token = subprocess.run(
                [
                    str(BIN / "umbra-collector"),
                    "token",
                    "create",
                    "--db",
                    url,
                    "--pki-dir",
                    str(work / "umbra-pki"),
                    "--uses",
                    str(args.agents),
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            ca = (work / "umbra-pki" / "ca.crt").read_bytes()
            started = time.perf_counter()
            agents = asyncio.run(enroll_all(enroll_address, ca, token, args.agents))
            enroll_s = time.perf_counter() - started
            spec = work / "agents.json"
            spec.write_text(json.dumps({"address": address, "ca": ca.decode(), "agents": agents}))

            per = -(-args.agents // args.workers)
            workers = []
            for w in range(args.workers):
                first, count = w * per, min(per, args.agents - w * per)
                if count <= 0:
                    break
                workers.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            __file__,
                            *("--worker", str(first), str(count), "--spec", str(spec)),
                            *("--batches", str(args.batches), "--batch-size", str(args.batch_size)),
                            *("--window", str(args.window)),
                        ],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                )
            for proc in workers:
                assert proc.stdout is not None
                if proc.stdout.readline().strip() != "connected":
                    raise SystemExit("a worker failed to connect its agents")
            deadline = time.monotonic() + 60
            while (held := health(http)["streams_active"]) < args.agents and time.monotonic() < deadline:
                time.sleep(0.2)

            supervisor = psutil.Process(collector.pid)
            servers = [supervisor, *supervisor.children(recursive=True)]  # serve --workers N

            def collector_cpu() -> float:
                return sum(sum(p.cpu_times()[:2]) for p in servers)

            def collector_rss() -> int:
                return sum(p.memory_info().rss for p in servers)

            database = postgres_processes(pg_server)

            def database_cpu() -> float:
                total = 0.0
                for p in database:
                    with contextlib.suppress(psutil.Error):
                        total += sum(p.cpu_times()[:2])
                return total

            cpu_before = collector_cpu()
            database_before = database_cpu()
            threads_before = {
                (p.pid, t.id): t.user_time + t.system_time for p in servers for t in p.threads()
            }
            loaders = [psutil.Process(proc.pid) for proc in workers]
            loaders_before = sum(sum(p.cpu_times()[:2]) for p in loaders)
            held_rss = peak_rss = collector_rss()
            started = time.perf_counter()
            go_at = time.monotonic()
            for proc in workers:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            results: list[dict[str, Any]] = []
            pending = list(workers)
            loaders_cpu = 0.0
            while pending:
                peak_rss = max(peak_rss, collector_rss())
                with contextlib.suppress(psutil.Error):
                    loaders_cpu = max(
                        loaders_cpu, sum(sum(p.cpu_times()[:2]) for p in loaders) - loaders_before
                    )
                for proc in list(pending):
                    if proc.poll() is not None:
                        pending.remove(proc)
                time.sleep(0.1)
            elapsed = time.perf_counter() - started
            cpu = collector_cpu() - cpu_before
            database_cpu_s = database_cpu() - database_before
            threads = sorted(
                (
                    t.user_time + t.system_time - threads_before.get((p.pid, t.id), 0.0)
                    for p in servers
                    for t in p.threads()
                ),
                reverse=True,
            )
            for proc in workers:
                assert proc.stdout is not None
                results.append(json.loads(proc.stdout.read().strip().splitlines()[-1]))
            time.sleep(1.5)  # every worker has written its counters since
            stats = health(http)
        finally:
            collector.terminate()
            collector.wait(timeout=60)
        stored = stored_findings(url)
        # What the console and `findings` read from the store just filled: newest first, and newest
        # first of a kind the load never sent (the worst case: the whole index is walked).
        reads: dict[str, float] = {}
        with open_store(url, create=False) as store:
            for label, kind in (("newest 100", None), ("newest 100 of an absent kind", "MODEL_EXFILTRATION")):
                t0 = time.perf_counter()
                store.findings(kind=kind, limit=100)
                reads[label] = (time.perf_counter() - t0) * 1000

    latencies = sorted(x for r in results for x in r["latencies"])
    # The ingest window: "go" until the last batch's Ack. Closing 1,000 streams and the load
    # generators' exit follow it (`elapsed`), and are not the collector storing findings.
    last_acks = [r["last_ack"] for r in results if r["last_ack"] is not None]
    ingest_s = max(last_acks) - go_at if last_acks else elapsed
    failed = sum(r["failed"] for r in results)
    total = args.agents * args.batches * args.batch_size
    p95 = latencies[max(0, int(len(latencies) * 0.95) - 1)] if latencies else float("nan")
    rows = [
        (
            "agents enrolled (Enroll RPC)",
            f"{len(agents)} in {enroll_s:.1f} s",
            "",
            "each its own key and certificate",
        ),
        ("streams held by the collector", f"{held}", f"{args.agents}", "mutual TLS, one connection each"),
        ("agents failed", f"{failed}", "0", "; ".join(f for r in results for f in r["failures"])[:80]),
        (
            "findings sent / stored",
            f"{total} / {stored}",
            "equal",
            f"{args.batches} x {args.batch_size} per agent",
        ),
        (
            "findings/s stored and acked",
            f"{total / ingest_s:,.0f}",
            GOALS[args.db],
            f"go to last Ack {ingest_s:.2f} s, {args.db}",
        ),
        (
            "batch ack latency p50 (ms)",
            f"{statistics.median(latencies):.0f}" if latencies else "-",
            "",
            f"window {args.window}/agent",
        ),
        ("batch ack latency p95 (ms)", f"{p95:.0f}", "", ""),
        (
            "collector CPU (s) / wall (s)",
            f"{cpu:.2f} / {elapsed:.2f}",
            "",
            f"{os.cpu_count()} cores, shared; wall to the agents' exit",
        ),
        (
            "collector busiest threads (CPU s)",
            " / ".join(f"{t:.1f}" for t in threads[: 2 * args.collector_workers]),
            "",
            f"{args.collector_workers} processes x (event loop, store writer)",
        ),
        *(
            [("PostgreSQL server CPU (s)", f"{database_cpu_s:.2f}", "", "all its processes, same machine")]
            if pg_server is not None
            else []
        ),
        ("load generators CPU (s)", f"{loaders_cpu:.2f}", "", f"{len(loaders)} processes, same machine"),
        (
            "collector RSS (MiB): streams held / peak",
            f"{held_rss / 2**20:.0f} / {peak_rss / 2**20:.0f}",
            "",
            "peak: batches in flight (16 MiB a process) and gRPC's buffers",
        ),
        (
            "read: newest 100 / of an absent kind (ms)",
            " / ".join(f"{ms:.0f}" for ms in reads.values()),
            "",
            f"over the {stored:,} findings stored",
        ),
        (
            "commits / batches",
            f"{stats['commits']} / {stats['batches_stored']}",
            "",
            "group commit: batches per transaction",
        ),
    ]
    return total / ingest_s, rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4, help="load-generator processes")
    parser.add_argument("--batches", type=int, default=4, help="batches per agent")
    parser.add_argument("--batch-size", type=int, default=250, help="findings per batch")
    parser.add_argument("--window", type=int, default=2, help="batches in flight per agent")
    parser.add_argument(
        "--collector-workers", type=int, default=2, help="collector processes (serve --workers; default 2)"
    )
    parser.add_argument(
        "--db",
        choices=sorted(GOALS),
        default="sqlite",
        help="the store: an SQLite file, or a PostgreSQL server started for the run (durable settings)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=3,
        help="measure N times (a fresh collector each; default 3); the median run's table",
    )
    parser.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(
            worker_main(args.spec, args.worker[0], args.worker[1], args.batches, args.batch_size, args.window)
        )
        return

    runs = []
    for n in range(1, args.runs + 1):
        rate, rows = run_once(args)
        if args.runs > 1:
            print(f"run {n}/{args.runs}: {rate:,.0f} findings/s", flush=True)
        runs.append((rate, rows))
    # The machine is shared: one run can be off by a third either way, so several give the median.
    rates = sorted(rate for rate, _ in runs)
    _, rows = sorted(runs, key=lambda r: r[0])[(len(runs) - 1) // 2]
    if len(runs) > 1:
        rows.append(
            (
                "findings/s of each run",
                " / ".join(f"{r / 1000:.0f}k" for r in rates),
                "",
                "the table: the median run",
            )
        )
    header = ("figure", "value", "goal", "note")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()

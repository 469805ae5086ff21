"""Collector ingest: findings/s stored and acknowledged over real gRPC streams, SQLite store.

Starts `umbra-collector serve` as its own process on loopback, opens S concurrent agent
streams from this process, each sending B batches of N findings and waiting for every Ack,
then prints findings/s stored, p50/p95 batch acknowledgement latency, and the collector's
CPU and peak RSS. The fleet-channel issue's goal (1,000 agents over mTLS, >= 100,000
findings/s on this 2-core machine) is the goal column; this is the plain-TCP baseline.

    .venv/bin/python bench/bench_collector_ingest.py [--streams 10] [--batches 20] [--batch-size 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import psutil
from umbra import codec
from umbra.v1 import agent_pb2 as apb
from umbra.v1 import agent_pb2_grpc as apb_grpc
from umbra.v1 import finding_pb2 as fpb

BIN = Path(sys.executable).parent


def finding(host: int, n: int) -> fpb.Finding:
    f = fpb.Finding(
        id=f"bench-{host}-{n}",
        kind=fpb.KIND_LOCAL_MODEL_RUNTIME,
        severity=fpb.SEVERITY_MEDIUM,
        confidence=0.9,
        count=1,
        summary=f"Ollama running as user{host} (pid {1000 + n}, ollama)",
        process=fpb.Process(
            pid=1000 + n, ppid=1, name="ollama", exe="/usr/bin/ollama", cmdline=["ollama", "serve"]
        ),
        evidence=[
            fpb.Evidence(runtime=fpb.RuntimeEvidence(runtime_id="ollama", matched_on=["name", "cmdline"]))
        ],
        policy=fpb.PolicyDecision(approved=False, rule="default:unapproved"),
    )
    f.first_seen.CopyFrom(codec.timestamp(1.7e9))
    f.last_seen.CopyFrom(codec.timestamp(1.7e9 + n))
    return f


async def agent(address: str, host: int, batches: int, size: int, latencies: list[float]) -> None:
    queue: asyncio.Queue[apb.AgentMessage | None] = asyncio.Queue()

    async def outgoing() -> AsyncIterator[apb.AgentMessage]:
        while (m := await queue.get()) is not None:
            yield m

    async with grpc.aio.insecure_channel(address) as channel:
        call = apb_grpc.StreamServiceStub(channel).Stream(outgoing())
        hello = apb.Hello(host=apb.HostFacts(host_id=f"bench-host-{host}", hostname=f"bench-{host}"))
        queue.put_nowait(apb.AgentMessage(hello=hello))
        payloads = [[finding(host, b * size + i) for i in range(size)] for b in range(batches)]
        sent_at: dict[int, float] = {}
        for seq, findings in enumerate(payloads, start=1):
            sent_at[seq] = time.perf_counter()
            queue.put_nowait(apb.AgentMessage(batch=apb.FindingBatch(sequence=seq, findings=findings)))
        async for message in call:
            if message.HasField("ack"):
                latencies.append((time.perf_counter() - sent_at[message.ack.sequence]) * 1000)
                if message.ack.sequence == batches:
                    break
        queue.put_nowait(None)
        call.cancel()


async def drive(address: str, streams: int, batches: int, size: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(*(agent(address, h, batches, size, latencies) for h in range(streams)))
    return time.perf_counter() - started, latencies


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        db = Path(work) / "bench.db"
        server = subprocess.Popen(
            # --insecure: this is the plain-TCP baseline; bench_fleet_agents.py measures mutual TLS.
            [
                str(BIN / "umbra-collector"),
                "serve",
                "--db",
                f"sqlite:///{db}",
                "--grpc",
                "127.0.0.1:0",
                "--insecure",
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        assert server.stderr is not None
        address = ""
        for line in server.stderr:
            if found := re.search(r"listening grpc=(\S+)", line):
                address = found.group(1)
                break
        proc = psutil.Process(server.pid)
        cpu_before = proc.cpu_times()
        peak_rss = 0

        async def sample() -> None:
            nonlocal peak_rss
            while True:
                peak_rss = max(peak_rss, proc.memory_info().rss)
                await asyncio.sleep(0.1)

        async def run() -> tuple[float, list[float]]:
            sampler = asyncio.create_task(sample())
            try:
                return await drive(address, args.streams, args.batches, args.batch_size)
            finally:
                sampler.cancel()

        elapsed, latencies = asyncio.run(run())
        cpu_after = proc.cpu_times()
        server.terminate()
        server.wait(timeout=30)
        with sqlite3.connect(db) as con:
            stored = con.execute("SELECT COUNT(*) FROM findings").fetchone()[0]
    total = args.streams * args.batches * args.batch_size
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    latencies.sort()
    rows = [
        ("findings sent / stored", f"{total} / {stored}", "equal", ""),
        (
            "findings/s stored and acked",
            f"{total / elapsed:,.0f}",
            ">= 100,000",
            "1,000 agents over mTLS: bench_fleet_agents.py",
        ),
        (
            "batch ack latency p50 (ms)",
            f"{statistics.median(latencies):.0f}",
            "",
            f"{args.batch_size}/batch, all queued at once",
        ),
        ("batch ack latency p95 (ms)", f"{latencies[int(len(latencies) * 0.95) - 1]:.0f}", "", ""),
        ("collector CPU (s) / wall (s)", f"{cpu:.2f} / {elapsed:.2f}", "", "2 cores here"),
        ("collector peak RSS (MiB)", f"{peak_rss / 2**20:.0f}", "", ""),
    ]
    header = ("figure", "value", "goal", "note")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()

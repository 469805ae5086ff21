"""A simulated agent for the fleet fault tests: the real spool and the real stream client, with a
synthetic finding source instead of sensors, so a test can produce exactly N findings at a known
rate and check that each one reaches the collector once.

    python tests/fleet/loadgen.py --state-dir DIR --count N [--chunk 500] [--interval 0.05] ...

The agent must be enrolled in DIR (identity.json), or `--insecure` given. Findings are
`<prefix>-<i>` for i in [0, N); progress is kept in DIR/loadgen.progress after each spool append,
so a restarted generator (after SIGKILL) continues where it was; a chunk appended but not yet
recorded is appended again, which the spool and the collector absorb (same ids). Prints
"ready host=<id>" once streaming starts, "generated" when all N are spooled, and with
--exit-when-drained exits 0 once the spool is empty (everything acknowledged).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "proto")]

from umbra import codec  # noqa: E402
from umbra.contract import PROTOCOL_VERSION  # noqa: E402
from umbra.v1 import agent_pb2 as apb  # noqa: E402
from umbra.v1 import finding_pb2 as fpb  # noqa: E402

from agent.delivery.spool import Spool  # noqa: E402
from agent.delivery.stream import Backoff, StreamClient  # noqa: E402
from agent.identity.credentials import credentials_loader, load_identity  # noqa: E402

SEVERITIES = {name: codec.severity_value(name) for name in codec.SEVERITY_NAMES}
T0 = 1_750_000_000.0


def make_finding(
    host_id: str,
    prefix: str,
    i: int,
    severity: fpb.Severity.ValueType,
    process: str = "ollama",
    user: str = "",
) -> fpb.Finding:
    f = fpb.Finding(
        id=f"{prefix}-{i:07d}",
        kind=fpb.KIND_LOCAL_MODEL_RUNTIME,
        severity=severity,
        confidence=0.9,
        host_id=host_id,
        count=1,
        summary=f"load finding {i}",
        user=user,
        process=fpb.Process(pid=1000 + i % 30000, name=process, cmdline=[process, "serve"], username=user),
        evidence=[fpb.Evidence(runtime=fpb.RuntimeEvidence(runtime_id="ollama", matched_on=["name"]))],
        policy=fpb.PolicyDecision(approved=False, rule="default:unapproved"),
    )
    f.first_seen.CopyFrom(codec.timestamp(T0 + i))
    f.last_seen.CopyFrom(codec.timestamp(T0 + i))
    return f


def read_progress(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--address", default="", help="stream address (default: the enrolled collector)")
    parser.add_argument(
        "--insecure", action="store_true", help="plain gRPC (the collector's --insecure mode)"
    )
    parser.add_argument("--host-id", default="", help="with --insecure: the host id to claim")
    parser.add_argument("--prefix", default="f")
    parser.add_argument("--hostname", default="", help="the host name Hello reports")
    parser.add_argument("--process", default="ollama", help="the findings' process name")
    parser.add_argument("--user", default="", help="the findings' user")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--chunk", type=int, default=500, help="findings per spool append")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between appends")
    parser.add_argument("--severities", default="medium", help="comma list, cycled over findings")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--max-in-flight", type=int, default=4)
    parser.add_argument("--max-findings", type=int, default=1_000_000, help="spool bound")
    parser.add_argument("--heartbeat", type=float, default=1.0)
    parser.add_argument("--backoff-initial", type=float, default=0.2)
    parser.add_argument("--backoff-max", type=float, default=1.0)
    parser.add_argument("--exit-when-drained", action="store_true")
    parser.add_argument("--no-stream", action="store_true", help="only spool (a collector-less agent)")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s loadgen %(levelname)s %(name)s: %(message)s"
    )

    identity = None if args.insecure else load_identity(args.state_dir)
    if identity is None and not args.insecure:
        print("not enrolled", file=sys.stderr)
        return 2
    host_id = identity.host_id if identity is not None else args.host_id
    address = args.address or (identity.collector if identity is not None else "")
    severities = [SEVERITIES[s] for s in args.severities.split(",")]
    spool = Spool(args.state_dir / "spool.db", max_findings=args.max_findings)
    progress_path = args.state_dir / "loadgen.progress"

    def hello() -> apb.Hello:
        return apb.Hello(
            host=apb.HostFacts(
                host_id=host_id, hostname=args.hostname or f"loadgen-{os.getpid()}", os="Linux"
            ),
            agent_version="loadgen",
            protocol_version=PROTOCOL_VERSION,
        )

    def heartbeat() -> apb.Heartbeat:
        return apb.Heartbeat(
            sent_at=codec.timestamp(time.time()), spool_depth=spool.depth(), dropped_total=spool.dropped()
        )

    client = StreamClient(
        address,
        spool,
        hello,
        heartbeat,
        batch_size=args.batch_size,
        max_in_flight=args.max_in_flight,
        heartbeat_interval=args.heartbeat,
        backoff=Backoff(initial=args.backoff_initial, multiplier=1.5, maximum=args.backoff_max, jitter=0.5),
        credentials=None if args.insecure else credentials_loader(args.state_dir),
    )
    stop = asyncio.Event()

    async def produce() -> None:
        i = read_progress(progress_path)
        while i < args.count:
            end = min(i + args.chunk, args.count)
            findings = [
                make_finding(
                    host_id, args.prefix, n, severities[n % len(severities)], args.process, args.user
                )
                for n in range(i, end)
            ]
            await asyncio.to_thread(spool.append, findings, client.send_cursor)
            progress_path.write_text(str(end))
            client.notify()
            i = end
            if args.interval > 0:
                await asyncio.sleep(args.interval)
        print("generated", flush=True)
        if args.exit_when_drained:
            while spool.depth() > 0:
                await asyncio.sleep(0.1)
            # One more heartbeat after the last ack, so the collector's view is current.
            await asyncio.sleep(args.heartbeat * 1.5)
            print("drained", flush=True)
            stop.set()

    print(f"ready host={host_id}", flush=True)
    tasks = [produce()] if args.no_stream else [produce(), client.run(stop)]
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks)
    spool.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

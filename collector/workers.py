"""`umbra-collector serve --workers N`: N collector processes behind the same ports.

One Python process holds one GIL, and at fleet scale the collector is CPU-bound (parsing,
validating and writing findings), so a large single host runs several collector processes,
as DESIGN.md's "several stateless collector processes behind a TCP load balancer" does across
hosts; here the kernel is the balancer (SO_REUSEPORT spreads new connections over the processes
listening on a port). They share the PKI and the store (SQLite lets one process write at a time;
each groups many batches per transaction) and reload revocations and the policy from it.

This supervisor starts worker 0 first (it resolves port 0 to real ports and alone serves the
HTTP API and marks silent hosts), then the others on the same ports; it restarts a worker that
dies, and stops them all on SIGTERM/SIGINT. Workers die with it (PR_SET_PDEATHSIG), so a
SIGKILLed supervisor leaves no orphan holding the ports.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

_LISTENING = re.compile(r"listening grpc=(\S+) http=(\S+) enroll=(\S+) tls=(\S+) store=(\S+)")
_PR_SET_PDEATHSIG = 1
START_TIMEOUT = 60.0


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the supervisor dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class _Worker:
    def __init__(self, index: int, argv: list[str]) -> None:
        self.index = index
        self.argv = argv
        self.proc: subprocess.Popen[str] | None = None
        self.listening: re.Match[str] | None = None
        self.ready = threading.Event()

    def start(self) -> None:
        self.ready.clear()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", *self.argv],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        threading.Thread(target=self._forward, daemon=True).start()

    def _forward(self) -> None:
        """The worker's stderr to ours (prefixed), noting its listening line."""
        proc = self.proc
        assert proc is not None and proc.stderr is not None
        for line in proc.stderr:
            found = _LISTENING.search(line)
            if found and not self.ready.is_set():
                self.listening = found
                self.ready.set()
                continue
            sys.stderr.write(f"[worker {self.index}] {line}")
        self.ready.set()  # it exited before listening: wake whoever waits

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)


def supervise(args: argparse.Namespace, argv: list[str], prog: str) -> int:
    """Run `args.workers` collector processes on the same ports until SIGTERM/SIGINT."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stats_dir = Path(tempfile.mkdtemp(prefix="umbra-collector-stats-"))
    base = [*argv, "--stats-dir", str(stats_dir)]
    workers = [_Worker(0, [*base, "--worker-index", "0"])]
    try:
        workers[0].start()
        if not workers[0].ready.wait(START_TIMEOUT) or workers[0].listening is None:
            print(f"{prog}: error: worker 0 did not start", file=sys.stderr)
            return 1
        grpc_addr, http_addr, enroll_addr, tls, store = workers[0].listening.groups()
        fixed = ["--grpc", grpc_addr, "--no-http"]
        if enroll_addr != "off":
            fixed += ["--enroll", enroll_addr]
        workers[0].argv += ["--grpc", grpc_addr] + (["--enroll", enroll_addr] if enroll_addr != "off" else [])
        if http_addr != "off":
            workers[0].argv += ["--http", http_addr]
        for index in range(1, args.workers):
            worker = _Worker(index, [*base, "--worker-index", str(index), *fixed])
            worker.start()
            workers.append(worker)
        for worker in workers[1:]:
            if not worker.ready.wait(START_TIMEOUT) or worker.listening is None:
                print(f"{prog}: error: worker {worker.index} did not start", file=sys.stderr)
                return 1
        print(
            f"{prog}: listening grpc={grpc_addr} http={http_addr} enroll={enroll_addr} tls={tls} "
            f"store={store} workers={args.workers}",
            file=sys.stderr,
            flush=True,
        )
        restarts: list[float] = []
        while not stop.wait(0.2):
            for worker in workers:
                assert worker.proc is not None
                code = worker.proc.poll()
                if code is None:
                    continue
                now = time.monotonic()
                restarts = [t for t in restarts if now - t < 60] + [now]
                if len(restarts) > 5 * args.workers:
                    print(
                        f"{prog}: error: workers keep dying (last: {worker.index}, exit {code})",
                        file=sys.stderr,
                    )
                    return 1
                print(
                    f"{prog}: worker {worker.index} exited ({code}); restarting it",
                    file=sys.stderr,
                    flush=True,
                )
                worker.start()
        return 0
    finally:
        for worker in workers:
            worker.stop()
        deadline = time.monotonic() + args.grace + 30
        for worker in workers:
            if worker.proc is None:
                continue
            try:
                worker.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
        shutil.rmtree(stats_dir, ignore_errors=True)

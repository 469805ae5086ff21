"""Real processes for the fleet tests: a TLS collector that can be SIGKILLed and restarted on the
same ports, enrolled load-generating agents, and queries on the collector's SQLite file."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from collector_proc import CollectorProc, Drain, enroll_agent

HERE = Path(__file__).resolve().parent


def enroll(collector: CollectorProc, state_dir: Path, token: str | None = None) -> str:
    """`umbra-agent enroll` as a process; returns the host id."""
    state_dir.mkdir(parents=True, exist_ok=True)
    config = state_dir / "agent.toml"
    config.write_text(f'[agent]\nstate_dir = "{state_dir}"\n')
    return enroll_agent(collector, config, token)


class LoadAgent:
    """tests/fleet/loadgen.py as a child process."""

    def __init__(self, state_dir: Path, count: int, *extra: str) -> None:
        self.state_dir = state_dir
        self.count = count
        self.extra = list(extra)
        self.proc: subprocess.Popen[str] | None = None
        self.out: Drain | None = None
        self.err: Drain | None = None
        self.host_id = ""

    def start(self, *more: str) -> LoadAgent:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "loadgen.py"),
                "--state-dir",
                str(self.state_dir),
                "--count",
                str(self.count),
                *self.extra,
                *more,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready host="):
            raise AssertionError(f"loadgen did not start: {line}{self.proc.stderr.read()}")
        self.host_id = line.split("=", 1)[1].strip()
        self.out = Drain(self.proc.stdout)
        self.err = Drain(self.proc.stderr)
        return self

    def said(self, word: str) -> bool:
        return self.out is not None and any(line.strip() == word for line in self.out.lines)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"loadgen {self.host_id} still running after {timeout:.0f} s; stderr: "
                f"{self.err.text()[-2000:] if self.err else ''}"
            ) from None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def spool_depth(self) -> int:
        path = self.state_dir / "spool.db"
        if not path.exists():
            return -1
        conn = sqlite3.connect(path, timeout=30)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        finally:
            conn.close()


def build_finding(finding_id: str, host_id: str = "", last_seen: float = 1_750_000_000.0) -> Any:
    """A small valid finding (the wire type)."""
    from umbra import codec
    from umbra.v1 import finding_pb2 as fpb

    f = fpb.Finding(
        id=finding_id,
        kind=fpb.KIND_LOCAL_MODEL_RUNTIME,
        severity=fpb.SEVERITY_HIGH,
        confidence=1.0,
        host_id=host_id,
        count=1,
        summary=f"finding {finding_id}",
        policy=fpb.PolicyDecision(approved=False, rule="test"),
    )
    f.last_seen.CopyFrom(codec.timestamp(last_seen))
    f.first_seen.CopyFrom(codec.timestamp(last_seen - 60))
    return f

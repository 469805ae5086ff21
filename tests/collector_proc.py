"""`umbra-collector serve` (mutual TLS, its own CA) as a child process that tests can SIGKILL and
restart on the same ports, with its log kept, its CLI and its database (its SQLite file, or a
PostgreSQL URL) at hand. Shared by the end-to-end test and the fleet tests."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from conftest import cli

LISTENING = re.compile(r"listening grpc=(\S+) http=(\S+) enroll=(\S+)")


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60.0, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Drain(threading.Thread):
    """Reads a child's stream so it never blocks on a full pipe; keeps the lines."""

    def __init__(self, stream: Any) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.lines: list[str] = []
        self.start()

    def run(self) -> None:
        for line in self.stream:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)


class CollectorProc:
    """`umbra-collector serve` with TLS as a child process; restartable on the same ports."""

    def __init__(self, work: Path, *extra: str, db_url: str = "") -> None:
        self.work = work
        self.db = work / "collector.db"
        self.db_url = db_url  # a postgresql:// URL; empty: the SQLite file `db`
        self.pki = work / "pki"
        self.grpc = "127.0.0.1:0"
        self.enroll = "127.0.0.1:0"
        self.http = "off"  # the console's address when started with --http
        self.extra = list(extra)
        self.proc: subprocess.Popen[str] | None = None
        self.logs: list[Drain] = []
        self.starts = 0
        self.start_seconds = 0.0  # how long the last start took (this machine's pace)

    @property
    def url(self) -> str:
        return self.db_url or f"sqlite:///{self.db}"

    def start(self) -> None:
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [
                cli("umbra-collector"),
                "serve",
                "--db",
                self.url,
                "--pki-dir",
                str(self.pki),
                "--grpc",
                self.grpc,
                "--enroll",
                self.enroll,
                "--log-level",
                "warning",
                "--grace",
                "1s",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            if found := LISTENING.search(line):
                self.grpc, self.http, self.enroll = found.groups()
                self.logs.append(Drain(self.proc.stderr))
                self.starts += 1
                self.start_seconds = time.monotonic() - started
                return
        self.proc.kill()
        raise AssertionError(f"collector did not start: {self.proc.stderr.read()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def pause(self) -> None:
        """SIGSTOP: the collector holds its connections but stores and acknowledges nothing."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_text(self) -> str:
        return "".join(d.text() for d in self.logs)

    def run_cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [cli("umbra-collector"), *args], capture_output=True, text=True, timeout=60, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"umbra-collector {' '.join(args)}: {result.stderr}")
        return result

    def token(self, uses: int = 1, ttl: str = "1h") -> str:
        out = self.run_cli(
            "token", "create", "--db", self.url, "--pki-dir", str(self.pki), "--uses", str(uses), "--ttl", ttl
        )
        return out.stdout.strip()

    def cli_json(self, *args: str) -> Any:
        """`umbra-collector ARGS --db ... --format json`, parsed (`findings` prints JSON lines)."""
        out = self.run_cli(*args, "--db", self.url, "--format", "json").stdout
        if args[0] == "findings":
            return [json.loads(line) for line in out.splitlines() if line.strip()]
        return json.loads(out)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run SQL on the collector's database (qmark placeholders on either backend)."""
        if self.db_url:
            import psycopg

            with psycopg.connect(self.db_url, autocommit=True) as pg:
                return pg.execute(sql.replace("?", "%s").encode(), params).fetchall()
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()


def agent_config(path: Path, state_dir: Path, more: str = "") -> Path:
    """An agent config for tests against a local collector: quick polls, heartbeats and
    reconnects; the process sensor alone unless `more` (TOML appended) turns others on."""
    path.write_text(f"""
[agent]
state_dir = "{state_dir}"
[collector]
heartbeat_interval = 1.0
backoff_initial = 0.2
backoff_max = 1.0
[sensors.process]
interval = 0.3
[sensors.gpu]
enabled = false
[sensors.network]
enabled = false
{more}""")
    return path


def enroll_agent(collector: CollectorProc, config: Path, token: str | None = None) -> str:
    """`umbra-agent enroll --config CONFIG` as a process, with a fresh token; returns the host id."""
    result = subprocess.run(
        [
            *(cli("umbra-agent"), "enroll", "--collector", collector.enroll),
            *("--token", token or collector.token(), "--config", str(config)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    found = re.search(r"enrolled as (\S+);", result.stdout)
    assert found, result.stdout
    return found.group(1)


def start_agent(config: Path) -> subprocess.Popen[str]:
    """`umbra-agent run --config CONFIG` as a child process, its log kept for `stop_child`."""
    return subprocess.Popen(
        [cli("umbra-agent"), "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop_child(proc: subprocess.Popen[str]) -> str:
    """SIGTERM to an agent or collector started with its log on a pipe: a clean exit within 30 s
    (else the test fails), and the log."""
    proc.send_signal(signal.SIGTERM)
    try:
        _, log = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"{proc.args} did not stop on SIGTERM") from None
    assert proc.returncode == 0, log
    return str(log)

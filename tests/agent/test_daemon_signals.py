"""A real `umbra-agent run` under the signals systemd sends it: SIGTERM (stop) drains what it
found into the spool and closes it; SIGHUP (`systemctl reload`) reads the config again, applies
a good one and refuses a broken one while it keeps running. Logs as JSON lines when asked."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from collector_proc import Drain, wait_for
from conftest import SpawnRuntime, cli, port_or_free

from agent.delivery.spool import Spool


def _unused_port() -> int:
    """Nothing listens here: the agent keeps its findings in the spool, as with a collector down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _write_config(path: Path, state: Path, extra: str = "", port: int = 0) -> None:
    path.write_text(
        f'[agent]\nhost_id = "signal-host"\nstate_dir = "{state}"\n{extra}'
        f'[collector]\naddress = "127.0.0.1:{port or _unused_port()}"\n'
        # files off: the test is about the daemon's life, not a walk of this host's homes
        "[sensors.files]\nenabled = false\n[sensors.process]\ninterval = 0.5\n"
    )


class Daemon:
    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [cli("umbra-agent"), "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log = Drain(self.proc.stderr)  # it starts itself

    def lines(self) -> list[str]:
        return self.log.text().splitlines()

    def wait_log(self, what: str, timeout: float = 60) -> None:
        wait_for(f"{what!r} in the agent's log", lambda: what in self.log.text(), timeout=timeout)


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()


def _spooled(spool: Path) -> int:
    if not spool.exists():
        return 0
    with closing(sqlite3.connect(spool)) as db:  # closed: the daemon's close must be the last one
        try:
            return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
        except sqlite3.OperationalError:  # the daemon has created the file, not yet its tables
            return 0


def test_sigterm_drains_and_closes_the_spool(
    tmp_path: Path, spawn_runtime: SpawnRuntime, daemons: list[Daemon]
) -> None:
    spawn_runtime(["ollama", "serve"], listen=[f"127.0.0.1:{port_or_free(11434)}"])
    config, state = tmp_path / "agent.toml", tmp_path / "state"
    _write_config(config, state)
    daemon = Daemon(config)
    daemons.append(daemon)
    spool = state / "spool.db"
    wait_for("the runtime's finding in the spool", lambda: _spooled(spool) >= 1)
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=30) == 0, daemon.log.text()
    daemon.log.join(timeout=5)
    assert not Path(f"{spool}-wal").exists()  # closed: SQLite folded its write-ahead log back in
    reopened = Spool(spool)
    depth = reopened.depth()
    reopened.close()
    assert depth >= 1
    assert f"spool closed with {depth} findings waiting" in daemon.log.text()


def test_sighup_reloads_the_config_and_refuses_a_broken_one(tmp_path: Path, daemons: list[Daemon]) -> None:
    config, state, port = tmp_path / "agent.toml", tmp_path / "state", _unused_port()
    _write_config(config, state, port=port)
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_log("umbra-agent 0.")  # started: text lines for now
    assert not daemon.lines()[0].startswith("{")

    # only the log format changed: applied in place, nothing restarts
    _write_config(config, state, 'log_format = "json"\n', port=port)
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_log("configuration reloaded: logging changed")
    lines = daemon.lines()
    switched = next(i for i, line in enumerate(lines) if "logging changed" in line)
    assert not [line for line in lines if "restarting" in line or "spool closed" in line]

    # the network sensor off: the daemon starts again with it, in the same process
    _write_config(config, state, 'log_format = "json"\n[sensors.network]\nenabled = false\n', port=port)
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_log('"message": "umbra-agent 0.')
    records = [json.loads(line) for line in daemon.lines()[switched:]]  # one JSON object a line
    assert {"time", "level", "logger", "message", "pid"} <= set(records[0])
    assert records[0]["message"] == "SIGHUP: configuration reloaded: logging changed"
    messages = [r["message"] for r in records]
    restart = next(i for i, m in enumerate(messages) if "restarting the sensors" in m)
    assert any(m.startswith("umbra-agent stopped: spool closed") for m in messages[restart:])
    assert {r["pid"] for r in records} == {daemon.proc.pid}  # restarted in place: the same process
    sensors = [m for m in messages[restart:] if m.startswith("sensor ")]
    assert sensors and not any(m.startswith("sensor network") for m in sensors)

    # a broken config is refused and the daemon keeps running with the one it has
    config.write_text('[agent]\nlog_format = "xml"\n')
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_log("configuration refused")
    refused = json.loads(next(line for line in daemon.lines() if "configuration refused" in line))
    assert refused["level"] == "error" and "log_format 'xml' is not text/json" in refused["message"]
    assert daemon.proc.poll() is None
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=30) == 0, daemon.log.text()

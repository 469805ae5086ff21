"""`umbra-agent status` of a running daemon, and the daemon's watchdog over itself: real
`umbra-agent run` processes, read from outside as an operator reads them (the status command, the
status file, the spool)."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from collector_proc import CollectorProc, wait_for
from conftest import cli
from umbra.v1 import finding_pb2 as fpb


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(tmp_path: Path, extra: str = "") -> Path:
    home = tmp_path / "home"
    (home / "src").mkdir(parents=True, exist_ok=True)
    for i in range(200):
        (home / "src" / f"f{i}.txt").write_text("text\n" * (i + 1))
    path = tmp_path / "agent.toml"
    path.write_text(
        f'[agent]\nhost_id = "status-host"\nstate_dir = "{tmp_path / "state"}"\nstatus_interval = 0.5\n'
        f'[collector]\naddress = "127.0.0.1:{_closed_port()}"\n'
        f"[sensors.process]\ninterval = 0.5\n"
        f'[sensors.files]\nhomes = ["{home}"]\ndefault_roots = false\n{extra}'
    )
    return path


@pytest.fixture
def daemons() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _run(config: Path, daemons: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    """The daemon, its log in agent.log beside its config."""
    with (config.parent / "agent.log").open("w") as log:
        proc = subprocess.Popen(
            [cli("umbra-agent"), "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )
    daemons.append(proc)
    return proc


def _status(config: Path, *fmt: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [cli("umbra-agent"), "status", "--config", str(config), *fmt],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result


def _status_json(config: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(_status(config, "--format", "json").stdout)
    return doc


def _health_findings(state: Path) -> list[fpb.Finding]:
    """The AGENT_HEALTH findings waiting in the daemon's spool (no collector takes them here)."""
    if not (state / "spool.db").exists():
        return []
    db = sqlite3.connect(state / "spool.db")
    try:
        rows = db.execute("SELECT payload FROM outbox").fetchall()
    finally:
        db.close()
    findings = [fpb.Finding.FromString(row[0]) for row in rows]
    return [f for f in findings if f.kind == fpb.KIND_AGENT_HEALTH]


def test_status_reads_the_running_daemon_then_says_it_stopped(
    tmp_path: Path, daemons: list[subprocess.Popen[str]]
) -> None:
    config = _config(tmp_path)
    proc = _run(config, daemons)
    doc = wait_for("the daemon's status", lambda: (d := _status_json(config))["daemon"]["running"] and d)
    daemon = doc["daemon"]
    assert daemon["pid"] == proc.pid
    assert daemon["version"]
    assert {s["name"] for s in doc["sensors"]} >= {"process", "files"}
    assert all(s["state"] in {"active", "degraded", "inactive"} for s in doc["sensors"])
    assert doc["spool"]["path"] == str(tmp_path / "state" / "spool.db")
    assert doc["spool"]["depth"] is not None and doc["spool"]["dropped"] == 0
    connection = doc["connection"]
    assert connection["connected"] is False and connection["last_ack_at"] is None
    assert connection["address"] == doc["collector"]
    # The daemon's own cost, as it measured it; the watchdog is on and has nothing to do.
    assert 10 * 2**20 < daemon["process"]["rss_bytes"] <= daemon["process"]["peak_rss_bytes"]
    assert daemon["watchdog"]["state"] == "active" and daemon["watchdog"]["shed"] == []
    assert daemon["watchdog"]["memory_ceiling_bytes"] == 120 * 2**20
    status_file = tmp_path / "state" / "status.json"
    assert stat.S_IMODE(status_file.stat().st_mode) == 0o600

    table = _status(config).stdout
    assert f"daemon     running: pid {proc.pid}" in table
    assert "watchdog   ok" in table and "resident" in table
    assert "SENSOR" in table and "files" in table

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not status_file.exists()
    after = _status_json(config)
    assert after["daemon"]["running"] is False
    assert after["connection"] is None
    assert {s["name"] for s in after["sensors"]} >= {"process", "files"}  # what the host allows
    assert "daemon     not running" in _status(config).stdout


def test_a_killed_daemons_status_file_is_stale(tmp_path: Path, daemons: list[subprocess.Popen[str]]) -> None:
    config = _config(tmp_path)
    proc = _run(config, daemons)
    wait_for("the daemon's status", lambda: _status_json(config)["daemon"]["running"])
    proc.kill()  # no clean stop: the file stays behind
    proc.wait()
    assert (tmp_path / "state" / "status.json").exists()
    daemon = _status_json(config)["daemon"]
    assert daemon["running"] is False
    assert f"process {proc.pid} is gone" in daemon["why"]
    assert daemon["last_written_at"] > 0


def test_over_its_memory_ceiling_the_agent_sheds_work_and_reports_it(
    tmp_path: Path, daemons: list[subprocess.Popen[str]]
) -> None:
    # A ceiling below what the interpreter alone needs: the agent is over it from its first check.
    config = _config(
        tmp_path,
        "[watchdog]\nmemory_mib = 16\ninterval = 0.5\ncpu_window = 2.0\nrestart_after = 3600.0\n",
    )
    proc = _run(config, daemons)
    doc = wait_for(
        "the watchdog to shed hashing and the inventory walk",
        lambda: (
            (d := _status_json(config))["daemon"]["running"]
            and d["daemon"]["watchdog"]["shed"] == ["hashing", "inventory walk"]
            and d
        ),
    )
    dog = doc["daemon"]["watchdog"]
    assert dog["state"] == "degraded"
    assert "over the 16 MiB ceiling" in dog["reason"] and "resident memory" in dog["reason"]
    (files,) = [s for s in doc["sensors"] if s["name"] == "files"]
    assert files["state"] == "degraded"
    assert "hashing and inventory walk paused by the agent's watchdog" in files["reason"]

    # Reported as AGENT_HEALTH, with the figure, spooled for the collector.
    (health,) = wait_for("the watchdog's finding in the spool", lambda: _health_findings(tmp_path / "state"))
    (evidence,) = health.evidence
    assert evidence.health.sensor == "watchdog" and evidence.health.state == "degraded"
    assert "MiB over the 16 MiB ceiling" in evidence.health.reason
    assert "inventory walk paused" in evidence.health.reason
    assert health.severity == fpb.SEVERITY_LOW and health.host_id == "status-host"

    # Not a crash, not a restart: still the same process, still answering.
    assert proc.poll() is None
    assert _status_json(config)["daemon"]["watchdog"]["restarts"] == 0
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_restart_is_the_last_resort_and_keeps_the_process(
    tmp_path: Path, daemons: list[subprocess.Popen[str]]
) -> None:
    config = _config(
        tmp_path,
        "[watchdog]\nmemory_mib = 16\ninterval = 0.5\ncpu_window = 2.0\n"
        "restart_after = 1.0\nrestart_backoff = 3.0\n",
    )
    proc = _run(config, daemons)
    first = wait_for("the first status", lambda: (d := _status_json(config))["daemon"]["running"] and d)
    assert first["daemon"]["watchdog"]["restarts"] == 0
    again = wait_for(
        "a restart by the watchdog",
        lambda: (
            (d := _status_json(config))["daemon"]["running"]
            and d["daemon"]["watchdog"]["restarts"] >= 1
            and d
        ),
        timeout=90,
    )
    # exec keeps the pid, so the service manager sees one process throughout; a fresh start.
    assert again["daemon"]["pid"] == proc.pid and proc.poll() is None
    assert again["daemon"]["started_at"] > first["daemon"]["started_at"] + 3.0  # not before the backoff
    log = (tmp_path / "agent.log").read_text()
    assert "watchdog: restarting: resident memory" in log and "umbra-agent restarting (watchdog)" in log
    # One AGENT_HEALTH finding for the watchdog, counting its episodes across the restart.
    (health,) = wait_for(
        "the watchdog's finding, counting the episode after the restart",
        lambda: [f for f in _health_findings(tmp_path / "state") if f.count >= 2],
    )
    assert health.evidence[0].health.sensor == "watchdog"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_the_watchdogs_report_reaches_the_collector(
    tmp_path: Path, daemons: list[subprocess.Popen[str]]
) -> None:
    """The AGENT_HEALTH finding travels like any other: spooled, streamed over mutual TLS, stored."""
    collector = CollectorProc(tmp_path / "collector")
    collector.start()
    try:
        config = _config(tmp_path, "[watchdog]\nmemory_mib = 16\ninterval = 0.5\nrestart_after = 3600.0\n")
        # The collector this agent enrolls with replaces the unreachable address of _config.
        config.write_text(config.read_text().replace("[collector]\naddress", "[collector]\n# address"))
        enroll = [
            "enroll",
            "--config",
            str(config),
            "--collector",
            collector.enroll,
            "--token",
            collector.token(),
        ]
        enrolled = subprocess.run(
            [cli("umbra-agent"), *enroll],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert enrolled.returncode == 0, enrolled.stderr
        _run(config, daemons)
        stored = wait_for(
            "the watchdog's AGENT_HEALTH finding at the collector",
            lambda: [
                f
                for f in collector.cli_json("findings", "--kind", "AGENT_HEALTH")
                if any(e.get("sensor") == "watchdog" for e in f["evidence"])
            ],
        )
        (finding,) = stored
        (evidence,) = finding["evidence"]
        assert evidence["state"] == "degraded" and "over the 16 MiB ceiling" in evidence["reason"]
        doc = _status_json(config)
        assert doc["connection"]["connected"] and doc["connection"]["last_ack_at"] is not None
    finally:
        collector.stop()

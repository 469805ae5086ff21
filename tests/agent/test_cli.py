"""umbra-agent's command line, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import SpawnRuntime, cli, port_or_free

DESIGN_FIELDS = {
    "id",
    "kind",
    "severity",
    "confidence",
    "host_id",
    "user",
    "process",
    "evidence",
    "policy",
    "first_seen",
    "last_seen",
    "count",
}


def _agent(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([cli("umbra-agent"), *args], capture_output=True, text=True, timeout=timeout)


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(f'[agent]\nhost_id = "cli-host"\nstate_dir = "{tmp_path / "state"}"\n{extra}')
    return path


def test_scan_json_prints_one_finding_per_line(tmp_path: Path, spawn_runtime: SpawnRuntime) -> None:
    proc = spawn_runtime(["ollama", "serve"], listen=[f"127.0.0.1:{port_or_free(11434)}"])
    result = _agent("scan", "--format", "json", "--config", str(_config(tmp_path)))
    assert result.returncode == 0, result.stderr
    findings = [json.loads(line) for line in result.stdout.splitlines()]
    assert findings, "no findings while an ollama server runs"
    for finding in findings:
        assert set(finding) >= DESIGN_FIELDS
        assert finding["host_id"] == "cli-host"
        assert 0 < finding["confidence"] <= 1
    ours = [f for f in findings if f["process"] and f["process"]["pid"] == proc.pid]
    assert [f["kind"] for f in ours] == ["LOCAL_MODEL_RUNTIME"]
    (runtime,) = ours
    assert runtime["process"]["cmdline"] == ["ollama", "serve"]
    assert runtime["severity"] in {"low", "medium", "high"}
    assert runtime["policy"] == {"approved": False, "rule": "default:unapproved"}
    assert runtime["count"] == 1 and runtime["first_seen"] and runtime["last_seen"]


def test_scan_honours_approved_runtimes(tmp_path: Path, spawn_runtime: SpawnRuntime) -> None:
    proc = spawn_runtime(["ollama", "serve"], listen=[f"127.0.0.1:{port_or_free(11434)}"])
    config = _config(tmp_path, '[policy]\napproved_runtimes = ["ollama"]\n')
    result = _agent("scan", "--format", "json", "--config", str(config))
    (runtime,) = [
        json.loads(line)
        for line in result.stdout.splitlines()
        if json.loads(line)["process"]["pid"] == proc.pid
    ]
    assert runtime["policy"] == {"approved": True, "rule": "approved_runtimes:ollama"}
    assert runtime["severity"] == "info"


def test_scan_table_is_for_people(tmp_path: Path, spawn_runtime: SpawnRuntime) -> None:
    spawn_runtime(["ollama", "serve"], listen=[f"127.0.0.1:{port_or_free(11434)}"])
    result = _agent("scan", "--config", str(_config(tmp_path)))
    assert result.returncode == 0
    header = result.stdout.splitlines()[0].split()
    assert header[:3] == ["KIND", "SEVERITY", "CONF"]
    assert "LOCAL_MODEL_RUNTIME" in result.stdout and "Ollama" in result.stdout


def test_status_reports_sensors_and_spool(tmp_path: Path) -> None:
    result = _agent("status", "--format", "json", "--config", str(_config(tmp_path)))
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["host_id"] == "cli-host"
    (process,) = [s for s in doc["sensors"] if s["name"] == "process"]
    assert process["state"] in {"active", "degraded"}
    assert doc["spool"]["depth"] is None  # the daemon never ran with this state dir


def test_status_shows_the_running_daemons_capture_drops(tmp_path: Path) -> None:
    """The daemon keeps its capture's drop count in the spool; `status`, another process, reads it."""
    only_network = (
        '[collector]\naddress = "127.0.0.1:9"\n[sensors.process]\nenabled = false\n'
        "[sensors.gpu]\nenabled = false\n[sensors.files]\nenabled = false\n"
    )
    config = str(_config(tmp_path, only_network))
    assert json.loads(_agent("status", "--format", "json", "--config", config).stdout)["capture"] == {
        "dropped": None  # no daemon has run with this state dir
    }
    daemon = subprocess.Popen(
        [cli("umbra-agent"), "run", "--config", config], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        doc: dict[str, Any] = {}
        while time.monotonic() < deadline and daemon.poll() is None:
            if (tmp_path / "state" / "spool.db").exists():
                doc = json.loads(_agent("status", "--format", "json", "--config", config).stdout)
                if doc["capture"]["dropped"] is not None:
                    break
            time.sleep(0.3)
        assert isinstance(doc.get("capture", {}).get("dropped"), int), (doc, daemon.poll())
        table = _agent("status", "--config", config).stdout
        assert f"capture    {doc['capture']['dropped']} packets dropped" in table, table
    finally:
        daemon.terminate()
        daemon.wait(20)


@pytest.mark.parametrize(
    "args",
    [
        ["scan", "--duration", "-1"],
        ["scan", "--duration", "soon"],
        ["scan", "--format", "xml"],
        ["scan", "--bogus"],
        ["launch"],
        [],
    ],
)
def test_bad_arguments_get_one_clear_line(args: list[str]) -> None:
    result = _agent(*args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("umbra-agent") and "error" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["scan", "run", "status"])
def test_broken_config_gets_one_clear_line(tmp_path: Path, command: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[sensors.process]\ninterval = 'often'\n")
    result = _agent(command, "--config", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "interval" in result.stderr and "expected a number" in result.stderr


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("scan", ["--duration", "--format", "--config", "--pcap"]),
        ("run", ["--config"]),
        ("status", ["--config", "--format"]),
    ],
)
def test_help_explains_every_option(command: str, options: list[str]) -> None:
    result = _agent(command, "--help")
    assert result.returncode == 0
    for option in options:
        assert option in result.stdout

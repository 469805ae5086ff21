"""Agent to collector over a real gRPC channel on loopback, with real processes throughout.

The agent enrolls with a token (`umbra-collector token create`, `umbra-agent enroll`) and
streams over mutual TLS. A process that looks like a model runtime is found by the agent
daemon, spooled, streamed, stored once in the collector's SQLite file under the host id its
certificate carries, and shown in its host view; the collector is SIGKILLed and restarted
mid-run, and nothing is lost or stored twice.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from collector_proc import CollectorProc, wait_for
from conftest import SpawnRuntime, cli, port_or_free


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProc]:
    c = CollectorProc(tmp_path)
    c.start()
    yield c
    c.stop()


def _agent_config(tmp_path: Path) -> Path:
    """No collector address: the agent streams to the collector it enrolled with."""
    config = tmp_path / "agent.toml"
    config.write_text(f"""
[agent]
host_id = "claimed-host"
state_dir = "{tmp_path / "agent-state"}"
[collector]
heartbeat_interval = 1.0
backoff_initial = 0.2
backoff_max = 1.0
[sensors.process]
interval = 0.5
# this test counts runtime findings exactly; the AI tooling on the machine running it (its homes'
# agents and MCP servers) is not part of it (tests/console/test_console_aitools.py streams those)
[sensors.aitools]
enabled = false
""")
    return config


def _by_kind(findings: list[dict[str, Any]], kind: str, runtime: str) -> list[dict[str, Any]]:
    return [
        f
        for f in findings
        if f["kind"] == kind and any(e.get("runtime_id") == runtime for e in f["evidence"])
    ]


def test_runtime_found_streamed_and_stored_once_across_collector_restart(
    tmp_path: Path, collector: CollectorProc, spawn_runtime: SpawnRuntime
) -> None:
    port = port_or_free(11434)
    ollama = spawn_runtime(["ollama", "serve"], listen=[f"127.0.0.1:{port}"])
    config = _agent_config(tmp_path)
    token = collector.token()
    enrolled = subprocess.run(
        [
            cli("umbra-agent"),
            "enroll",
            "--collector",
            collector.enroll,
            "--token",
            token,
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert enrolled.returncode == 0, enrolled.stderr
    host_id = re.search(r"enrolled as (\S+);", enrolled.stdout).group(1)  # type: ignore[union-attr]
    agent = subprocess.Popen(
        [cli("umbra-agent"), "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        found = wait_for(
            "the ollama finding at the collector",
            lambda: [
                f
                for f in _by_kind(collector.cli_json("findings"), "LOCAL_MODEL_RUNTIME", "ollama")
                if any(e["type"] == "socket" for e in f["evidence"])
            ],
        )
        (runtime,) = found
        assert runtime["host_id"] == host_id != "claimed-host"  # from the certificate
        assert runtime["process"]["pid"] == ollama.pid
        assert runtime["process"]["name"] == "ollama"
        assert runtime["process"]["cmdline"] == ["ollama", "serve"]
        sockets = [e for e in runtime["evidence"] if e["type"] == "socket"]
        assert {(s["address"], s["port"]) for s in sockets} == {("127.0.0.1", port)}
        assert not _by_kind(collector.cli_json("findings"), "MODEL_SERVER_EXPOSED", "ollama"), (
            "loopback is not exposed"
        )

        # The collector dies; the agent keeps finding things and spools them meanwhile.
        collector.kill()
        vllm = spawn_runtime(["vllm", "serve", "facebook/opt-125m"], listen=[f"0.0.0.0:{port_or_free(8000)}"])
        llama = spawn_runtime(
            ["python3", "-m", "llama_cpp.server", "--port", "8001"],
            listen=[f"127.0.0.1:{port_or_free(8001)}"],
        )
        spool = sqlite3.connect(tmp_path / "agent-state" / "spool.db")
        wait_for(
            "the new findings in the agent's spool",
            lambda: spool.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] >= 3,
        )
        spool.close()

        collector.start()  # same file, same port
        findings = wait_for(
            "the findings spooled during the outage",
            lambda: (
                lambda fs: (
                    fs
                    if _by_kind(fs, "MODEL_SERVER_EXPOSED", "vllm")
                    and _by_kind(fs, "LOCAL_MODEL_RUNTIME", "llama-cpp-python")
                    else None
                )
            )(collector.cli_json("findings")),
            timeout=60,
        )
        exposed = _by_kind(findings, "MODEL_SERVER_EXPOSED", "vllm")[0]
        assert exposed["process"]["pid"] == vllm.pid and exposed["severity"] == "high"
        assert _by_kind(findings, "LOCAL_MODEL_RUNTIME", "llama-cpp-python")[0]["process"]["pid"] == llama.pid

        # Everything acknowledged, and each finding stored exactly once.
        spool = sqlite3.connect(tmp_path / "agent-state" / "spool.db")
        wait_for(
            "the agent's spool to drain",
            lambda: spool.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0,
        )
        spool.close()
        findings = collector.cli_json("findings")
        ids = [f["id"] for f in findings]
        assert len(ids) == len(set(ids))
        assert {(f["kind"], f["evidence"][0]["runtime_id"]) for f in findings} == {
            ("LOCAL_MODEL_RUNTIME", "ollama"),
            ("LOCAL_MODEL_RUNTIME", "vllm"),
            ("MODEL_SERVER_EXPOSED", "vllm"),
            ("LOCAL_MODEL_RUNTIME", "llama-cpp-python"),
        }
        assert all(f["count"] == 1 for f in findings), "a resend must not count as a new occurrence"
        db = sqlite3.connect(collector.db)
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        finding_table = next(t for t in tables if "finding" in t)
        assert db.execute(f"SELECT COUNT(*) FROM {finding_table}").fetchone()[0] == len(ids)
        db.close()

        hosts = collector.cli_json("hosts")
        host = next(
            h for h in (hosts if isinstance(hosts, list) else hosts["hosts"]) if h["host_id"] == host_id
        )
        assert any(s["name"] == "process" for s in host["sensors"])
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=15)
        except subprocess.TimeoutExpired:
            agent.kill()
            pytest.fail("the agent did not stop on SIGTERM")
    assert agent.returncode == 0, agent.stderr.read() if agent.stderr else ""

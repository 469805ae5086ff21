"""The agent says what it is doing (issue 17, item 3), with real processes: a TLS collector,
`umbra-agent enroll` and `umbra-agent run`.

- `run` logs when it connects, when the first batch is acknowledged, and when it loses the
  collector: once per loss, however many retries, then that it is connected again;
- the Inventory reaches the collector right after the first full scan, long before the first
  heartbeat is due;
- `run` without enrollment prints the exact enroll command;
- `enroll` at the stream port, with a mistyped token, or at an unreachable address gets one line
  naming the fix, no traceback; enrolling again keeps the host id unless --new-identity.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from collector_proc import CollectorProc, Drain, wait_for
from conftest import FIXTURES, cli
from fleetkit import enroll

sys.path.insert(0, str(FIXTURES))
from tiny_gguf import write_tiny_llama

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProc]:
    c = CollectorProc(tmp_path / "collector", "--monitor-interval", "300ms")
    c.work.mkdir()
    c.start()
    yield c
    c.stop()


def _agent_config(state: Path, models: Path, address: str = "") -> Path:
    """Only the file sensor, on one directory: the findings and the inventory are this test's."""
    home = state / "home"
    home.mkdir(parents=True, exist_ok=True)
    config = state / "agent.toml"
    config.write_text(
        f'[agent]\nstate_dir = "{state}"\n'
        f'[collector]\naddress = "{address}"\n'
        'heartbeat_interval = 600.0\nbackoff_initial = "200ms"\nbackoff_max = "500ms"\n'
        '[sensors.process]\nenabled = false\ninterval = "300ms"\n'
        "[sensors.gpu]\nenabled = false\n[sensors.network]\nenabled = false\n"
        f'[sensors.files]\nwatched_paths = ["{models}"]\nhomes = ["{home}"]\n'
        "default_roots = false\nscan_homes = false\n"
    )
    return config


def _start(config: Path) -> tuple[subprocess.Popen[str], Drain]:
    proc = subprocess.Popen(
        [cli("umbra-agent"), "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, Drain(proc.stderr)


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_run_says_connected_first_ack_lost_once_and_back(tmp_path: Path, collector: CollectorProc) -> None:
    state, models = tmp_path / "agent", tmp_path / "models"
    models.mkdir()
    write_tiny_llama(models / "tiny.gguf")
    host = enroll(collector, state)
    config = _agent_config(state, models)
    proc, log = _start(config)
    try:
        wait_for("the connect line", lambda: "connected to the collector" in log.text())
        assert f"connected to the collector {collector.grpc} (mutual TLS)" in log.text()
        # The heartbeat is 10 minutes away: the inventory went after the first full scan.
        inventories = wait_for(
            "the inventory at the collector",
            lambda: collector.cli_json("inventory", "--host", host)["inventories"],
            timeout=30,
        )
        assert [m["path"] for m in inventories[0]["models"]] == [str(models / "tiny.gguf")]
        assert "inventory sent: 1 model files on this host" in log.text()
        wait_for("the first Ack line", lambda: "acknowledged the first batch" in log.text())

        collector.kill()
        wait_for("the loss line", lambda: "lost the collector" in log.text())
        time.sleep(3)  # backoff 200-500 ms: several retries while it is away
        assert log.text().count("lost the collector") == 1, log.text()
        assert "cannot reach the collector" not in log.text()

        collector.start()  # the same ports
        wait_for(
            "the reconnect line", lambda: log.text().count("connected to the collector") == 2, timeout=30
        )
        assert "connected to the collector" in log.text().rsplit("lost the collector", 1)[1]
        assert log.text().count("acknowledged the first batch") == 1
    finally:
        _stop(proc)
    assert "Traceback" not in log.text()


def test_run_without_enrollment_prints_the_enroll_command(tmp_path: Path) -> None:
    state, models = tmp_path / "agent", tmp_path / "models"
    models.mkdir()
    with socket.socket() as probe:  # a collector address where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = _agent_config(state, models, f"127.0.0.1:{port}")
    proc, log = _start(config)
    try:
        wait_for("the enroll hint", lambda: "not enrolled" in log.text())
        expected = (
            f"umbra-agent enroll --collector 127.0.0.1:{port + 1} --token-file token.txt --config {config}"
        )
        assert expected in log.text()
        assert "umbra-collector token create --token-file token.txt" in log.text()
        wait_for("the first failure", lambda: "cannot reach the collector" in log.text())
        time.sleep(2)
        assert log.text().count("cannot reach the collector") == 1  # not once per retry
    finally:
        _stop(proc)


def _enroll(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    state.mkdir(parents=True, exist_ok=True)
    config = state / "agent.toml"
    config.write_text(f'[agent]\nstate_dir = "{state}"\n')
    return subprocess.run(
        [cli("umbra-agent"), "enroll", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("umbra-agent: error: ")
    return lines[0]


def test_enroll_mistakes_get_one_line_that_names_the_fix(tmp_path: Path, collector: CollectorProc) -> None:
    token = collector.token(uses=5)
    line = _one_line(_enroll(tmp_path / "a", "--collector", collector.grpc, "--token", token))
    host, port = collector.grpc.rsplit(":", 1)
    assert f"{collector.grpc} is the collector's stream port" in line
    assert f"--collector {host}:{int(port) + 1}" in line

    secret, pin = token.split(".")
    typo = f"{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}.{pin}"
    line = _one_line(_enroll(tmp_path / "b", "--collector", collector.enroll, "--token", typo))
    assert "refused this token" in line and "umbra-collector token create" in line

    line = _one_line(
        _enroll(tmp_path / "c", "--collector", collector.enroll, "--token", f"{secret}.{pin[:-2]}xx")
    )
    assert "does not present the CA this token was made for" in line and "copied whole" in line

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{probe.getsockname()[1]}"
    line = _one_line(_enroll(tmp_path / "d", "--collector", nowhere, "--token", token))
    assert f"cannot reach the collector at {nowhere}" in line and "umbra-collector serve" in line
    # None of the failures spent the token: it still enrolls.
    assert _enroll(tmp_path / "e", "--collector", collector.enroll, "--token", token).returncode == 0


def test_enroll_again_keeps_the_host_id_and_reads_the_token_from_a_file(
    tmp_path: Path, collector: CollectorProc
) -> None:
    state = tmp_path / "agent"
    first = enroll(collector, state)
    token_file = tmp_path / "token.txt"  # the token never on a command line, nor on a screen
    collector.run_cli(
        "token",
        "create",
        "--db",
        collector.url,
        "--pki-dir",
        str(collector.pki),
        "--token-file",
        str(token_file),
    )
    assert token_file.stat().st_mode & 0o777 == 0o600
    again = _enroll(state, "--collector", collector.enroll, "--token-file", str(token_file))
    assert again.returncode == 0, again.stderr
    assert f"enrolled as {first};" in again.stdout
    assert f"kept this agent's identity {first}" in again.stderr
    token_file.write_text(collector.token())
    fresh = _enroll(state, "--collector", collector.enroll, "--token-file", str(token_file), "--new-identity")
    assert fresh.returncode == 0, fresh.stderr
    assert "enrolled as h-" in fresh.stdout and f"enrolled as {first};" not in fresh.stdout
    agents = {a["host_id"] for a in collector.cli_json("agent", "list")["agents"]}
    assert len(agents) == 2 and first in agents

    token_file.write_text("one\ntwo\n")
    bad = _enroll(state, "--collector", collector.enroll, "--token-file", str(token_file))
    assert "must hold one token on one line" in _one_line(bad)

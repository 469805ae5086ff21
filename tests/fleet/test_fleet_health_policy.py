"""Host health and policy push, with real processes: a TLS collector, enrolled agents.

- a host that stops reporting is marked silent (an AGENT_HEALTH finding) after --silent-after,
  and marked back when it returns;
- `umbra-collector policy set` reaches a running `umbra-agent run`, which applies it (a runtime
  the policy approves is reported approved), keeps it on disk, and reports its version in Hello;
- the policy file is validated strictly.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from collector_proc import CollectorProc, Drain, wait_for
from conftest import SpawnRuntime, cli, port_or_free
from fleetkit import LoadAgent, enroll
from umbra.v1 import agent_pb2

from agent.policy.fleet import FleetPolicy, PolicyKeeper
from agent.policy.rules import Policy
from collector.policy import PolicyError, load_file, to_wire, validate

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProc]:
    c = CollectorProc(tmp_path, "--monitor-interval", "300ms", "--silent-after", "2s")
    c.start()
    yield c
    c.stop()


def health(collector: CollectorProc, host: str) -> dict[str, Any] | None:
    out = collector.run_cli(
        "findings", "--db", collector.url, "--host", host, "--kind", "AGENT_HEALTH", "--format", "json"
    )
    for line in out.stdout.splitlines():
        doc = json.loads(line)
        if doc["id"] == "agent-health:silent":
            return dict(doc)
    return None


def test_silent_host_is_marked_and_then_back(tmp_path: Path, collector: CollectorProc) -> None:
    state = tmp_path / "agent"
    enroll(collector, state)
    agent = LoadAgent(state, 10, "--heartbeat", "0.5")
    try:
        agent.start()
        host = agent.host_id
        wait_for(
            "the host's first contact",
            lambda: collector.query("SELECT 1 FROM hosts WHERE host_id = ?", (host,)),
        )
        assert health(collector, host) is None, "a reporting host is not silent"
        agent.kill()
        silent = wait_for("the silent mark", lambda: health(collector, host), timeout=30)
        assert silent["kind"] == "AGENT_HEALTH" and silent["severity"] == "medium"
        (evidence,) = silent["evidence"]
        assert (
            evidence["type"] == "health" and evidence["state"] == "silent" and evidence["sensor"] == "agent"
        )
        hosts = collector.run_cli("hosts", "--db", collector.url, "--format", "json").stdout
        (view,) = [h for h in json.loads(hosts)["hosts"] if h["host_id"] == host]
        assert view["silent_since"]
        agent.start()  # the agent comes back
        back = wait_for(
            "the host marked back",
            lambda: (lambda f: f if f and f["evidence"][0]["state"] == "active" else None)(
                health(collector, host)
            ),
            timeout=30,
        )
        assert back["severity"] == "info" and back["first_seen"] == silent["first_seen"]
        hosts = collector.run_cli("hosts", "--db", collector.url, "--format", "json").stdout
        (view,) = [h for h in json.loads(hosts)["hosts"] if h["host_id"] == host]
        assert view["silent_since"] == ""
    finally:
        agent.stop()


def test_policy_set_reaches_a_running_agent_which_applies_and_keeps_it(
    tmp_path: Path, collector: CollectorProc, spawn_runtime: SpawnRuntime
) -> None:
    state = tmp_path / "agent"
    host = enroll(collector, state)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[agent]\nstate_dir = "{state}"\n[collector]\nheartbeat_interval = 0.5\nbackoff_initial = 0.2\n'
        "backoff_max = 1.0\n[sensors.process]\ninterval = 0.5\n[sensors.gpu]\nenabled = false\n"
    )
    spawn_runtime(["ollama", "serve"], listen=[f"127.0.0.1:{port_or_free(11434)}"])

    def ollama() -> dict[str, Any] | None:
        out = collector.run_cli(
            "findings",
            "--db",
            collector.url,
            "--host",
            host,
            "--kind",
            "LOCAL_MODEL_RUNTIME",
            "--format",
            "json",
        )
        found = [json.loads(line) for line in out.stdout.splitlines()]
        mine = [f for f in found if any(e.get("runtime_id") == "ollama" for e in f["evidence"])]
        return mine[0] if mine else None

    def run_agent() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [cli("umbra-agent"), "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    agent = run_agent()
    try:
        before = wait_for("the ollama finding", ollama)
        assert before["policy"]["approved"] is False and before["severity"] != "info"
        policy_file = tmp_path / "policy.toml"
        policy_file.write_text(
            'approved_runtimes = ["ollama"]\napproved_services = ["API.OpenAI.com."]\n'
            'watched_paths = ["/srv/models"]\n[thresholds]\nmin_confidence = 0.4\n'
        )
        result = collector.run_cli("policy", "set", str(policy_file), "--db", collector.url)
        assert "version 1" in result.stderr
        shown = json.loads(
            collector.run_cli("policy", "show", "--db", collector.url, "--format", "json").stdout
        )
        assert shown["policy"]["version"] == 1 and shown["policy"]["approved_services"] == ["api.openai.com"]
        # Pushed on the open stream, applied, and the finding is re-judged.
        after = wait_for(
            "the ollama finding approved by the pushed policy",
            lambda: (lambda f: f if f and f["policy"]["approved"] else None)(ollama()),
            timeout=60,
        )
        assert after["severity"] == "info" and after["policy"]["rule"] == "approved_runtimes:ollama"
        assert after["id"] == before["id"]
        kept = json.loads((state / "policy.json").read_text())
        assert kept["version"] == 1 and kept["approved_runtimes"] == ["ollama"]
        assert kept["watched_paths"] == ["/srv/models"] and kept["thresholds"] == {"min_confidence": 0.4}
        wait_for(
            "the agent's Hello with policy version 1",
            lambda: collector.query("SELECT policy_version FROM hosts WHERE host_id = ?", (host,)) == [(1,)],
        )
        # Restarted while the collector is away, the agent loads version 1 from disk, enforces it, and
        # says so in its first Hello (before any push could tell it again).
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
        collector.kill()
        restarted_ns = time.time_ns()
        agent = run_agent()
        log = Drain(agent.stderr)
        wait_for("the saved policy loaded", lambda: "fleet policy version 1 loaded" in log.text())
        collector.start()
        wait_for(
            "the restarted agent's Hello, with policy version 1",
            lambda: (
                collector.query(
                    "SELECT policy_version FROM hosts WHERE host_id = ? AND last_seen > ?",
                    (host, restarted_ns),
                )
                == [(1,)]
            ),
        )
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=30)
        except subprocess.TimeoutExpired:
            agent.kill()
    assert agent.returncode == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("approved_runtime = ['ollama']", "unknown key 'approved_runtime'"),
        ("approved_runtimes = 'ollama'", "must be a list of strings"),
        ("approved_model_hashes = ['abc']", "not a SHA-256"),
        ("min_confidence = 2", "min_confidence must be between 0 and 1"),
        ("upload_threshold_bytes = 'lots'", "upload_threshold_bytes must be a number"),
        ("bogus = 1", "unknown key 'bogus'"),
        ("approved_runtimes = [", "not valid TOML"),
    ],
)
def test_policy_file_is_validated(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=message):
        load_file(path)
    result = subprocess.run(
        [cli("umbra-collector"), "policy", "set", str(path), "--db", f"sqlite:///{tmp_path / 'c.db'}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_pushed_policy_round_trip_and_persistence(tmp_path: Path) -> None:
    body = validate(
        {
            "approved_runtimes": ["vllm", "ollama"],
            "approved_model_hashes": ["A" * 64],
            "thresholds": {"upload_bytes": 5},
        }
    )
    wire = to_wire(3, body)
    fleet = FleetPolicy.from_wire(wire)
    assert fleet.version == 3 and fleet.approved_runtimes == ("ollama", "vllm")
    assert fleet.approved_model_hashes == ("a" * 64,) and fleet.thresholds == {"upload_bytes": 5.0}
    applied: list[Policy] = []
    local = Policy(min_confidence=0.7)
    keeper = PolicyKeeper(tmp_path, local, lambda p, _: applied.append(p))
    assert keeper.version == 0 and applied == [local]
    assert keeper.receive(wire)
    assert applied[-1].version == 3 and applied[-1].approved_runtimes == {"ollama", "vllm"}
    assert applied[-1].min_confidence == 0.7, "a threshold the policy leaves out keeps the local value"
    assert not keeper.receive(to_wire(2, body)), "an older version is ignored"
    assert not keeper.receive(wire), "the same version is not applied twice"
    again = PolicyKeeper(tmp_path, local, lambda p, _: applied.append(p))  # an agent restart
    assert again.version == 3 and applied[-1].version == 3
    unknown = agent_pb2.Policy(
        version=4, rules=[agent_pb2.PolicyRule(name="x", kind="future_kind", values=["1"])]
    )
    assert again.receive(unknown) and again.version == 4

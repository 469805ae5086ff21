"""AI tooling end to end: a real `umbra-agent run` inventories a developer's home and streams its
AI_AGENT, MCP_SERVER and AI_EXTENSION findings over mutual TLS to a real collector; a pushed policy
approves a remote MCP host; the console's overview and host page show them with what the MCP
servers reach; no secret from the home's configuration reaches the collector's database."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from collector_proc import CollectorProc, wait_for
from conftest import cli
from consolekit import PASSWORDS, Client, add_user
from fleetkit import enroll

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))
from test_aitools_sensor import SECRETS, make_home

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[CollectorProc, str]]:
    collector = CollectorProc(tmp_path, "--http", "127.0.0.1:0")
    collector.start()
    add_user(collector.url, "vic", "viewer")
    state = tmp_path / "agent"
    host = enroll(collector, state)
    home = make_home(tmp_path / "dev")
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[agent]\nstate_dir = "{state}"\n[collector]\nheartbeat_interval = 0.5\nbackoff_initial = 0.2\n'
        "backoff_max = 1.0\n[sensors.process]\ninterval = 0.5\n[sensors.gpu]\nenabled = false\n"
        "[sensors.files]\nenabled = false\n[sensors.network]\nenabled = false\n"
        f'[sensors.aitools]\nhomes = ["{home}"]\ninterval = 1.0\n[findings]\nrefresh_interval = 1\n'
    )
    agent = subprocess.Popen(
        [cli("umbra-agent"), "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield collector, host
    finally:
        agent.terminate()
        agent.wait(timeout=30)
        collector.stop()


def test_ai_tooling_reaches_the_console_and_the_policy_reaches_the_agent(
    running: tuple[CollectorProc, str], tmp_path: Path
) -> None:
    collector, host = running

    def remote_docs() -> dict[str, Any] | None:
        found = collector.cli_json("findings", "--host", host, "--kind", "MCP_SERVER")
        return next((f for f in found if f["evidence"][0].get("name") == "remote-docs"), None)

    before = wait_for("the remote MCP server's finding", remote_docs)
    assert before["severity"] == "high" and before["policy"]["approved"] is False
    policy = tmp_path / "policy.toml"
    policy.write_text('approved_mcp_servers = ["mcp.example-docs.com"]\n')
    collector.run_cli("policy", "set", str(policy), "--db", collector.url)
    after = wait_for(
        "the remote MCP server approved by the pushed policy",
        lambda: (lambda f: f if f and f["policy"]["approved"] else None)(remote_docs()),
        timeout=90,
    )
    assert after["id"] == before["id"] and after["severity"] == "info"
    assert after["policy"]["rule"] == "approved_mcp_servers:mcp.example-docs.com"

    client = Client(f"http://{collector.http}")
    assert client.login("vic", PASSWORDS["viewer"]) == 303
    status, _, page = client.request(f"/hosts/{quote(host)}")
    assert status == 200
    assert 'id="host-aitools"' in page and "MCP server &#39;filesystem&#39;" in page
    assert "1 MCP server with shell access" in page and "MCP servers with database access" in page
    status, _, overview = client.request("/")
    assert status == 200 and 'id="aitools"' in overview and "MCP_SERVER" in overview
    # the tools page: each MCP server from the agent's inventory, with this host holding it
    tools = wait_for(
        "the host's inventory on the tools page",
        lambda: (lambda p: p if "@modelcontextprotocol/server-filesystem" in p else None)(
            client.request("/tools?kind=MCP_SERVER")[2]
        ),
    )
    assert f'href="/hosts/{quote(host, safe="")}"' in tools and "mcp.example-docs.com" in tools
    stored = b"".join(p.read_bytes() for p in collector.work.glob("collector.db*"))
    for secret in SECRETS:
        assert secret.encode() not in stored

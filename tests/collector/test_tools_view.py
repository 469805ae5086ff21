"""Which hosts hold each AI agent, MCP server and AI extension (issue 14, item 5): the fleet view
over every host's newest inventory, through the query layer and the real `umbra-collector view tools`."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from collector_testkit import build_hello
from conftest import cli
from umbra.v1 import agent_pb2 as apb
from umbra.v1 import finding_pb2 as fpb

from collector.query import activity
from collector.storage import open_store


def _inventory(
    agents: list[str], mcp: list[tuple[str, str, list[str]]], extensions: list[str]
) -> apb.Inventory:
    inv = apb.Inventory()
    inv.taken_at.FromSeconds(int(time.time()))
    for agent in agents:
        inv.ai_agents.append(fpb.AiAgentEvidence(agent_id=agent, agent_name=agent.title(), version="1.0"))
    for name, package, access in mcp:
        inv.mcp_servers.append(fpb.McpServerEvidence(name=name, package=package, access=access))
    for ext in extensions:
        inv.ai_extensions.append(
            fpb.AiExtensionEvidence(extension_id=ext, name=ext, permissions=["<all_urls>"])
        )
    return inv


def test_each_tool_lists_the_hosts_that_hold_it(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    fs = "@modelcontextprotocol/server-filesystem"
    with open_store(db) as store:
        for host, name in (("h-1", "ws-one"), ("h-2", "ws-two"), ("h-3", "ws-three")):
            store.upsert_host(host, build_hello(host, name), "ipv4:10.0.0.1:5000")
        store.record_inventory("h-1", _inventory(["claude-code"], [("files", fs, ["filesystem"])], ["ext-a"]))
        store.record_inventory("h-2", _inventory(["claude-code", "aider"], [("fs", fs, ["filesystem"])], []))
        store.record_inventory("h-3", _inventory(["claude-code"], [], []))
        rows = activity.tools(store)
    by_tool = {(r.kind, r.tool): r for r in rows}
    assert by_tool["AI_AGENT", "claude-code"].hosts == ("h-1", "h-2", "h-3")
    assert by_tool["AI_AGENT", "aider"].hosts == ("h-2",)
    # one MCP package configured under two names on two hosts is one tool on both
    assert by_tool["MCP_SERVER", fs].hosts == ("h-1", "h-2")
    assert by_tool["MCP_SERVER", fs].details == ("filesystem",)
    assert by_tool["AI_EXTENSION", "ext-a"].details == ("<all_urls>",)
    assert rows[0].tool == "claude-code"  # on most hosts first
    assert len(rows) == 4

    shown = subprocess.run(
        [cli("umbra-collector"), "view", "tools", "--db", db, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)["tools"]
    claude = next(r for r in doc if r["tool"] == "claude-code")
    assert claude["details"] == ["1.0"]  # versions found
    assert claude["host_count"] == 3 and claude["hosts"] == ["ws-one", "ws-two", "ws-three"]
    table = subprocess.run(
        [cli("umbra-collector"), "view", "tools", "--db", db, "--wide"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert table.returncode == 0 and "ws-one, ws-two, ws-three" in table.stdout, table.stdout

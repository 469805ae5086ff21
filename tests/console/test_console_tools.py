"""The console's AI tools page (issue 14, item 5): each AI agent, MCP server and AI extension found
on the fleet, with the hosts that hold it, read from the hosts' newest inventories by a real
collector's console; hostile names in an inventory are shown as text."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from collector_proc import CollectorProc
from consolekit import PASSWORDS, Client, add_user
from umbra.v1 import agent_pb2 as apb
from umbra.v1 import finding_pb2 as fpb

from collector.storage import open_store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "collector"))
from collector_testkit import build_hello

pytestmark = pytest.mark.timeout(120)

FS = "@modelcontextprotocol/server-filesystem"
HOSTILE = "<img src=x onerror=alert(1)>"
HOSTS = 14  # more than the page names in one row


def _inventory(host: int) -> apb.Inventory:
    inv = apb.Inventory()
    inv.taken_at.FromSeconds(int(time.time()))
    inv.ai_agents.append(
        fpb.AiAgentEvidence(agent_id="claude-code", agent_name="Claude Code", version="2.1.0")
    )
    if host < 2:
        inv.mcp_servers.append(fpb.McpServerEvidence(name="files", package=FS, access=["filesystem"]))
        inv.mcp_servers.append(
            fpb.McpServerEvidence(name="sh", package="desktop-commander", access=["shell"])
        )
    if host == 0:
        inv.ai_extensions.append(
            fpb.AiExtensionEvidence(extension_id="hostile.ext", name=HOSTILE, permissions=["<all_urls>"])
        )
    return inv


@pytest.fixture
def console(tmp_path: Path) -> Iterator[CollectorProc]:
    collector = CollectorProc(tmp_path, "--http", "127.0.0.1:0")
    with open_store(collector.url) as store:  # the fleet as stored by earlier streams
        for n in range(HOSTS):
            host = f"h-{n:02d}"
            store.upsert_host(host, build_hello(host, f"ws-{n:02d}"), "ipv4:10.0.0.1:5000")
            store.record_inventory(host, _inventory(n))
    collector.start()
    add_user(collector.url, "vic", "viewer")
    yield collector
    collector.stop()


@pytest.fixture
def viewer(console: CollectorProc) -> Client:
    """A viewer signed in to the console."""
    client = Client(f"http://{console.http}")
    assert client.login("vic", PASSWORDS["viewer"]) == 303
    return client


def rows(page: str) -> list[str]:
    table = page.split('<table id="tools">', 1)[1].split("</table>", 1)[0]
    return [r for r in re.findall(r"<tr>\s*(.*?)</tr>", table, re.S) if "<th>" not in r]


def test_each_tool_is_listed_with_the_hosts_that_hold_it(viewer: Client) -> None:
    status, _, page = viewer.request("/tools")
    assert status == 200
    found = rows(page)
    assert len(found) == 4
    # the agent on every host comes first, named by host name, with the rest counted
    assert "Claude Code" in found[0] and "claude-code" in found[0] and "2.1.0" in found[0]
    assert f'<td class="num">{HOSTS}</td>' in found[0]
    assert found[0].count('href="/hosts/') == 12 and f"and {HOSTS - 12} more" in found[0]
    assert '<a href="/hosts/h-00" title="h-00">ws-00</a>' in found[0]
    by_package = {p: r for r in found for p in (FS, "desktop-commander") if p in r}
    assert '<td class="num">2</td>' in by_package[FS] and "ws-13" not in by_package[FS]
    # what an MCP server can reach is marked when it is one of the risk model's reasons
    assert '<span class="mono bad">shell</span>' in by_package["desktop-commander"]
    assert '<span class="mono bad">filesystem</span>' in by_package[FS]


def test_the_kind_filter_and_a_bad_kind(viewer: Client) -> None:
    status, _, page = viewer.request("/tools?kind=MCP_SERVER")
    assert status == 200
    found = rows(page)
    assert len(found) == 2 and all("MCP_SERVER" in r for r in found)
    status, _, page = viewer.request("/tools?kind=%3Cb%3E")
    assert status == 400 and "No tool kind" in page and "<b>" not in page


def test_a_hostile_extension_name_is_text(viewer: Client) -> None:
    status, _, page = viewer.request("/tools?kind=AI_EXTENSION")
    assert status == 200
    (row,) = rows(page)
    assert HOSTILE not in page and "&lt;img src=x onerror=alert(1)&gt;" in row
    assert "&lt;all_urls&gt;" in row

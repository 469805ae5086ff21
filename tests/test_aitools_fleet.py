"""AI tooling findings from the agent's real pipeline, through the collector's store, risk model,
fleet views and report (SQLite): stored, counted, scored with their reasons, listed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from conftest import cli
from umbra import codec

from agent.daemon import inventory
from agent.delivery.tracker import FindingTracker
from agent.detection.aitools import AiToolsDetector
from agent.pipeline import Pipeline
from agent.policy.rules import Policy
from agent.sensors.aitools.sensor import AiToolsSensor
from collector.query import activity
from collector.query.risk import risk_board
from collector.reports.html import to_html
from collector.reports.model import build_report
from collector.reports.tabular import long_rows
from collector.storage import open_store

sys.path.insert(0, str(Path(__file__).parent / "agent"))
from test_aitools_sensor import SECRETS, make_home


def test_ai_tooling_findings_are_stored_scored_listed_and_reported(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    chrome = home / ".config/google-chrome/Default/Extensions/fcoeoabgfenejglbffodgkkbkcdhcgfn/1.0_0"
    chrome.mkdir(parents=True)
    (chrome / "manifest.json").write_text(json.dumps({"name": "Claude", "permissions": ["<all_urls>"]}))
    copilot = home / ".vscode/extensions/github.copilot-1.300.0"
    copilot.mkdir(parents=True)
    (copilot / "package.json").write_text(json.dumps({"displayName": "GitHub Copilot", "version": "1.300.0"}))
    sensor = AiToolsSensor(homes=[str(home)], processes=False, machine_wide=False)
    pipeline = Pipeline([sensor], [AiToolsDetector()], Policy(), FindingTracker("h-dev", 300))
    findings = pipeline.poll()
    kinds = {codec.kind_name(f.kind) for f in findings}
    assert kinds == {"MCP_SERVER", "AI_EXTENSION", "AI_AGENT"}
    with open_store(f"sqlite:///{tmp_path / 'fleet.db'}") as store:
        store.store_batch("h-dev", 1, findings)
        rows = {r.kind: r for r in activity.aitools(store)}
        assert set(rows) == kinds
        servers = [f for f in findings if codec.kind_name(f.kind) == "MCP_SERVER"]
        assert rows["MCP_SERVER"].findings == len(servers)
        board = risk_board(store, now=time.time())
        host = next(h for h in board.hosts if h.host_id == "h-dev")
        assert host.level in ("high", "critical")
        assert any(r.endswith("unapproved MCP servers") for r in host.reasons), host.reasons
        assert any(r.endswith("unapproved AI extensions") for r in host.reasons), host.reasons
        assert any(r.endswith("unapproved AI agent") for r in host.reasons), host.reasons
        # the agent's Inventory (as the daemon builds it) from this host and a second one holding the same
        held = inventory(pipeline)
        assert held is not None
        for host in ("h-dev", "h-ops"):
            store.record_inventory(host, held)
        report = build_report(store, None)
        html = to_html(report)
    assert 'id="aitools"' in html and "MCP_SERVER" in html
    tools = html.split('id="t-tools"', 1)[1].split("</table>", 1)[0]
    fs = "@modelcontextprotocol/server-filesystem"
    (row,) = [r for r in tools.split("<tr>") if fs in r]
    assert "h-dev, h-ops" in row and "filesystem" in row
    assert ("tools", f"MCP_SERVER:{fs}", "hosts", "2") in set(long_rows(report))
    assert {t.kind for t in report.tools} == kinds
    db = f"sqlite:///{tmp_path / 'fleet.db'}"
    view = subprocess.run(
        [cli("umbra-collector"), "view", "aitools", "--db", db, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert view.returncode == 0, view.stderr
    rows = {r["kind"]: r for r in json.loads(view.stdout)["aitools"]}
    assert set(rows) == kinds and rows["MCP_SERVER"]["host_id"] == "h-dev"
    for secret in SECRETS:
        assert secret not in html

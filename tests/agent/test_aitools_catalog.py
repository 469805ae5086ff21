"""The AI tooling catalog is strict, every entry has its source, and the policy's AI tooling rules
travel the wire (collector document -> Policy message -> the agent's fleet policy)."""

from __future__ import annotations

from pathlib import Path

import pytest
from umbra import contract
from umbra.v1 import finding_pb2 as fpb

from agent.catalog.aitools import default_aitools_catalog, mcp_package_name, parse_aitools_catalog
from agent.catalog.source import CatalogError, read_catalog
from agent.delivery.tracker import FindingDraft
from agent.policy.fleet import FleetPolicy
from agent.policy.rules import Policy
from collector.policy import to_wire, validate


def test_packaged_catalog_loads_with_sources_and_links() -> None:
    catalog = default_aitools_catalog()
    assert len(catalog.agents) >= 25 and len(catalog.clients) >= 20 and len(catalog.extensions) >= 20
    every = [*catalog.agents, *catalog.clients, *catalog.packages, *catalog.extensions, *catalog.browsers]
    assert all(e.source.startswith("https://") for e in every)
    assert catalog.agent_of_process(
        "node", ["node", "/usr/lib/node_modules/@openai/codex/bin/codex.js"]
    ).id == (  # type: ignore[union-attr]
        "codex-cli"
    )
    assert catalog.agent_of_process("node", ["node", "server.js"]) is None
    assert catalog.is_mcp_process(["python3", "-m", "mcp_server_time", "--local-timezone=UTC"])
    assert mcp_package_name(["python3", "-m", "mcp_server_time"]) == "mcp_server_time"
    assert mcp_package_name(["npx", "-y", "@modelcontextprotocol/server-github@2025.4.8"]) == (
        "@modelcontextprotocol/server-github"
    )
    assert not catalog.is_mcp_process(["npm", "run", "dev"])
    for argv in (
        ["docker", "run", "-i", "--rm", "mcp/filesystem", "/projects"],
        ["docker", "run", "-i", "--rm", "-e", "GITHUB_TOKEN", "ghcr.io/github/github-mcp-server"],
        ["uv", "run", "fastmcp", "run", "server.py"],
        ["uvx", "mcp-server-git", "--repository", "/src"],
        ["node", "/root/.npm/_npx/9/node_modules/.bin/mcp-server-filesystem", "/home/u"],
    ):
        assert catalog.is_mcp_process(argv), argv
    for argv in (["docker", "run", "-d", "postgres:16"], ["uvx", "ruff", "check"], ["node", "server.js"]):
        assert not catalog.is_mcp_process(argv), argv
    assert catalog.mcp_access(["docker", "run", "-i", "mcp/filesystem"])[0] == ("filesystem",)
    assert catalog.extension("cjpalhdlnbpafiamejdnhcphjbkeiagm") is None  # uBlock Origin


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('id = "claude-code"', 'id = "Claude Code"'), "slug"),
        (('format = "toml"', 'format = "ini"'), "format"),
        (('access = ["filesystem"]', 'access = ["teleport"]'), "access"),
        (('"@modelcontextprotocol/server-memory"', '".*"'), "empty string"),
        (
            ('source = "https://docs.cursor.com/context/model-context-protocol"', 'source = "http://x"'),
            "https",
        ),
        (('services = ["kiro"]', 'services = ["no-such-service"]'), "ai_endpoints"),
        (('agent = "goose"', 'agent = "nobody"'), "agent"),
        (('chromium_ids = ["difoiogjjojoaoomphldepapgpbgkhkb"]', 'chromium_ids = ["SIDER"]'), "32 letters"),
    ],
)
def test_a_bad_entry_is_an_error_naming_it(change: tuple[str, str], message: str) -> None:
    text, label = read_catalog("aitools.toml")
    old, new = change
    source = text.decode()
    assert old in source, f"the packaged catalog no longer has {old!r}"
    with pytest.raises(CatalogError, match=message):
        parse_aitools_catalog(source.replace(old, new, 1), label)


def test_ai_tooling_rules_travel_from_the_collector_to_the_agent() -> None:
    body = validate(
        {
            "approved_agents": ["github-copilot"],
            "approved_mcp_servers": ["*.example.com"],
            "approved_extensions": ["GitHub.Copilot-Chat"],
        }
    )
    wire = to_wire(3, body)
    kinds = {r.kind for r in wire.rules if r.values}
    assert {
        contract.RULE_APPROVED_AGENT,
        contract.RULE_APPROVED_MCP_SERVER,
        contract.RULE_APPROVED_EXTENSION,
    } <= kinds
    policy = FleetPolicy.from_wire(wire).detection_policy(Policy())
    assert policy.approved_extensions == frozenset({"github.copilot-chat"})
    agent = FindingDraft(fpb.KIND_AI_AGENT, "k", fpb.SEVERITY_MEDIUM, 0.9, "s", "o", "github-copilot")
    decision = policy.decide(agent)
    assert decision is not None and decision.approved and decision.rule == "approved_agents:github-copilot"
    server = fpb.Evidence(mcp_server=fpb.McpServerEvidence(name="docs", remote_host="mcp.example.com:443"))
    draft = FindingDraft(
        fpb.KIND_MCP_SERVER, "k", fpb.SEVERITY_HIGH, 0.9, "s", "o", "docs", evidence=[server]
    )
    decision = policy.decide(draft)
    assert decision is not None and decision.approved
    other = fpb.Evidence(mcp_server=fpb.McpServerEvidence(name="x", remote_host="mcp.evil.example.net"))
    draft = FindingDraft(fpb.KIND_MCP_SERVER, "k", fpb.SEVERITY_HIGH, 0.9, "s", "o", "x", evidence=[other])
    decision = policy.decide(draft)
    assert decision is not None and not decision.approved


def test_a_flow_from_an_ai_agent_names_the_agent() -> None:
    from agent.catalog.endpoints import load_endpoint_catalog
    from agent.detection.network import NetworkDetector
    from agent.observations import NetworkObservation, ProcessObservation

    def flow(cmdline: tuple[str, ...]) -> NetworkObservation:
        proc = ProcessObservation(4242, 1, "node", "/usr/bin/node", cmdline, "dev", 1700000000.0)
        return NetworkObservation(
            "api.anthropic.com", "tls_sni", "10.0.0.2", 50000, "160.79.104.10", 443, "tcp",
            1700000001.0, 1700000002.0, 2000, 9000, 12, process=proc,
        )  # fmt: skip

    detector = NetworkDetector(load_endpoint_catalog())
    (agent,) = detector.detect(flow(("node", "/usr/lib/node_modules/@anthropic-ai/claude-code/cli.js")))
    assert "by Claude Code (pid 4242, node)" in agent.summary
    assert [e.ai_agent.agent_id for e in agent.evidence if e.WhichOneof("detail") == "ai_agent"] == [
        "claude-code"
    ]
    (plain,) = detector.detect(flow(("node", "server.js")))
    assert "by node (pid 4242)" in plain.summary
    assert not [e for e in plain.evidence if e.WhichOneof("detail") == "ai_agent"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[sensors.aitools]\nhomes = ["relative/home"]\n', "absolute"),
        ("[sensors.aitools]\nmax_files = 0\n", "max_files"),
        ("[sensors.aitools]\nwatch = true\n", "unknown key 'watch'"),
        ('[policy]\napproved_agents = ["skynet"]\n', "no agent id"),
    ],
)
def test_config_refuses_bad_ai_tooling_keys(tmp_path: Path, text: str, message: str) -> None:
    from agent.config import ConfigError, load_config
    from agent.policy.rules import policy_from_config

    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        policy_from_config(load_config(path))

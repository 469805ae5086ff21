"""The AI tooling sensor against real homes, real files and real processes.

Each client's file is written at its documented place in a temporary home (the catalog's path,
the format its documentation shows: see the `source` of each [[mcp_client]] in
agent/catalog/aitools.toml), with secret values in `env`, `headers`, arguments and URLs; the
sensor must find every server with the right client, transport and host, and no secret value
may appear in anything it outputs. Hostile files give counted drops. Running agents and MCP
servers are real processes with the real command lines, linked through the real process tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from umbra import codec

from agent.delivery.tracker import FindingTracker
from agent.detection.aitools import AiToolsDetector
from agent.observations import AiAgentObservation, AiExtensionObservation, McpServerObservation
from agent.pipeline import Pipeline
from agent.policy.rules import Policy
from agent.privacy.scrub import MARKER
from agent.sensors.aitools.sensor import AiToolsSensor

SECRETS = (
    "sk-ant-SECRETVALUE0123456789abcdef",
    "ghp_SECRETGITHUBTOKEN0123456789abcd",
    "hunter2dbpassword",
    "SECRETHEADERVALUE42",
    "topsecretquerykey77",
    "PROMPT-IN-A-CONVERSATION",
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_home(root: Path) -> Path:
    """A developer's home with every client's configuration at its documented place."""
    home = root / "home" / "dev"
    project = home / "src" / "shop"
    fs = {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", str(home)]}
    gh = {
        "command": "npx",
        "args": ["-y", "@modelcontextprotocol/server-github"],
        "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": SECRETS[1]},
    }
    write(
        home / ".config/Claude/claude_desktop_config.json",
        json.dumps({"mcpServers": {"filesystem": fs, "github": gh}}),
    )
    write(
        home / ".claude.json",
        json.dumps(
            {
                "numStartups": 12,
                "mcpServers": {
                    "remote-docs": {
                        "type": "http",
                        "url": f"https://mcp.example-docs.com/mcp?key={SECRETS[4]}",
                        "headers": {"Authorization": f"Bearer {SECRETS[3]}"},
                    }
                },
                "projects": {
                    str(project): {
                        "mcpServers": {
                            "db": {
                                "command": "uvx",
                                "args": [
                                    "postgres-mcp",
                                    f"postgresql://admin:{SECRETS[2]}@db.internal:5432/prod",
                                ],
                            }
                        }
                    }
                },
            }
        ),
    )
    write(
        project / ".mcp.json",
        json.dumps({"mcpServers": {"git": {"command": "uvx", "args": ["mcp-server-git"]}}}),
    )
    write(
        home / ".cursor/mcp.json",
        json.dumps({"mcpServers": {"shell": {"command": "npx", "args": ["desktop-commander"]}}}),
    )
    write(
        home / ".codeium/windsurf/mcp_config.json",
        json.dumps({"mcpServers": {"figma": {"serverUrl": "https://mcp.figma.example/sse"}}}),
    )
    write(
        home / ".config/Code/User/mcp.json",
        '{\n  // my servers\n  "servers": {\n    "playwright": {"type": "stdio", "command": "npx",'
        ' "args": ["@playwright/mcp@latest"],},\n  },\n  "inputs": [],\n}\n',
    )
    write(
        home / ".config/Code/User/globalStorage/saoudrizwan.claude-dev/settings/cline_mcp_settings.json",
        json.dumps(
            {
                "mcpServers": {
                    "memory": {
                        "command": "npx",
                        "args": ["-y", "@modelcontextprotocol/server-memory"],
                        "disabled": True,
                    }
                }
            }
        ),
    )
    write(
        home / ".codex/config.toml",
        'model = "o4-mini"\n\n[mcp_servers.docs]\ncommand = "npx"\nargs = ["-y", "mcp-server-fetch"]\n'
        f'env = {{ "API_KEY" = "{SECRETS[0]}" }}\n\n[mcp_servers.linear]\nurl = "https://mcp.linear.app/mcp"\n'
        'bearer_token_env_var = "LINEAR_TOKEN"\n',
    )
    write(
        home / ".gemini/settings.json",
        json.dumps(
            {
                "mcpServers": {
                    "stream": {
                        "httpUrl": "https://mcp.stream.example:8443/mcp",
                        "headers": {"X-Api-Key": SECRETS[3]},
                    }
                }
            }
        ),
    )
    write(
        home / ".config/goose/config.yaml",
        "GOOSE_PROVIDER: anthropic\nextensions:\n  github:\n    enabled: true\n    type: stdio\n"
        "    cmd: npx\n"
        "    args: [-y, '@modelcontextprotocol/server-github']\n    envs:\n"
        f"      GITHUB_PERSONAL_ACCESS_TOKEN: {SECRETS[1]}\n    timeout: 300\n",
    )
    write(
        home / ".config/zed/settings.json",
        '// Zed settings\n{\n  "theme": "One Dark",\n  "context_servers": {\n    "sqlite": {\n'
        '      "source": "custom", "command": "uvx",\n'
        '      "args": ["mcp-server-sqlite", "--db-path", "/tmp/x.db"],\n'
        '      "env": {}\n    },\n  },\n}\n',
    )
    write(
        home / ".continue/config.yaml",
        "name: dev\nversion: 0.0.1\nmcpServers:\n  - name: SQLite\n    command: npx\n"
        "    args: ['-y', 'mcp-sqlite', '/tmp/db']\n",
    )
    write(
        home / ".aws/amazonq/mcp.json",
        json.dumps(
            {
                "mcpServers": {
                    "aws-docs": {"command": "uvx", "args": ["awslabs.aws-documentation-mcp-server@latest"]}
                }
            }
        ),
    )
    write(
        home / ".kiro/settings/mcp.json",
        json.dumps({"mcpServers": {"fetch": {"command": "uvx", "args": ["mcp-server-fetch"]}}}),
    )
    write(
        home / ".config/opencode/opencode.json",
        json.dumps(
            {
                "mcp": {
                    "jira": {
                        "type": "local",
                        "command": ["npx", "-y", "jira-mcp-server"],
                        "environment": {"JIRA_TOKEN": SECRETS[0]},
                    }
                }
            }
        ),
    )
    # Conversation and history files: never read, never reported.
    write(home / ".claude/projects/-src-shop/abc.jsonl", json.dumps({"prompt": SECRETS[5]}))
    write(home / ".codex/sessions/2026/11/30/rollout.jsonl", json.dumps({"prompt": SECRETS[5]}))
    write(home / ".gemini/tmp/chats/session.json", json.dumps({"prompt": SECRETS[5]}))
    return home


def sensor_for(*homes: Path, **kw: object) -> AiToolsSensor:
    return AiToolsSensor(homes=[str(h) for h in homes], processes=False, machine_wide=False, **kw)  # type: ignore[arg-type]


def servers(observations: object) -> dict[tuple[str, str], McpServerObservation]:
    return {(o.client, o.name): o for o in observations if isinstance(o, McpServerObservation)}  # type: ignore[attr-defined]


def test_every_client_config_is_read_with_names_never_values(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    sensor = sensor_for(home)
    found = servers(sensor.poll())
    expected = {
        ("claude-desktop", "filesystem"): ("stdio", ""),
        ("claude-desktop", "github"): ("stdio", ""),
        ("claude-code", "remote-docs"): ("http", "mcp.example-docs.com"),
        ("claude-code", "db"): ("stdio", ""),
        ("claude-code", "git"): ("stdio", ""),
        ("cursor", "shell"): ("stdio", ""),
        ("windsurf", "figma"): ("sse", "mcp.figma.example"),
        ("vscode", "playwright"): ("stdio", ""),
        ("cline", "memory"): ("stdio", ""),
        ("codex-cli", "docs"): ("stdio", ""),
        ("codex-cli", "linear"): ("http", "mcp.linear.app"),
        ("gemini-cli", "stream"): ("http", "mcp.stream.example:8443"),
        ("goose", "github"): ("stdio", ""),
        ("zed", "sqlite"): ("stdio", ""),
        ("continue", "SQLite"): ("stdio", ""),
        ("amazon-q", "aws-docs"): ("stdio", ""),
        ("kiro", "fetch"): ("stdio", ""),
        ("opencode", "jira"): ("stdio", ""),
    }
    assert set(found) == set(expected), set(found) ^ set(expected)
    for key, (transport, host) in expected.items():
        assert (found[key].transport, found[key].remote_host) == (transport, host), key
    assert found[("claude-code", "db")].scope == "local"
    assert found[("claude-code", "git")].scope == "project"
    assert found[("claude-desktop", "github")].env_names == ("GITHUB_PERSONAL_ACCESS_TOKEN",)
    assert found[("goose", "github")].env_names == ("GITHUB_PERSONAL_ACCESS_TOKEN",)
    assert found[("opencode", "jira")].command == "npx" and found[("opencode", "jira")].env_names == (
        "JIRA_TOKEN",
    )
    assert found[("claude-code", "remote-docs")].header_names == ("Authorization",)
    assert found[("codex-cli", "linear")].env_names == ("LINEAR_TOKEN",)
    assert found[("cline", "memory")].disabled
    db_args = found[("claude-code", "db")].args
    assert db_args[1] == f"postgresql://{MARKER}@db.internal:5432/prod", db_args
    assert sensor.drops == {}
    text = repr(sensor.last_inventory)
    for secret in SECRETS:
        assert secret not in text


def test_findings_carry_no_secret_and_score_access(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    sensor = sensor_for(home)
    pipeline = Pipeline([sensor], [AiToolsDetector()], Policy(), FindingTracker("h-test", 300))
    findings = pipeline.poll()
    dumped = json.dumps([codec.finding_to_dict(f) for f in findings])
    for secret in SECRETS:
        assert secret not in dumped
    by_name = {f.evidence[0].mcp_server.name: f for f in findings if codec.kind_name(f.kind) == "MCP_SERVER"}
    assert codec.severity_name(by_name["filesystem"].severity) == "high"  # filesystem access
    assert codec.severity_name(by_name["shell"].severity) == "high"  # desktop-commander: shell
    assert codec.severity_name(by_name["db"].severity) == "high"  # a database
    assert codec.severity_name(by_name["remote-docs"].severity) == "high"  # remote, not approved
    assert codec.severity_name(by_name["git"].severity) == "high"  # a repository on disk
    assert codec.severity_name(by_name["jira"].severity) == "medium"
    assert codec.severity_name(by_name["memory"].severity) == "info"  # disabled
    assert list(by_name["filesystem"].evidence[0].mcp_server.access) == ["filesystem"]


def test_no_secret_reaches_the_spool_or_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from agent.delivery.spool import Spool

    home = make_home(tmp_path)
    caplog.set_level("DEBUG")
    tracker = FindingTracker("h-test", 300)
    findings = Pipeline([sensor_for(home)], [AiToolsDetector()], Policy(), tracker).poll()
    spool = Spool(tmp_path / "spool.db")
    spool.append(findings, states=tracker.take_unsaved())
    spool.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("spool.db*"))
    assert findings and len(stored) > 1000
    for secret in SECRETS:
        assert secret.encode() not in stored
        assert secret not in caplog.text


def test_policy_approves_servers_by_name_package_or_host(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    policy = Policy(
        approved_mcp_servers=frozenset({"mcp.example-docs.com", "@modelcontextprotocol/server-github"})
    )
    detector = AiToolsDetector(policy=policy)
    pipeline = Pipeline([sensor_for(home)], [detector], policy, FindingTracker("h-test", 300))
    findings = pipeline.poll()
    decided = {
        (f.evidence[0].mcp_server.client, f.evidence[0].mcp_server.name): f
        for f in findings
        if codec.kind_name(f.kind) == "MCP_SERVER"
    }
    remote = decided[("claude-code", "remote-docs")]
    assert remote.policy.approved and remote.policy.rule == "approved_mcp_servers:mcp.example-docs.com"
    assert codec.severity_name(remote.severity) == "info"
    assert decided[("goose", "github")].policy.approved
    assert not decided[("claude-desktop", "filesystem")].policy.approved


def test_a_changed_entry_is_a_new_observation(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    sensor = sensor_for(home, interval=0.0)
    before = servers(sensor.poll())[("cursor", "shell")].content_hash
    assert servers(sensor.poll())[("cursor", "shell")].content_hash == before
    write(
        home / ".cursor/mcp.json",
        json.dumps({"mcpServers": {"shell": {"command": "npx", "args": ["desktop-commander", "--x"]}}}),
    )
    assert servers(sensor.poll())[("cursor", "shell")].content_hash != before


def test_hostile_files_are_counted_drops(tmp_path: Path) -> None:
    home = tmp_path / "home" / "hostile"
    write(home / ".cursor/mcp.json", '{"mcpServers": {"a": ')  # malformed
    write(home / ".gemini/settings.json", "[" * 100_000 + "]" * 100_000)  # deeply nested
    write(home / ".kiro/settings/mcp.json", '{"mcpServers": ' + '{"a": ' * 40 + "1" + "}" * 41)  # 41 deep
    big = home / ".claude.json"
    big.parent.mkdir(parents=True, exist_ok=True)
    with open(big, "wb") as f:
        f.truncate(8 * 2**20)  # over the 4 MiB budget
    loop = home / ".codeium/windsurf"
    loop.mkdir(parents=True)
    os.symlink("mcp_config.json", loop / "mcp_config.json")  # a symlink to itself
    fifo = home / ".config/Claude/claude_desktop_config.json"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)  # a FIFO: opening it to read would block
    write(home / ".config/goose/config.yaml", "a: &a [x]\nb: &b [*a, *a]\nc: [*b, *b]\n")  # aliases refused
    write(home / ".codex/config.toml", "[mcp_servers.x\ncommand = ")
    (home / ".aws/amazonq").mkdir(parents=True)
    (home / ".aws/amazonq/mcp.json").mkdir()  # a directory where a file belongs
    sensor = sensor_for(home, interval=0.0)
    started = time.monotonic()
    assert sensor.poll() == []
    assert time.monotonic() - started < 10
    assert sensor.drops == {"malformed": 3, "too_deep": 2, "too_large": 1, "unreadable": 1, "not_regular": 2}
    status = sensor.status()
    assert "configuration files skipped" in status.reason and "too large" in status.reason
    sensor.poll()  # the same files again: counted again since start, once in the status
    assert sensor.drops["too_large"] == 2 and "9 configuration files skipped" in sensor.status().reason


def test_budget_of_files_per_pass_is_counted(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    sensor = sensor_for(home, max_files=3)
    sensor.poll()
    assert sensor.reader.read == 3 and sensor.drops["budget"] > 0


def test_conversation_files_are_never_opened(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    history = [
        home / ".claude/projects/-src-shop/abc.jsonl",
        home / ".codex/sessions/2026/11/30/rollout.jsonl",
        home / ".gemini/tmp/chats/session.json",
    ]
    control = home / ".cursor/mcp.json"  # a file the sensor reads: proves atime moves here
    for path in (*history, control):
        st = path.stat()
        os.utime(path, (st.st_mtime - 3600, st.st_mtime))  # atime before mtime: relatime updates it
    before = {p: p.stat().st_atime for p in history}
    sensor_for(home).poll()
    if control.stat().st_atime == control.stat().st_mtime - 3600:
        pytest.skip("this file system does not update access times")
    assert {p: p.stat().st_atime for p in history} == before


def test_extensions_of_browsers_and_editors_matched_by_id(tmp_path: Path) -> None:
    home = tmp_path / "home" / "ext"
    chrome = home / ".config/google-chrome/Profile 1/Extensions"
    claude = "fcoeoabgfenejglbffodgkkbkcdhcgfn"
    write(
        chrome / claude / "1.0.56_0/manifest.json",
        json.dumps(
            {
                "name": "Claude",
                "version": "1.0.56",
                "permissions": ["sidePanel", "nativeMessaging", "debugger"],
                "host_permissions": ["<all_urls>"],
            }
        ),
    )
    ublock = "cjpalhdlnbpafiamejdnhcphjbkeiagm"  # an ad blocker: not AI
    write(
        chrome / ublock / "1.60.0_0/manifest.json",
        json.dumps({"name": "uBlock Origin", "permissions": ["<all_urls>"]}),
    )
    brave = home / ".config/BraveSoftware/Brave-Browser/Default/Extensions"
    write(
        brave / "hlgbcneanomplepojfcnclggenpcoldo/2.1_0/manifest.json",
        json.dumps({"name": "__MSG_appName__", "version": "2.1"}),
    )
    write(
        home / ".vscode/extensions/github.copilot-chat-0.30.1/package.json",
        json.dumps({"name": "copilot-chat", "displayName": "GitHub Copilot Chat", "version": "0.30.1"}),
    )
    write(
        home / ".vscode/extensions/github.copilot-chat-0.29.0/package.json", json.dumps({"version": "0.29.0"})
    )
    write(
        home / ".vscode/extensions/ms-python.python-2026.1.0/package.json",
        json.dumps({"version": "2026.1.0"}),
    )
    write(
        home / ".cursor/extensions/saoudrizwan.claude-dev-3.20.0/package.json",
        json.dumps({"displayName": "Cline", "version": "3.20.0"}),
    )
    write(
        home / ".mozilla/firefox/abcd1234.default-release/extensions.json",
        json.dumps(
            {
                "schemaVersion": 36,
                "addons": [
                    {
                        "id": "87677a2c52b84ad3a151a4a72f5bd3c4@jetpack",
                        "version": "8.912.0",
                        "defaultLocale": {"name": "Grammarly"},
                        "userPermissions": {"permissions": ["storage"], "origins": ["<all_urls>"]},
                    },
                    {
                        "id": "uBlock0@raymondhill.net",
                        "version": "1.60.0",
                        "defaultLocale": {"name": "uBlock"},
                    },
                ],
            }
        ),
    )
    (home / ".local/share/JetBrains/PyCharm2025.2/ml-llm/lib").mkdir(parents=True)
    (home / ".local/share/JetBrains/PyCharm2025.2/python-ce/lib").mkdir(parents=True)
    sensor = sensor_for(home)
    found = sensor.poll()
    exts = {(o.application, o.extension_id): o for o in found if isinstance(o, AiExtensionObservation)}
    assert set(exts) == {
        ("chrome", claude),
        ("brave", "hlgbcneanomplepojfcnclggenpcoldo"),
        ("vscode", "github.copilot-chat"),
        ("cursor", "saoudrizwan.claude-dev"),
        ("jetbrains", "ml-llm"),
        ("firefox", "87677a2c52b84ad3a151a4a72f5bd3c4@jetpack"),
    }
    grammarly = exts[("firefox", "87677a2c52b84ad3a151a4a72f5bd3c4@jetpack")]
    assert (grammarly.profile, grammarly.name, grammarly.version) == (
        "abcd1234.default-release",
        "Grammarly",
        "8.912.0",
    )
    assert "<all_urls>" in grammarly.permissions
    assert exts[("chrome", claude)].profile == "Profile 1"
    assert "<all_urls>" in exts[("chrome", claude)].permissions
    assert exts[("vscode", "github.copilot-chat")].version == "0.30.1"
    assert exts[("brave", "hlgbcneanomplepojfcnclggenpcoldo")].name == ""  # a message placeholder is no name
    agents = {o.agent_id for o in found if isinstance(o, AiAgentObservation)}
    # the editors' agents, and Cursor itself (its extensions directory is its installation)
    assert agents == {"github-copilot", "cline", "jetbrains-ai-assistant", "cursor"}
    drafts = [
        d for o in found for d in AiToolsDetector().detect(o) if codec.kind_name(d.kind) == "AI_EXTENSION"
    ]
    severity = {d.subject: codec.severity_name(d.severity) for d in drafts}
    assert severity[claude] == "medium" and severity["github.copilot-chat"] == "low"


def test_installed_agents_npm_path_and_version(tmp_path: Path) -> None:
    home = tmp_path / "home" / "npm"
    package = home / ".npm-global/lib/node_modules/@anthropic-ai/claude-code"
    write(package / "package.json", json.dumps({"name": "@anthropic-ai/claude-code", "version": "2.0.14"}))
    write(package / "cli.js", "// cli\n")
    bin_dir = home / ".npm-global/bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "claude").symlink_to(package / "cli.js")
    os.chmod(package / "cli.js", 0o755)
    codex = home / ".local/bin/codex"
    write(codex, "#!/bin/sh\n")
    codex.chmod(0o755)
    write(home / ".local/bin/notes", "#!/bin/sh\n").chmod(0o755)  # not an agent
    found = [o for o in sensor_for(home).poll() if isinstance(o, AiAgentObservation)]
    seen = {(o.agent_id, o.source, o.version) for o in found}
    assert seen == {("claude-code", "npm_global", "2.0.14"), ("codex-cli", "path", "")}


# --- running agents and MCP servers: real processes --------------------------------------------

STAY = "import time, sys\ntime.sleep(120)\n"
# argv: the program to keep alive, the interpreter (sys.executable is no help: with argv[0] "node",
# Python looks its own path up on PATH under that name, and may find a real Node.js)
AGENT = """import subprocess, sys, time
child = subprocess.Popen(["bash", "-c", "exec -a npx " + sys.argv[2] + " " + sys.argv[1] +
                          " -y @modelcontextprotocol/server-filesystem /home/u"])
time.sleep(120)
"""


@pytest.fixture
def running_tools(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    cli = write(tmp_path / "x/node_modules/@anthropic-ai/claude-code/cli.js", AGENT)
    stay = write(tmp_path / "stay.py", STAY)
    plain = write(tmp_path / "app/server.js", STAY)
    # argv[0] is not the interpreter's name: it must be told where its standard library is
    env = {**os.environ, "PYTHONHOME": sys.base_prefix}
    python = os.path.realpath(sys.executable)
    procs = [
        subprocess.Popen(["bash", "-c", f"exec -a node {python} {cli} {stay} {python}"], env=env),
        subprocess.Popen(["bash", "-c", f"exec -a node {python} {plain}"], env=env),  # a plain Node server
        subprocess.Popen(["bash", "-c", f"exec -a npm {python} {stay} run dev"], env=env),  # npm run dev
    ]
    try:
        yield procs[0]
    finally:
        for proc in procs:
            subprocess.run(["pkill", "-P", str(proc.pid)], check=False)
            proc.kill()
            proc.wait()


def test_running_agent_and_its_mcp_server_are_linked(running_tools: subprocess.Popen[bytes]) -> None:
    sensor = AiToolsSensor(homes=[], machine_wide=False, interval=3600)
    deadline = time.monotonic() + 30  # generous: two shared CPUs
    while True:
        found = sensor.poll()
        mine_agents = [
            o
            for o in found
            if isinstance(o, AiAgentObservation) and o.process and o.process.pid == running_tools.pid
        ]
        mine_servers = [
            o
            for o in found
            if isinstance(o, McpServerObservation) and o.parent and o.parent.pid == running_tools.pid
        ]
        # the server is reported from its first sight (a shell about to exec it): wait for the exec
        execed = [o for o in mine_servers if o.process is not None and o.process.cmdline[:1] == ("npx",)]
        if (mine_agents and execed) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(mine_agents) == 1 and mine_agents[0].agent_id == "claude-code"
    assert mine_agents[0].mcp_children == ("@modelcontextprotocol/server-filesystem",)
    assert len(mine_servers) == 1
    server = mine_servers[0]
    assert server.name == "@modelcontextprotocol/server-filesystem" and server.client == "claude-code"
    assert server.process is not None and server.process.cmdline[0] == "npx"
    assert server.process.ppid == running_tools.pid
    everything = {
        o.process.pid for o in found if isinstance(o, AiAgentObservation | McpServerObservation) and o.process
    }
    lookalikes = {p.pid for p in psutil_children_of_test()} - {running_tools.pid, server.process.pid}
    assert not (everything & lookalikes), "a plain node server or npm run dev was reported"
    drafts = [d for o in (mine_agents[0], server) for d in AiToolsDetector().detect(o)]
    summaries = [d.summary for d in drafts]
    assert any("started by Claude Code" in s for s in summaries), summaries


def psutil_children_of_test() -> list[object]:
    import psutil

    return list(psutil.Process().children(recursive=True))


# --- the command line: `scan` runs the sensor, `status` names it -----------------------------------


def test_scan_reports_ai_tooling_and_status_names_the_sensor(tmp_path: Path) -> None:
    from conftest import cli

    home = make_home(tmp_path)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[agent]\nhost_id = "cli-host"\nstate_dir = "{tmp_path / "state"}"\n'
        "[sensors.files]\nenabled = false\n[sensors.network]\nenabled = false\n"
        "[sensors.gpu]\nenabled = false\n"
        f'[sensors.aitools]\nhomes = ["{home}"]\n'
        '[policy]\napproved_agents = ["claude-code"]\napproved_mcp_servers = ["mcp.example-docs.com"]\n'
    )
    result = subprocess.run(
        [cli("umbra-agent"), "scan", "--format", "json", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    findings = [json.loads(line) for line in result.stdout.splitlines()]
    mcp = [f for f in findings if f["kind"] == "MCP_SERVER"]
    servers = {(f["evidence"][0]["client"], f["evidence"][0]["name"]): f for f in mcp}
    assert ("claude-desktop", "github") in servers and ("codex-cli", "linear") in servers
    remote = servers[("claude-code", "remote-docs")]
    assert remote["policy"] == {"approved": True, "rule": "approved_mcp_servers:mcp.example-docs.com"}
    assert remote["evidence"][0]["header_names"] == ["Authorization"]
    for secret in SECRETS:
        assert secret not in result.stdout and secret not in result.stderr
    status = subprocess.run(
        [cli("umbra-agent"), "status", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0, status.stderr
    assert "aitools" in status.stdout


def test_default_homes_are_every_home_dir_and_root() -> None:
    from agent.sensors.aitools.sensor import default_homes

    homes = default_homes()
    expected = [str(p) for p in Path("/home").iterdir() if p.is_dir() and not p.is_symlink()]
    assert set(expected) <= set(homes)
    assert ("/root" in homes) == os.path.isdir("/root")
    assert len(homes) == len(set(homes))


STDIO = {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-everything"]}


@pytest.mark.parametrize(
    ("relative", "content", "client", "name"),
    [
        # macOS and Windows places of the same clients (home-relative: %APPDATA% is ~/AppData/Roaming)
        (
            "Library/Application Support/Claude/claude_desktop_config.json",
            {"mcpServers": {"mac": STDIO}},
            "claude-desktop",
            "mac",
        ),
        (
            "AppData/Roaming/Claude/claude_desktop_config.json",
            {"mcpServers": {"win": STDIO}},
            "claude-desktop",
            "win",
        ),
        ("Library/Application Support/Code/User/mcp.json", {"servers": {"mac": STDIO}}, "vscode", "mac"),
        ("AppData/Roaming/Code/User/mcp.json", {"servers": {"win": STDIO}}, "vscode", "win"),
        ("AppData/Roaming/Block/goose/config/config.yaml", None, "goose", "win"),
        # the clients the first home leaves out
        (".config/Code/User/settings.json", {"mcp": {"servers": {"old": STDIO}}}, "vscode-settings", "old"),
        (
            ".config/Code/User/globalStorage/rooveterinaryinc.roo-cline/settings/mcp_settings.json",
            {"mcpServers": {"roo": STDIO}},
            "roo-code",
            "roo",
        ),
        (".junie/mcp/mcp.json", {"mcpServers": {"junie": STDIO}}, "junie", "junie"),
        (
            ".config/zed/settings.json",
            {
                "context_servers": {
                    "old": {"command": {"path": "npx", "args": ["-y", "x-mcp"], "env": {"K": "v"}}}
                }
            },
            "zed",
            "old",
        ),
        (".lmstudio/mcp.json", {"mcpServers": {"lms": STDIO}}, "lm-studio", "lms"),
        (".copilot/mcp-config.json", {"mcpServers": {"gh": STDIO}}, "github-copilot-cli", "gh"),
        (
            ".continue/config.json",
            {
                "experimental": {
                    "modelContextProtocolServers": [
                        {"transport": {"type": "stdio", "command": "uvx", "args": ["mcp-server-sqlite"]}}
                    ]
                }
            },
            "continue-json",
            "#0",
        ),
    ],
)
def test_each_documented_location(
    tmp_path: Path, relative: str, content: object, client: str, name: str
) -> None:
    home = tmp_path / "home" / "u"
    goose = "extensions:\n  win:\n    type: stdio\n    cmd: uvx\n"
    text = json.dumps(content) if content is not None else goose
    write(home / relative, text)
    found = servers(sensor_for(home).poll())
    assert set(found) == {(client, name)}
    assert found[(client, name)].transport == "stdio" and found[(client, name)].command in ("npx", "uvx")


def test_the_daemon_registers_the_sensor_and_sends_its_inventory(tmp_path: Path) -> None:
    from agent.config import load_config
    from agent.daemon import build_pipeline, inventory

    home = make_home(tmp_path)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[agent]\nstate_dir = "{tmp_path / "state"}"\n[sensors.files]\nenabled = false\n'
        "[sensors.network]\nenabled = false\n[sensors.gpu]\nenabled = false\n"
        f'[sensors.aitools]\nhomes = ["{home}"]\n'
    )
    pipeline = build_pipeline(load_config(config), FindingTracker("h-test", 300))
    assert "aitools" in {s.name for s in pipeline.start()}
    try:
        assert inventory(pipeline) is None  # nothing inventoried yet
        pipeline.poll()
        message = inventory(pipeline)
    finally:
        pipeline.stop()
    assert message is not None
    assert {m.name for m in message.mcp_servers} >= {"filesystem", "remote-docs", "jira"}
    assert all(secret not in str(message) for secret in SECRETS)


UNPRIVILEGED = """
import json, sys
from agent.sensors.aitools.sensor import AiToolsSensor
sensor = AiToolsSensor(homes=sys.argv[1:], processes=False, machine_wide=False)
found = sensor.poll()
servers = sum(1 for o in found if type(o).__name__ == "McpServerObservation")
print(json.dumps({"servers": servers, "drops": sensor.drops, "reason": sensor.status().reason}))
"""


def test_a_home_it_cannot_enter_is_named_not_counted_per_file(tmp_path: Path) -> None:
    """Run as root without the capabilities that override file permissions (setpriv), as an agent
    that is not root runs: a home it may not enter is named once in the status, not counted as a
    drop for every catalog path below it."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs setpriv, as root")
    home = make_home(tmp_path)
    closed = tmp_path / "home" / "closed"
    write(closed / ".cursor/mcp.json", json.dumps({"mcpServers": {"x": STDIO}}))
    closed.chmod(0)
    unprivileged = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]
    try:
        result = subprocess.run(
            [*unprivileged, sys.executable, "-c", UNPRIVILEGED, str(home), str(closed)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).resolve().parents[2],
            env={**os.environ, "PYTHONPATH": "proto:."},
        )
    finally:
        closed.chmod(0o755)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["servers"] == 18 and out["drops"] == {}
    assert "1 homes not readable" in out["reason"]

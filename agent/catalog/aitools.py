"""AI tooling catalog: AI agents, MCP clients' configuration files, MCP server packages and AI
extensions, each entry with its source.

The knowledge is in `aitools.toml`; this module loads it strictly (through source.py, like every
catalog), checks that the entries point at each other correctly (a client's agent, an agent's
services in the endpoint catalog), and answers the questions the sensor and detection ask: which
agent is this process, which access does this MCP command have, which extension is this id.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from agent.catalog.runtimes import SEVERITIES
from agent.catalog.source import (
    CatalogError,
    catalog_entries,
    entry_lists,
    entry_regexes,
    entry_strings,
    parse_catalog_toml,
    read_catalog,
)

__all__ = [
    "ACCESS_KINDS",
    "CONFIG_FORMATS",
    "AgentEntry",
    "AiToolsCatalog",
    "ExtensionEntry",
    "ExtensionHost",
    "McpClientEntry",
    "McpPackageEntry",
    "RiskTable",
    "default_aitools_catalog",
    "mcp_package_name",
    "parse_aitools_catalog",
]

CONFIG_FORMATS: Final = frozenset({"json", "jsonc", "toml", "yaml"})
ACCESS_KINDS: Final = frozenset(
    {"filesystem", "shell", "database", "browser", "code_host", "cloud", "network"}
)
_TOP: Final = frozenset(
    {
        "schema_version",
        "risk",
        "npm",
        "agent",
        "mcp_client",
        "mcp_process",
        "mcp_package",
        "extension",
        "browser",
        "editor",
    }
)
ENGINES: Final = frozenset({"chromium", "firefox"})
EDITOR_KINDS: Final = frozenset({"vscode", "jetbrains"})


@dataclass(frozen=True)
class AgentEntry:
    id: str
    name: str
    vendor: str
    source: str
    services: tuple[str, ...] = ()
    process_names: tuple[str, ...] = ()
    cmdline: tuple[re.Pattern[str], ...] = ()
    npm_packages: tuple[str, ...] = ()
    binaries: tuple[str, ...] = ()
    install_paths: tuple[str, ...] = ()
    extensions: tuple[str, ...] = ()
    notes: str = ""


@dataclass(frozen=True)
class McpClientEntry:
    id: str
    name: str
    agent: str
    format: str
    source: str
    paths: tuple[str, ...] = ()
    project_files: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()
    notes: str = ""


@dataclass(frozen=True)
class McpPackageEntry:
    id: str
    name: str
    source: str
    patterns: tuple[re.Pattern[str], ...]
    access: tuple[str, ...]


@dataclass(frozen=True)
class ExtensionEntry:
    id: str
    name: str
    vendor: str
    source: str
    agent: str = ""
    services: tuple[str, ...] = ()
    chromium_ids: tuple[str, ...] = ()
    firefox_ids: tuple[str, ...] = ()
    editor_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExtensionHost:
    """A browser (engine "chromium" or "firefox") or an editor (kind "vscode" or "jetbrains") and
    where it keeps its profiles or extensions."""

    id: str
    name: str
    kind: str
    source: str
    roots: tuple[str, ...]


@dataclass(frozen=True)
class RiskTable:
    agent_running: str
    agent_installed: str
    mcp_configured: str
    mcp_risky: str
    mcp_running: str
    extension: str
    extension_risky: str
    risky_access: frozenset[str]
    risky_permissions: frozenset[str]


@dataclass(frozen=True)
class AiToolsCatalog:
    agents: tuple[AgentEntry, ...]
    clients: tuple[McpClientEntry, ...]
    packages: tuple[McpPackageEntry, ...]
    extensions: tuple[ExtensionEntry, ...]
    mcp_process: tuple[re.Pattern[str], ...]
    risk: RiskTable
    browsers: tuple[ExtensionHost, ...] = ()
    editors: tuple[ExtensionHost, ...] = ()
    npm_roots: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        by_name: dict[str, AgentEntry] = {}
        for agent in self.agents:
            for name in agent.process_names:
                by_name.setdefault(name, agent)
        object.__setattr__(self, "_by_name", by_name)
        ext: dict[str, ExtensionEntry] = {}
        for entry in self.extensions:
            for eid in (*entry.chromium_ids, *entry.firefox_ids, *entry.editor_ids):
                ext[eid.lower()] = entry
        object.__setattr__(self, "_by_extension", ext)
        object.__setattr__(self, "_agents", {a.id: a for a in self.agents})

    def agent(self, agent_id: str) -> AgentEntry | None:
        found: dict[str, AgentEntry] = self._agents  # type: ignore[attr-defined]
        return found.get(agent_id)

    def agent_of_process(self, name: str, cmdline: Sequence[str]) -> AgentEntry | None:
        """The agent a process is, by its package path or command line first (a `node` process
        running Claude Code's cli.js), then by its own name."""
        joined = " ".join(cmdline)
        if joined:
            for agent in self.agents:
                if any(p.search(joined) for p in agent.cmdline):
                    return agent
        by_name: dict[str, AgentEntry] = self._by_name  # type: ignore[attr-defined]
        return by_name.get(name.removesuffix(".exe"))  # Windows names the image "claude.exe"

    def is_mcp_process(self, cmdline: Sequence[str]) -> bool:
        joined = " ".join(cmdline)
        return bool(joined) and any(p.search(joined) for p in self.mcp_process)

    def mcp_access(self, words: Sequence[str]) -> tuple[tuple[str, ...], str]:
        """(access kinds, package id) of an MCP server from its command and arguments."""
        joined = " ".join(words)
        access: dict[str, None] = {}
        package = ""
        for entry in self.packages:
            if any(p.search(joined) for p in entry.patterns):
                access.update(dict.fromkeys(entry.access))
                package = package or entry.id
        return tuple(access), package

    def extension(self, extension_id: str) -> ExtensionEntry | None:
        found: dict[str, ExtensionEntry] = self._by_extension  # type: ignore[attr-defined]
        return found.get(extension_id.lower())


# How MCP server packages are named (npm scopes and the mcp-server-* / *-mcp-server conventions,
# Docker Hub's mcp/ namespace): the package a command line or a configured entry runs.
_PACKAGE_WORD: Final = re.compile(
    r"(@modelcontextprotocol/server-[\w.-]+|@[\w.-]+/[\w.-]*mcp[\w.-]*|(?<![\w-])mcp-server-[\w.-]+"
    r"|[\w.-]+-mcp-server[\w.-]*|[\w.-]+-mcp(?![\w-])|(?<![\w-])mcp/[\w.-]+|(?<![\w-])mcp_server_\w+)"
)


def mcp_package_name(words: Sequence[str]) -> str:
    """The MCP server package among a command and its arguments, without an "@version"; "" if none."""
    for word in words:
        m = _PACKAGE_WORD.search(word)
        if m:
            name = m.group(1)
            return name[: name.rindex("@")] if name.rfind("@") > 0 else name
    return ""


@lru_cache(maxsize=1)
def default_aitools_catalog() -> AiToolsCatalog:
    return parse_aitools_catalog(*read_catalog("aitools.toml"))


def load_aitools_catalog(path: Path | None = None) -> AiToolsCatalog:
    return default_aitools_catalog() if path is None else parse_aitools_catalog(*read_catalog("", path))


def parse_aitools_catalog(
    data: bytes | str, label: str = "<string>", service_ids: frozenset[str] | None = None
) -> AiToolsCatalog:
    """The catalog, checked; `service_ids` (default: the packaged endpoint catalog's) are the
    endpoint ids an agent's or extension's `services` may name."""
    doc = parse_catalog_toml(data, label, _TOP)
    if service_ids is None:
        from agent.catalog.endpoints import default_endpoint_catalog

        service_ids = frozenset(e.id for e in default_endpoint_catalog().entries)
    agents = catalog_entries(doc, "agent", label, _agent)
    clients = catalog_entries(doc, "mcp_client", label, _client)
    packages = catalog_entries(doc, "mcp_package", label, _package)
    extensions = catalog_entries(doc, "extension", label, _extension)
    agent_ids = {a.id for a in agents}
    serving: list[AgentEntry | ExtensionEntry] = [*agents, *extensions]
    for item in serving:
        unknown = sorted(set(item.services) - service_ids)
        if unknown:
            raise CatalogError(
                f"{label}: entry {item.id!r}: service {unknown[0]!r} is not in ai_endpoints.toml"
            )
    linking: list[McpClientEntry | ExtensionEntry] = [*clients, *extensions]
    for linked in linking:
        if linked.agent and linked.agent not in agent_ids:
            raise CatalogError(f"{label}: entry {linked.id!r}: agent {linked.agent!r} is not an [[agent]] id")
    process = doc.get("mcp_process")
    if not isinstance(process, dict):
        raise CatalogError(f"{label}: [mcp_process] is missing")
    fail, _ = entry_strings(
        process, 0, label, known={"patterns", "source"}, required={"patterns", "source"}, strings={"source"}
    )
    mcp_process = entry_regexes(entry_lists(process, ("patterns",), fail)["patterns"], "patterns", fail)
    browsers = catalog_entries(doc, "browser", label, _host("engine", "profile_roots", ENGINES))
    editors = catalog_entries(doc, "editor", label, _host("kind", "extension_dirs", EDITOR_KINDS))
    npm = doc.get("npm")
    if not isinstance(npm, dict):
        raise CatalogError(f"{label}: [npm] is missing")
    fail, _ = entry_strings(
        npm,
        0,
        label,
        known={"global_roots", "source"},
        required={"global_roots", "source"},
        strings={"source"},
    )
    npm_roots = entry_lists(npm, ("global_roots",), fail)["global_roots"]
    _check_paths(npm_roots, fail)
    return AiToolsCatalog(
        agents,
        clients,
        packages,
        extensions,
        mcp_process,
        _risk(doc.get("risk"), label),
        browsers,
        editors,
        npm_roots,
    )


def _host(
    kind_key: str, roots_key: str, kinds: frozenset[str]
) -> Callable[[Mapping[str, Any], int, str], ExtensionHost]:
    def parse(raw: Mapping[str, Any], number: int, label: str) -> ExtensionHost:
        fail, s = entry_strings(
            raw,
            number,
            label,
            known={"id", "name", "source", kind_key, roots_key},
            required={"id", "name", "source", kind_key, roots_key},
            strings={"id", "name", "source", kind_key},
        )
        if s[kind_key] not in kinds:
            raise fail(f"{kind_key} must be one of {sorted(kinds)}")
        roots = entry_lists(raw, (roots_key,), fail)[roots_key]
        _check_paths(roots, fail)
        return ExtensionHost(s["id"], s["name"], s[kind_key], s["source"], roots)

    return parse


def _agent(raw: Mapping[str, Any], number: int, label: str) -> AgentEntry:
    lists = (
        "services",
        "process_names",
        "cmdline",
        "npm_packages",
        "binaries",
        "install_paths",
        "extensions",
    )
    fail, s = entry_strings(
        raw,
        number,
        label,
        known={"id", "name", "vendor", "source", "notes", *lists},
        required={"id", "name", "vendor", "source"},
        strings={"id", "name", "vendor", "source", "notes"},
    )
    got = entry_lists(raw, lists, fail)
    _check_paths(got["install_paths"], fail)
    return AgentEntry(
        id=s["id"],
        name=s["name"],
        vendor=s["vendor"],
        source=s["source"],
        services=got["services"],
        process_names=got["process_names"],
        cmdline=entry_regexes(got["cmdline"], "cmdline", fail),
        npm_packages=got["npm_packages"],
        binaries=got["binaries"],
        install_paths=got["install_paths"],
        extensions=tuple(e.lower() for e in got["extensions"]),
        notes=s.get("notes", ""),
    )


def _client(raw: Mapping[str, Any], number: int, label: str) -> McpClientEntry:
    lists = ("paths", "project_files", "servers")
    fail, s = entry_strings(
        raw,
        number,
        label,
        known={"id", "name", "agent", "format", "source", "notes", *lists},
        required={"id", "name", "format", "source", "servers"},
        strings={"id", "name", "agent", "format", "source", "notes"},
    )
    got = entry_lists(raw, lists, fail)
    if s["format"] not in CONFIG_FORMATS:
        raise fail(f"format {s['format']!r} is not one of {sorted(CONFIG_FORMATS)}")
    if not got["paths"] and not got["project_files"]:
        raise fail("a client needs paths or project_files")
    if not got["servers"]:
        raise fail("servers must name where the servers are")
    _check_paths(got["paths"], fail)
    if any(p.startswith(("/", "~")) for p in got["project_files"]):
        raise fail("project_files are relative to a project directory")
    return McpClientEntry(
        id=s["id"],
        name=s["name"],
        agent=s.get("agent", ""),
        format=s["format"],
        source=s["source"],
        paths=got["paths"],
        project_files=got["project_files"],
        servers=got["servers"],
        notes=s.get("notes", ""),
    )


def _package(raw: Mapping[str, Any], number: int, label: str) -> McpPackageEntry:
    fail, s = entry_strings(
        raw,
        number,
        label,
        known={"id", "name", "source", "patterns", "access"},
        required={"id", "name", "source", "patterns", "access"},
        strings={"id", "name", "source"},
    )
    got = entry_lists(raw, ("patterns", "access"), fail)
    wrong = sorted(set(got["access"]) - ACCESS_KINDS)
    if wrong or not got["access"]:
        raise fail(f"access must be some of {sorted(ACCESS_KINDS)}, not {wrong or '[]'}")
    return McpPackageEntry(
        s["id"], s["name"], s["source"], entry_regexes(got["patterns"], "patterns", fail), got["access"]
    )


def _extension(raw: Mapping[str, Any], number: int, label: str) -> ExtensionEntry:
    lists = ("services", "chromium_ids", "firefox_ids", "editor_ids")
    fail, s = entry_strings(
        raw,
        number,
        label,
        known={"id", "name", "vendor", "source", "agent", *lists},
        required={"id", "name", "vendor", "source"},
        strings={"id", "name", "vendor", "source", "agent"},
    )
    got = entry_lists(raw, lists, fail)
    if not (got["chromium_ids"] or got["firefox_ids"] or got["editor_ids"]):
        raise fail("an extension needs chromium_ids, firefox_ids or editor_ids")
    if not all(re.fullmatch(r"[a-p]{32}", i) for i in got["chromium_ids"]):
        raise fail("a Chromium extension id is 32 letters a-p")
    return ExtensionEntry(
        id=s["id"],
        name=s["name"],
        vendor=s["vendor"],
        source=s["source"],
        agent=s.get("agent", ""),
        services=got["services"],
        chromium_ids=got["chromium_ids"],
        firefox_ids=got["firefox_ids"],
        editor_ids=tuple(e.lower() for e in got["editor_ids"]),
    )


_RISK_LEVELS: Final = (
    "agent_running",
    "agent_installed",
    "mcp_configured",
    "mcp_risky",
    "mcp_running",
    "extension",
    "extension_risky",
)


def _risk(raw: Any, label: str) -> RiskTable:
    if not isinstance(raw, dict):
        raise CatalogError(f"{label}: [risk] is missing")
    fail, s = entry_strings(
        raw,
        0,
        label,
        known={*_RISK_LEVELS, "risky_access", "risky_permissions", "source"},
        required={*_RISK_LEVELS, "risky_access", "risky_permissions", "source"},
        strings={*_RISK_LEVELS, "source"},
    )
    for key in _RISK_LEVELS:
        if s[key] not in SEVERITIES:
            raise fail(f"{key} must be one of {sorted(SEVERITIES)}")
    got = entry_lists(raw, ("risky_access", "risky_permissions"), fail)
    if not set(got["risky_access"]) <= ACCESS_KINDS:
        raise fail(f"risky_access must be some of {sorted(ACCESS_KINDS)}")
    return RiskTable(
        **{k: s[k] for k in _RISK_LEVELS},
        risky_access=frozenset(got["risky_access"]),
        risky_permissions=frozenset(got["risky_permissions"]),
    )


def _check_paths(paths: Sequence[str], fail: Any) -> None:
    for path in paths:
        if not (path.startswith(("~/", "/")) or re.match(r"[A-Z]:/", path)):
            raise fail(f"path {path!r} must start with '~/' or be absolute")

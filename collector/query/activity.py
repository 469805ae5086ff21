"""Fleet activity views: AI services, local runtimes and exposed servers, GPU and fine-tuning,
AI agents, MCP servers and AI extensions, the model census, exfiltration and downloads, silent
hosts. Each is one grouped query."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from umbra.v1 import finding_pb2

from ..risk import score_spec
from ..storage.base import HostContact, Store
from ..storage.reads import ActivityRow, FindingFilter, ModelRow, RuntimeRow, ScoreSpec, ServiceRow
from .risk import as_of

COMPUTE_KINDS = (finding_pb2.KIND_GPU_AI_WORKLOAD, finding_pb2.KIND_FINE_TUNING)
TRANSFER_KINDS = (finding_pb2.KIND_MODEL_EXFILTRATION, finding_pb2.KIND_MODEL_DOWNLOAD)
AITOOL_KINDS = (finding_pb2.KIND_AI_AGENT, finding_pb2.KIND_MCP_SERVER, finding_pb2.KIND_AI_EXTENSION)


def services(store: Store, since: float | None = None) -> list[ServiceRow]:
    """AI services used across the fleet: hosts, processes, bytes up, approved or not."""
    return store.services(since)


def service_categories(store: Store, names: Sequence[str]) -> dict[str, str]:
    """Each AI service's category ("chat_app", "model_api"... as the agent's catalog names it; ""
    when its findings carry none), read from its newest finding: one indexed lookup per service,
    so the cost follows the number of services, never the number of findings."""
    out: dict[str, str] = {}
    for name in names:
        page = store.findings_page(FindingFilter(service=name), 1)
        out[name] = next(
            (
                str(ev.get("category", ""))
                for f in page.findings
                for ev in f["evidence"]
                if ev.get("type") == "network" and ev.get("host_name") == name
            ),
            "",
        )
    return out


def runtimes(store: Store, since: float | None = None) -> list[RuntimeRow]:
    """Local model runtimes across the fleet, with the hosts where one is exposed."""
    return store.runtimes(since)


def _kept(store: Store, since: float | None) -> ScoreSpec | None:
    """The scoring the risk views use now: with it and no `since`, an activity view reads the hosts'
    kept tally (one row per host, kind, severity and approval), never the findings."""
    return score_spec(as_of(store)) if since is None else None


def compute(store: Store, since: float | None = None) -> list[ActivityRow]:
    """GPU AI workloads and fine-tuning, per host."""
    return store.activity([int(k) for k in COMPUTE_KINDS], since, _kept(store, since))


def transfers(store: Store, since: float | None = None) -> list[ActivityRow]:
    """Model exfiltration and downloads, per host, with their bytes."""
    return store.activity([int(k) for k in TRANSFER_KINDS], since, _kept(store, since))


def aitools(store: Store, since: float | None = None) -> list[ActivityRow]:
    """AI agents, MCP servers and AI extensions, per host: which hosts hold them, how many unapproved."""
    return store.activity([int(k) for k in AITOOL_KINDS], since, _kept(store, since))


@dataclass(frozen=True)
class ToolRow:
    """One AI agent, MCP server or AI extension across the fleet, and the hosts that hold it."""

    kind: str  # "AI_AGENT", "MCP_SERVER", "AI_EXTENSION"
    tool: str  # agent catalog id; MCP package, remote host or name; extension id
    name: str
    hosts: tuple[str, ...]  # host ids, sorted
    details: tuple[str, ...]  # versions (agents), what it can reach (MCP), permissions (extensions)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tools(store: Store) -> list[ToolRow]:
    """Which hosts hold each AI agent, MCP server and AI extension, from every host's newest
    inventory (one per host: the cost follows hosts and their tools, never the findings); the
    tools on most hosts first."""
    found: dict[tuple[str, str], tuple[str, set[str], set[str]]] = {}

    def add(kind: str, tool: str, name: str, host: str, details: Sequence[str]) -> None:
        if tool:
            _, hosts, seen = found.setdefault((kind, tool), (name or tool, set(), set()))
            hosts.add(host)
            seen.update(d for d in details if d)

    for inv in store.inventories():
        for a in inv.ai_agents:
            add(
                "AI_AGENT",
                a.get("agent_id", ""),
                a.get("agent_name", ""),
                inv.host_id,
                [a.get("version", "")],
            )
        for m in inv.mcp_servers:
            tool = m.get("package") or m.get("remote_host") or m.get("name", "")
            add("MCP_SERVER", tool, m.get("name", ""), inv.host_id, m.get("access", []))
        for e in inv.ai_extensions:
            add(
                "AI_EXTENSION",
                e.get("extension_id", ""),
                e.get("name", ""),
                inv.host_id,
                e.get("permissions", []),
            )
    rows = [
        ToolRow(kind, tool, name, tuple(sorted(hosts)), tuple(sorted(details)))
        for (kind, tool), (name, hosts, details) in found.items()
    ]
    return sorted(rows, key=lambda r: (-len(r.hosts), r.kind, r.tool))


def census(store: Store, limit: int = 100, holders: int = 10) -> list[ModelRow]:
    """Distinct model weights by SHA-256; unapproved weights on several hosts come first."""
    return store.model_census(limit, holders)


@dataclass(frozen=True)
class SilentHost:
    host_id: str
    last_seen: float
    silent_since: float  # when the collector marked it; 0.0 when only overdue

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def silent_hosts(store: Store, silent_after: float, now: float | None = None) -> list[SilentHost]:
    """Hosts marked silent, or without contact for `silent_after` seconds; longest silent first."""
    now = time.time() if now is None else now
    out = [
        SilentHost(c.host_id, c.last_seen, c.silent_since)
        for c in store.host_contacts()
        if _is_silent(c, silent_after, now)
    ]
    return sorted(out, key=lambda s: (s.last_seen, s.host_id))


def _is_silent(c: HostContact, silent_after: float, now: float) -> bool:
    return c.silent_since > 0 or now - c.last_seen >= silent_after


def host_states(store: Store, silent_after: float, now: float | None = None) -> dict[str, int]:
    """Known hosts by state: "reporting", or "silent" (marked, or without contact for `silent_after`)."""
    now = time.time() if now is None else now
    states = {"reporting": 0, "silent": 0}
    for c in store.host_contacts():
        states["silent" if _is_silent(c, silent_after, now) else "reporting"] += 1
    return states

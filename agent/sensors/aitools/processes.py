"""AI agents and MCP servers running, linked through the process tree.

Every live process's identity (name, command line, parent) is read once per process instance
through the process sensor's own reader (agent/sensors/process/facts.py) and kept while it
lives, so a poll costs one PID listing plus the new PIDs. A process is an agent when the catalog
says so (its package path, its command line, its name); an MCP server when its command line
matches the catalog's MCP signatures, and it is linked to the nearest agent above it. Of a chain
of MCP-looking processes (`sh -c npx ...` -> `npm exec ...` -> `node .../server-filesystem`) only
the top one is reported: it is one server.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import replace

import psutil

from agent.catalog.aitools import AgentEntry, AiToolsCatalog, mcp_package_name
from agent.observations import AiAgentObservation, McpServerObservation, ProcessObservation
from agent.privacy.scrub import scrub_argv
from agent.sensors.process.facts import process_identity, process_user

MAX_DEPTH = 16  # parents walked to find the agent above an MCP server
YOUNG = 5.0  # seconds: a process this young is read again next poll (a launcher may still exec)


class ProcessTable:
    """The identity of every live process, read once per instance, and what the catalog says it is
    (an agent, an MCP server, neither), judged once per instance too: a steady poll costs a PID
    listing, not a regex pass over every command line."""

    def __init__(self, catalog: AiToolsCatalog, max_processes: int = 65536) -> None:
        self.catalog = catalog
        self.known: dict[int, ProcessObservation] = {}
        self.agents: dict[int, AgentEntry] = {}
        self.servers: set[int] = set()
        self._max = max_processes
        self._self = os.getpid()

    def refresh(self) -> None:
        now = time.time()
        pids = set(psutil.pids())
        for pid in self.known.keys() - pids:
            self._forget(pid)
        for pid in pids:
            known = self.known.get(pid)
            if pid == self._self or (known is not None and now - known.create_time >= YOUNG):
                continue
            if known is None and len(self.known) >= self._max:
                continue
            found = process_identity(pid)
            self._forget(pid)
            if found is not None:
                self._learn(pid, found[0])

    def _learn(self, pid: int, proc: ProcessObservation) -> None:
        self.known[pid] = proc
        agent = self.catalog.agent_of_process(proc.name, proc.cmdline)
        if agent is not None:
            self.agents[pid] = agent
        elif self.catalog.is_mcp_process(proc.cmdline):
            self.servers.add(pid)

    def _forget(self, pid: int) -> None:
        self.known.pop(pid, None)
        self.agents.pop(pid, None)
        self.servers.discard(pid)


def running(table: ProcessTable, now: float) -> list[AiAgentObservation | McpServerObservation]:
    """The agents and MCP servers in the table, each server linked to the agent above it."""
    known, agents = table.known, table.agents
    users: dict[int, str] = {}

    def user(pid: int) -> str:
        if pid not in users:
            users[pid] = process_user(pid)
        return users[pid]

    out: list[AiAgentObservation | McpServerObservation] = []
    children: dict[int, list[str]] = {}
    for pid in sorted(table.servers):
        chain = _ancestors(known, pid)
        if any(p in table.servers for p in _until_agent(chain, agents)):
            continue  # a child of another MCP process: the same server
        parent_pid = next((p for p in chain if p in agents), 0)
        proc = replace(known[pid], username=user(pid))
        name = mcp_package_name(proc.cmdline) or os.path.basename(
            proc.cmdline[0] if proc.cmdline else proc.name
        )
        parent = replace(known[parent_pid], username=user(parent_pid)) if parent_pid else None
        if parent_pid:
            children.setdefault(parent_pid, []).append(name)
        args = tuple(scrub_argv(proc.cmdline[1:64]))
        command = scrub_argv(proc.cmdline[:1])[0] if proc.cmdline else proc.name
        digest = hashlib.sha256("\x1f".join((command, *args)).encode()).hexdigest()
        out.append(
            McpServerObservation(
                name=name,
                client=agents[parent_pid].id if parent_pid else "",
                scope="running",
                transport="stdio" if parent_pid else "",
                command=command,
                args=args,
                content_hash=digest,
                owner=proc.username,
                process=proc,
                parent=parent,
                observed_at=now,
            )
        )
    for pid, agent in sorted(agents.items(), key=lambda item: item[0]):
        if any(agents.get(p) is agent for p in _ancestors(known, pid)):
            continue  # a helper process of the same agent
        proc = replace(known[pid], username=user(pid))
        path = next((w for w in proc.cmdline[:4] if any(p.search(w) for p in agent.cmdline)), proc.exe)
        out.append(
            AiAgentObservation(
                agent.id,
                "process",
                path,
                owner=proc.username,
                process=proc,
                mcp_children=tuple(children.get(pid, ())),
                observed_at=now,
            )
        )
    return out


def _ancestors(table: dict[int, ProcessObservation], pid: int) -> list[int]:
    chain: list[int] = []
    current = table[pid].ppid
    while current > 0 and current in table and len(chain) < MAX_DEPTH and current not in chain:
        chain.append(current)
        current = table[current].ppid
    return chain


def _until_agent(chain: Sequence[int], agents: dict[int, AgentEntry]) -> list[int]:
    out = []
    for pid in chain:
        if pid in agents:
            break
        out.append(pid)
    return out

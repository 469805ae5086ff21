"""AI tooling sensor: AI agents installed and running, MCP servers configured and running, AI
extensions of browsers and editors, per user home.

It reads only what the catalog (agent/catalog/aitools.toml) names: MCP clients' configuration
files, package.json of catalogued packages, extension manifests of catalogued extensions, and
directory listings. Conversation, history and session files (~/.claude/projects, ~/.codex/sessions,
chat histories) are never opened: no catalog path leads there. Every read goes through one budgeted
reader (files per pass, bytes per file, nesting depth); what it refuses is counted by reason
(`drops`) and named in status().

Rhythm: running processes on every poll (new PIDs only); the inventory of files every `interval`
seconds (first poll at once). Between inventories poll() returns the running processes only; the
tracker keeps the inventory's findings alive until their next refresh.
"""

from __future__ import annotations

import contextlib
import os
import platform
import pwd
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from agent.catalog.aitools import AiToolsCatalog, default_aitools_catalog
from agent.observations import (
    AiAgentObservation,
    AiExtensionObservation,
    AiToolObservation,
    McpServerObservation,
)
from agent.sensors.aitools.documents import Reader
from agent.sensors.aitools.extensions import extensions
from agent.sensors.aitools.installs import installed_agents
from agent.sensors.aitools.mcp import server_observation, servers_in
from agent.sensors.aitools.places import expand
from agent.sensors.aitools.processes import ProcessTable, running
from agent.sensors.base import Sensor, SensorCapabilities, SensorState, SensorStatus
from agent.sensors.files.roots import find_homes

MAX_PROJECTS = 64  # project directories per home taken from Claude Code's list of projects
MAX_ITEMS = 10_000  # observations per inventory


def default_homes() -> list[str]:
    """Every directory in /home, /root, and the file sensor's homes (users with a uid of 1000 or more,
    the agent's own)."""
    homes: list[str] = []
    with contextlib.suppress(OSError):
        homes += sorted(e.path for e in os.scandir("/home") if e.is_dir(follow_symlinks=False))
    homes += ["/root", *map(str, find_homes(None))]
    return [h for h in dict.fromkeys(homes) if os.path.isdir(h)]


class AiToolsSensor(Sensor):
    name = "aitools"
    capabilities = SensorCapabilities(needs_root=True, platforms=("Linux", "Darwin", "Windows"))
    produces = (AiAgentObservation, McpServerObservation, AiExtensionObservation)

    def __init__(
        self,
        *,
        homes: Sequence[str] | None = None,
        project_dirs: Sequence[str] = (),
        interval: float = 300.0,
        processes: bool = True,
        machine_wide: bool = True,
        max_files: int = 2000,
        max_file_bytes: int = 4 * 2**20,
        max_depth: int = 32,
        catalog: AiToolsCatalog | None = None,
    ) -> None:
        self._homes = list(homes) if homes is not None else None
        self._project_dirs = list(project_dirs)
        self._interval = interval
        self._processes = processes
        self._machine_wide = machine_wide
        self.catalog = catalog or default_aitools_catalog()
        self.reader = Reader(max_files, max_file_bytes, max_depth)
        self._table = ProcessTable(self.catalog)
        self._next_inventory = 0.0
        self.last_inventory: list[AiToolObservation] = []
        self.inventories = 0
        self.hidden_homes = 0

    @property
    def drops(self) -> dict[str, int]:
        return dict(self.reader.drops)

    def status(self) -> SensorStatus:
        system = platform.system()
        if system not in self.capabilities.platforms:
            return SensorStatus(self.name, SensorState.INACTIVE, f"unsupported platform {system}")
        dropped = sum(self.reader.pass_drops.values())  # the last inventory's: a bad file counts once
        note = ""
        if dropped:
            reasons = ", ".join(
                f"{n} {r.replace('_', ' ')}" for r, n in sorted(self.reader.pass_drops.items())
            )
            note = f"{dropped} configuration files skipped in the last inventory ({reasons})"
        if self.hidden_homes:
            hidden = f"{self.hidden_homes} homes not readable"
            note = f"{hidden}; {note}" if note else hidden
        if system != "Windows" and os.geteuid() != 0:
            why = "not root: other users' homes and processes are hidden"
            return SensorStatus(self.name, SensorState.DEGRADED, f"{why}; {note}" if note else why)
        return SensorStatus(self.name, SensorState.ACTIVE, note)

    def poll(self) -> Sequence[AiToolObservation]:
        now = time.time()
        out: list[AiToolObservation] = []
        if self._processes:
            self._table.refresh()
            out += running(self._table, now)
        if time.monotonic() >= self._next_inventory:
            self._next_inventory = time.monotonic() + self._interval
            self.last_inventory = self.inventory(now)
            self.inventories += 1
            out += self.last_inventory
        return out

    def inventory(self, now: float) -> list[AiToolObservation]:
        """One pass over every home's configuration, installations and extensions."""
        self.reader.new_pass()
        found: list[AiToolObservation] = []
        homes = self._homes if self._homes is not None else default_homes()
        readable = [h for h in homes if os.access(h, os.R_OK | os.X_OK)]
        self.hidden_homes = len(homes) - len(readable)  # another user's, when not root
        homes = readable
        path_dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
        places: list[tuple[str | None, str]] = [(h, _owner(h)) for h in homes]
        if self._machine_wide:
            places.append((None, ""))
        for home, owner in places:
            found += self._mcp_configs(home, owner)
            found += installed_agents(self.catalog, self.reader, home, owner, path_dirs)
            if home is not None:
                found_extensions = list(extensions(self.catalog, self.reader, home, owner))
                found += found_extensions
                found += self._agents_of_extensions(found_extensions, home, owner)
            if len(found) >= MAX_ITEMS:
                break
        return [_stamped(o, now) for o in found[:MAX_ITEMS]]

    def _mcp_configs(self, home: str | None, owner: str) -> list[McpServerObservation]:
        out: list[McpServerObservation] = []
        projects: list[str] = [] if home is None else list(self._project_dirs)
        for client in self.catalog.clients:
            for path in (p for pattern in client.paths for p in expand(pattern, home)):
                doc = self.reader.document(path, client.format)
                if doc is None:
                    continue
                scope = "user" if home is not None else "managed"
                for name, entry, where in servers_in(doc, client.servers):
                    # Claude Code's per-project ("local") servers sit under the project's key
                    out.append(
                        server_observation(client, name, entry, path, "local" if where else scope, owner)
                    )
                if client.id == "claude-code" and isinstance(doc, dict):
                    projects += _claude_projects(doc)
        for project in dict.fromkeys(projects[: MAX_PROJECTS + len(self._project_dirs)]):
            for client in self.catalog.clients:
                for relative in client.project_files:
                    path = os.path.join(project, relative)
                    doc = self.reader.document(path, client.format)
                    if doc is None:
                        continue
                    for name, entry, _ in servers_in(doc, client.servers):
                        out.append(server_observation(client, name, entry, path, "project", owner))
        return out

    def _agents_of_extensions(
        self, extensions: Sequence[AiExtensionObservation], home: str, owner: str
    ) -> list[AiAgentObservation]:
        out = []
        for ext in extensions:
            entry = self.catalog.extension(ext.extension_id)
            if entry is not None and entry.agent:
                out.append(
                    AiAgentObservation(entry.agent, "editor_extension", ext.path, ext.version, home, owner)
                )
        return out


def _claude_projects(doc: dict[str, Any]) -> list[str]:
    """The project directories Claude Code has been used in (the keys of "projects"), absolute only."""
    projects = doc.get("projects")
    if not isinstance(projects, dict):
        return []
    return [p for p in list(projects)[:MAX_PROJECTS] if isinstance(p, str) and os.path.isabs(p)]


def _owner(home: str) -> str:
    try:
        return pwd.getpwuid(os.stat(home).st_uid).pw_name
    except (OSError, KeyError):
        return ""


def _stamped(obs: AiToolObservation, now: float) -> AiToolObservation:
    return replace(obs, observed_at=now)

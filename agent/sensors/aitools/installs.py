"""AI agents installed in a home: global npm packages, binaries on the PATH, app bundles.

The version comes from the package's own package.json, read through the pass's budgeted reader;
nothing else in a package is opened.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence

from agent.catalog.aitools import AiToolsCatalog
from agent.observations import AiAgentObservation
from agent.sensors.aitools.documents import Reader
from agent.sensors.aitools.places import expand

#: Directories in a home where user installs put executables (pipx, npm prefixes, installers).
HOME_BIN_DIRS = (
    "~/.local/bin",
    "~/bin",
    "~/.npm-global/bin",
    "~/.claude/local",
    "~/.bun/bin",
    "~/.cargo/bin",
)


def package_version(reader: Reader, package_dir: str) -> str:
    data = reader.raw(os.path.join(package_dir, "package.json"))
    if data is None:
        return ""
    try:
        doc = json.loads(data)
    except ValueError:
        reader.drop("malformed")
        return ""
    version = doc.get("version") if isinstance(doc, dict) else None
    return version[:64] if isinstance(version, str) else ""


def installed_agents(
    catalog: AiToolsCatalog, reader: Reader, home: str | None, owner: str, path_dirs: Sequence[str]
) -> Iterator[AiAgentObservation]:
    """Agents installed for `home` (None: machine-wide places: system npm roots, PATH, /Applications)."""
    roots = [r for pattern in catalog.npm_roots for r in expand(pattern, home)]
    bins = list(path_dirs) if home is None else [d for p in HOME_BIN_DIRS for d in expand(p, home)]
    where = home or ""
    for agent in catalog.agents:
        seen: set[str] = set()
        for root in roots:
            for package in agent.npm_packages:
                package_dir = os.path.join(root, package)
                if os.path.isdir(package_dir) and package_dir not in seen:
                    seen.add(package_dir)
                    version = package_version(reader, package_dir)
                    yield AiAgentObservation(agent.id, "npm_global", package_dir, version, where, owner)
        for directory in bins:
            for binary in agent.binaries:
                path = os.path.join(directory, binary)
                if os.path.isfile(path) and os.access(path, os.X_OK):
                    real = os.path.realpath(path)
                    if real in seen or any(real.startswith(d + os.sep) for d in seen):
                        continue  # a link into a package already reported
                    seen.add(real)
                    version = _version_of_target(reader, real, agent.npm_packages)
                    yield AiAgentObservation(agent.id, "path", path, version, where, owner)
        for pattern in agent.install_paths:
            for path in expand(pattern, home):
                if path not in seen:
                    seen.add(path)
                    yield AiAgentObservation(agent.id, "app", path, "", where, owner)


def _version_of_target(reader: Reader, real: str, packages: Sequence[str]) -> str:
    """A binary that is a link into node_modules/<package>/: that package's version."""
    for package in packages:
        marker = f"/node_modules/{package}/"
        if marker in real:
            return package_version(reader, real[: real.index(marker) + len(marker) - 1])
    return ""

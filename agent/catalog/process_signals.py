"""Loader for process_signals.toml: AI libraries and API-key variable names (data beside code)."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from agent.catalog.source import CatalogError, parse_catalog_toml, read_catalog

LIBRARY_CATEGORIES = frozenset({"inference", "training", "gpu_runtime", "ml_framework"})
_LIBRARY_KEYS = frozenset({"pattern", "name", "category", "runtime", "source"})
_TOP_KEYS = frozenset({"schema_version", "api_key_variables", "library"})
_ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


@dataclass(frozen=True)
class LibrarySignal:
    pattern: str
    name: str
    category: str
    runtime: str
    source: str


@dataclass(frozen=True)
class ProcessSignals:
    libraries: tuple[LibrarySignal, ...]
    api_key_variables: frozenset[str]
    _combined: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        # One regex over basenames: a process maps hundreds of files, most of them not AI.
        combined = "|".join(f"(?P<l{i}>{fnmatch.translate(s.pattern)})" for i, s in enumerate(self.libraries))
        object.__setattr__(self, "_combined", re.compile(combined) if combined else None)

    def library(self, basename: str) -> LibrarySignal | None:
        """The signal a mapped file's basename matches, if any."""
        found = self._combined.match(basename) if self._combined is not None else None
        if found is None or found.lastgroup is None:
            return None
        return self.libraries[int(found.lastgroup[1:])]


def load_process_signals(path: Path | None = None) -> ProcessSignals:
    data, label = read_catalog("process_signals.toml", path)
    return _parse(parse_catalog_toml(data, label, _TOP_KEYS), label)


@lru_cache(maxsize=1)
def default_process_signals() -> ProcessSignals:
    return load_process_signals()


def _parse(doc: dict[str, Any], label: str) -> ProcessSignals:
    names = doc.get("api_key_variables", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and _ENV_NAME.fullmatch(n) for n in names):
        raise CatalogError(f"{label}: api_key_variables must be a list of UPPER_CASE variable names")
    libraries = []
    for number, raw in enumerate(doc.get("library", []), 1):
        where = f"{label}: library #{number}"
        if not isinstance(raw, dict):
            raise CatalogError(f"{where}: must be a table")
        bad = sorted(set(raw) - _LIBRARY_KEYS)
        if bad:
            raise CatalogError(f"{where}: unknown key {bad[0]!r}")
        values = {k: raw.get(k, "") for k in _LIBRARY_KEYS}
        if not all(isinstance(v, str) for v in values.values()):
            raise CatalogError(f"{where}: every value must be a string")
        for key in ("pattern", "name", "category", "source"):
            if not values[key]:
                raise CatalogError(f"{where}: missing {key!r}")
        if values["category"] not in LIBRARY_CATEGORIES:
            raise CatalogError(
                f"{where}: category {values['category']!r} is not one of "
                f"{', '.join(sorted(LIBRARY_CATEGORIES))}"
            )
        if not values["source"].startswith("https://"):
            raise CatalogError(f"{where}: source must be an https:// URL")
        libraries.append(LibrarySignal(**values))
    return ProcessSignals(tuple(libraries), frozenset(names))

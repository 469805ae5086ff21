"""Model-location catalog: where weights live (hub caches, runtime stores, Downloads), which
cloud-sync folders they must not reach, and where removable media mount.

The knowledge is in `model_locations.toml` (data, a source for every entry); this module loads
it strictly and expands its paths for a set of home directories.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from agent.catalog.source import CatalogError, parse_catalog_toml, read_catalog

__all__ = [
    "LOCATION_KINDS",
    "Location",
    "LocationCatalog",
    "SyncFolder",
    "default_location_catalog",
    "expand_location",
    "parse_location_catalog",
]

LOCATION_KINDS: Final = frozenset({"hub_cache", "model_dir", "downloads"})
LAYOUTS: Final = frozenset({"", "huggingface", "ollama", "publisher_repo"})
_ID_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]*")
_LOCATION_KEYS: Final = frozenset({"id", "name", "kind", "paths", "layout", "hub", "source"})
_SYNC_KEYS: Final = frozenset({"id", "name", "paths", "source"})


@dataclass(frozen=True)
class Location:
    id: str
    name: str
    kind: str
    paths: tuple[str, ...]
    source: str
    layout: str = ""
    hub: str = ""


@dataclass(frozen=True)
class SyncFolder:
    id: str
    name: str
    paths: tuple[str, ...]  # globs relative to a home directory
    source: str


@dataclass(frozen=True)
class LocationCatalog:
    locations: tuple[Location, ...]
    sync_folders: tuple[SyncFolder, ...]
    media_prefixes: tuple[str, ...]


@lru_cache(maxsize=1)
def default_location_catalog() -> LocationCatalog:
    return parse_location_catalog(*read_catalog("model_locations.toml"))


def parse_location_catalog(data: bytes | str, label: str = "<string>") -> LocationCatalog:
    doc = parse_catalog_toml(data, label, {"schema_version", "location", "sync_folder", "media"})
    seen: set[str] = set()
    locations = []
    for n, raw in enumerate(doc.get("location", []), 1):
        where = f"{label}: location #{n}"
        _keys(raw, _LOCATION_KEYS, {"id", "name", "kind", "paths", "source"}, where)
        entry = Location(
            id=_id(raw["id"], where, seen),
            name=_str(raw["name"], f"{where} name"),
            kind=_str(raw["kind"], f"{where} kind"),
            paths=_strs(raw["paths"], f"{where} paths"),
            source=_source(raw["source"], where),
            layout=_str(raw.get("layout", ""), f"{where} layout", empty=True),
            hub=_str(raw.get("hub", ""), f"{where} hub", empty=True),
        )
        if entry.kind not in LOCATION_KINDS:
            raise CatalogError(f"{where}: kind {entry.kind!r} is not one of {sorted(LOCATION_KINDS)}")
        if entry.layout not in LAYOUTS:
            raise CatalogError(f"{where}: layout {entry.layout!r} is not one of {sorted(LAYOUTS)}")
        locations.append(entry)
    syncs = []
    for n, raw in enumerate(doc.get("sync_folder", []), 1):
        where = f"{label}: sync_folder #{n}"
        _keys(raw, _SYNC_KEYS, _SYNC_KEYS, where)
        syncs.append(
            SyncFolder(
                id=_id(raw["id"], where, seen),
                name=_str(raw["name"], f"{where} name"),
                paths=_strs(raw["paths"], f"{where} paths"),
                source=_source(raw["source"], where),
            )
        )
    media = doc.get("media", {})
    _keys(media, {"prefixes", "source"}, {"prefixes", "source"}, f"{label}: [media]")
    _source(media["source"], f"{label}: [media]")
    prefixes = _strs(media["prefixes"], f"{label}: [media] prefixes")
    if not all(p.startswith("/") for p in prefixes):
        raise CatalogError(f"{label}: [media] prefixes must be absolute paths")
    return LocationCatalog(tuple(locations), tuple(syncs), prefixes)


def expand_location(pattern: str, home: Path | None) -> Path | None:
    """A catalog path for one home: "~/x" needs a home, "$VAR/x" needs VAR set (else None)."""
    if pattern.startswith("~/"):
        return home / pattern[2:] if home is not None else None
    if pattern.startswith("$"):
        var, _, rest = pattern[1:].partition("/")
        value = os.environ.get(var)
        if not value:
            return None
        return Path(value) / rest if rest else Path(value)
    return Path(pattern)


def _keys(
    raw: Any, allowed: set[str] | frozenset[str], required: set[str] | frozenset[str], where: str
) -> None:
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: expected a table")
    unknown = set(raw) - set(allowed)
    if unknown:
        raise CatalogError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    missing = set(required) - set(raw)
    if missing:
        raise CatalogError(f"{where}: missing key {sorted(missing)[0]!r}")


def _id(value: object, where: str, seen: set[str]) -> str:
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise CatalogError(f"{where}: id {value!r} is not a lower-case slug")
    if value in seen:
        raise CatalogError(f"{where}: duplicate id {value!r}")
    seen.add(value)
    return value


def _str(value: object, where: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not empty):
        raise CatalogError(f"{where}: expected a non-empty string")
    return value


def _strs(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise CatalogError(f"{where}: expected a non-empty list of strings")
    return tuple(value)


def _source(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.startswith("https://"):
        raise CatalogError(f"{where}: source must be an https URL")
    return value

"""Reading a catalog: the part every catalog shares (runtimes, endpoints, formats, signals...).

Each catalog is a TOML data file beside this module, optionally replaced or extended by a
user's file. Reading and the top-level checks (valid TOML, known top-level keys, the schema
version) are the same for all of them and live here; each catalog module validates its own
entries. Every error is a `CatalogError` whose one-line message names the file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection
from importlib import resources
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


class CatalogError(ValueError):
    """The catalog file is unreadable or invalid; the message names the file and the entry."""


def read_catalog(packaged: str, path: Path | None = None) -> tuple[bytes, str]:
    """(bytes, label) of `path`, or of the packaged file named `packaged` when path is None."""
    if path is None:
        resource = resources.files("agent.catalog").joinpath(packaged)
        try:
            return resource.read_bytes(), str(resource)
        except OSError as exc:
            raise CatalogError(f"{resource}: cannot read: {exc.strerror or exc}") from None
    try:
        return Path(path).read_bytes(), str(path)
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read: {exc.strerror or exc}") from None


def parse_catalog_toml(data: bytes | str, label: str, top_keys: Collection[str]) -> dict[str, Any]:
    """The document, after the checks every catalog makes before it looks at its entries."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{label}: invalid TOML: {' '.join(str(exc).split())}") from None
    unknown = sorted(set(doc) - set(top_keys))
    if unknown:
        raise CatalogError(f"{label}: unknown top-level key(s) {', '.join(map(repr, unknown))}")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise CatalogError(
            f"{label}: schema_version must be {SCHEMA_VERSION}, not {doc.get('schema_version')!r}"
        )
    return doc

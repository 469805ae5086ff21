"""Reading a catalog: the part every catalog shares (runtimes, endpoints, formats, signals...).

Each catalog is a TOML data file beside this module, optionally replaced or extended by a
user's file. Reading and the top-level checks (valid TOML, known top-level keys, the schema
version) are the same for all of them and live here; each catalog module validates its own
entries. Every error is a `CatalogError` whose one-line message names the file.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

SCHEMA_VERSION = 1


class CatalogError(ValueError):
    """The catalog file is unreadable or invalid; the message names the file and the entry."""


def read_catalog(packaged: str, path: Path | None = None) -> tuple[bytes, str]:
    """(bytes, label) of `path`, or of the packaged file named `packaged` when path is None."""
    if path is None:
        # Beside this module, in a wheel and in the one-file binary alike (PyInstaller places the
        # catalogs where the package's modules would be): importlib.resources would import
        # tempfile, shutil and zipfile into the daemon for this, most of a MiB that stays.
        resource = Path(__file__).with_name(packaged)
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


_ID = re.compile(r"[a-z0-9][a-z0-9-]*")


def entry_strings(
    raw: Mapping[str, Any],
    number: int,
    label: str,
    *,
    known: Collection[str],
    required: Collection[str],
    strings: Collection[str],
) -> tuple[Callable[[str], CatalogError], dict[str, str]]:
    """The checks every catalog entry gets: no unknown key, the required ones present, string
    fields strings, an id that is a slug, a source that is an https URL.

    Returns the entry's error maker (its messages name the file and the entry) and its string
    fields, for the catalog's own checks that follow.
    """
    given = raw.get("id")
    where = f"entry {given!r}" if isinstance(given, str) and given else f"entry #{number}"

    def fail(problem: str) -> CatalogError:
        return CatalogError(f"{label}: {where}: {problem}")

    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise fail(f"unknown key(s) {', '.join(map(repr, unknown))}")
    for key in required:
        if key not in raw:
            raise fail(f"missing required key {key!r}")
    values: dict[str, str] = {}
    for key in strings:
        if key in raw:
            value = raw[key]
            if not isinstance(value, str) or (key in required and not value.strip()):
                raise fail(f"{key!r} must be a non-empty string")
            values[key] = value
    if "id" in values and not _ID.fullmatch(values["id"]):
        raise fail("id must be a slug of lower-case letters, digits and '-'")
    if "source" in values and not values["source"].startswith("https://"):
        raise fail(f"source must be an https:// URL, not {values['source']!r}")
    return fail, values


def entry_lists(
    raw: Mapping[str, Any], keys: Collection[str], fail: Callable[[str], CatalogError]
) -> dict[str, tuple[str, ...]]:
    """An entry's list fields (absent: empty), each checked to be a list of non-empty strings."""
    lists: dict[str, tuple[str, ...]] = {}
    for key in keys:
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise fail(f"{key!r} must be a list of non-empty strings")
        lists[key] = tuple(value)
    return lists


def entry_flag(raw: Mapping[str, Any], key: str, default: bool, fail: Callable[[str], CatalogError]) -> bool:
    """An entry's boolean field (absent: `default`)."""
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise fail(f"{key!r} must be true or false")
    return value


def entry_regexes(
    sources: Collection[str], key: str, fail: Callable[[str], CatalogError], flags: int = 0
) -> tuple[re.Pattern[str], ...]:
    """An entry's regexes, compiled; one that does not compile, or matches the empty string (so
    it would match everything), is an error."""
    compiled: list[re.Pattern[str]] = []
    for source in sources:
        try:
            pattern = re.compile(source, flags)
        except re.error as exc:
            raise fail(f"{key}: {source!r} does not compile: {exc}") from exc
        if pattern.search("") is not None:
            raise fail(f"{key}: {source!r} matches the empty string (it would match everything)")
        compiled.append(pattern)
    return tuple(compiled)


class _Entry(Protocol):
    @property
    def id(self) -> str: ...


_E = TypeVar("_E", bound=_Entry)


def catalog_entries(
    doc: Mapping[str, Any], key: str, label: str, parse: Callable[[Mapping[str, Any], int, str], _E]
) -> tuple[_E, ...]:
    """The entries of the array of tables `[[key]]`, each parsed by `parse(raw, number, label)`;
    two with one id are an error."""
    tables = doc.get(key, [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise CatalogError(f"{label}: `{key}` must be an array of tables ([[{key}]])")
    entries: list[_E] = []
    seen: set[str] = set()
    for number, raw in enumerate(tables, 1):
        entry = parse(raw, number, label)
        if entry.id in seen:
            raise CatalogError(f"{label}: entry {entry.id!r}: duplicate id")
        seen.add(entry.id)
        entries.append(entry)
    return tuple(entries)

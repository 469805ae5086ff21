"""The control mapping (controls.toml): which framework clauses each report section supports.

Loaded strictly: a missing or unknown key, a clause without an https source, a duplicate id or an
item naming an unknown clause or section is a ControlsError, so a typo never ships a silent gap."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any

FRAMEWORKS = ("NIST AI RMF 1.0", "EU AI Act", "ISO/IEC 42001")
#: The report's sections, in the order the report shows them.
SECTIONS = ("coverage", "services", "runtimes", "compute", "models", "transfers", "aitools", "risk")

_CLAUSE_KEYS = {"id", "framework", "title", "source"}
_ITEM_KEYS = {"section", "title", "supports", "clauses"}


class ControlsError(ValueError):
    """The control mapping file is malformed."""


@dataclass(frozen=True)
class Clause:
    id: str
    framework: str
    title: str
    source: str


@dataclass(frozen=True)
class ControlItem:
    """One report section and the clauses it gives evidence for."""

    section: str
    title: str
    supports: str
    clauses: tuple[Clause, ...]


def load_controls(text: str | None = None) -> tuple[ControlItem, ...]:
    """The mapping from `text` (TOML), or from the packaged controls.toml; items in SECTIONS order."""
    if text is None:
        text = resources.files(__package__).joinpath("controls.toml").read_text(encoding="utf-8")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ControlsError(f"controls.toml: {exc}") from None
    if set(doc) != {"clause", "item"}:
        raise ControlsError(
            f"controls.toml: top-level tables must be [[clause]] and [[item]], got {sorted(doc)}"
        )
    clauses: dict[str, Clause] = {}
    for raw in _tables(doc["clause"], "clause"):
        clause = Clause(**_strings(raw, _CLAUSE_KEYS, "clause"))
        if clause.framework not in FRAMEWORKS:
            raise ControlsError(f"clause {clause.id!r}: unknown framework {clause.framework!r}")
        if not clause.source.startswith("https://"):
            raise ControlsError(f"clause {clause.id!r}: source must be an https URL")
        if clause.id in clauses:
            raise ControlsError(f"clause {clause.id!r} is defined twice")
        clauses[clause.id] = clause
    items: dict[str, ControlItem] = {}
    for raw in _tables(doc["item"], "item"):
        refs = raw.get("clauses")
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            raise ControlsError(f"item {raw.get('section')!r}: clauses must be a non-empty list of ids")
        fields = _strings({k: v for k, v in raw.items() if k != "clauses"}, _ITEM_KEYS - {"clauses"}, "item")
        section = fields["section"]
        if section not in SECTIONS:
            raise ControlsError(f"item {section!r}: not a report section (one of {', '.join(SECTIONS)})")
        if section in items:
            raise ControlsError(f"item {section!r} is defined twice")
        unknown = [r for r in refs if r not in clauses]
        if unknown:
            raise ControlsError(f"item {section!r}: unknown clauses {unknown}")
        items[section] = ControlItem(
            section, fields["title"], fields["supports"], tuple(clauses[r] for r in refs)
        )
    unused = set(clauses) - {c.id for item in items.values() for c in item.clauses}
    if unused:
        raise ControlsError(f"clauses no item uses: {sorted(unused)}")
    return tuple(items[s] for s in SECTIONS if s in items)


def _tables(value: Any, name: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ControlsError(f"controls.toml: {name} must be an array of tables ([[{name}]])")
    return value


def _strings(raw: dict[str, Any], keys: set[str], what: str) -> dict[str, str]:
    if set(raw) != keys:
        missing, extra = sorted(keys - set(raw)), sorted(set(raw) - keys)
        raise ControlsError(
            f"{what} {raw.get('id') or raw.get('section')!r}: missing {missing}, unknown {extra}"
        )
    for key, value in raw.items():
        if not isinstance(value, str) or not value.strip():
            raise ControlsError(
                f"{what} {raw.get('id') or raw.get('section')!r}: {key} must be a non-empty string"
            )
    return dict(raw)

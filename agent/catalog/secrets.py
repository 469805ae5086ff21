"""Loader for secrets.toml: which options, names and value shapes are secrets or prompts.

The data says what a secret looks like (with a source for each rule); agent/privacy/scrub.py
applies it. The loader checks everything once, so a rule that cannot work (a regex matching
the empty string, a runtime id the runtime catalog does not know) fails at start, not silently.
Operators' additions from the agent config go through the same checks (`extra_rules`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from agent.catalog.source import (
    CatalogError,
    catalog_entries,
    entry_flag,
    entry_lists,
    entry_strings,
    parse_catalog_toml,
    read_catalog,
)

__all__ = [
    "OPTION_KINDS",
    "OptionRule",
    "PositionalRule",
    "SecretRules",
    "ValueRule",
    "default_secret_rules",
    "extra_rules",
    "load_secret_rules",
    "option_key",
]

OPTION_KINDS: Final = frozenset({"credential", "prompt"})
_TOP_KEYS: Final = frozenset({"schema_version", "options", "positional", "key_names", "values"})
_OPTION_RE: Final = re.compile(r"--?[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: Rules are applied to every argument of every new process: a pattern longer than this is a mistake.
MAX_PATTERN_CHARS: Final = 2000


def option_key(option: str) -> str:
    """How options compare: a long one case-insensitively with "_" read as "-", a short one exactly."""
    return option.lower().replace("_", "-") if option.startswith("--") else option


@dataclass(frozen=True)
class OptionRule:
    """Options whose value is replaced; for every program, or only for some runtimes or programs."""

    id: str
    kind: str
    options: frozenset[str]  # as option_key() spells them
    runtimes: tuple[str, ...] = ()
    programs: tuple[str, ...] = ()  # lower case
    glued: bool = False
    source: str = ""

    @property
    def general(self) -> bool:
        return not self.runtimes and not self.programs


@dataclass(frozen=True)
class PositionalRule:
    """A runtime whose positional arguments, after its subcommand and the first `keep`, are a prompt."""

    id: str
    runtime: str
    subcommand: str
    keep: int
    programs: tuple[str, ...] = ()
    source: str = ""


@dataclass(frozen=True)
class ValueRule:
    """A secret by its shape; only the group named `secret` is replaced when the pattern has one."""

    id: str
    pattern: re.Pattern[str]
    source: str = ""


@dataclass(frozen=True)
class SecretRules:
    options: tuple[OptionRule, ...]
    positional: tuple[PositionalRule, ...]
    key_names: tuple[re.Pattern[str], ...]
    values: tuple[ValueRule, ...]

    def runtime_ids(self) -> frozenset[str]:
        """Every runtime id a rule names (the runtime catalog must know them all)."""
        return frozenset(
            {r for rule in self.options for r in rule.runtimes} | {rule.runtime for rule in self.positional}
        )

    def merged(self, extra: SecretRules) -> SecretRules:
        return SecretRules(
            self.options + extra.options,
            self.positional + extra.positional,
            self.key_names + extra.key_names,
            self.values + extra.values,
        )


def load_secret_rules(path: Path | None = None, known_runtimes: Collection[str] | None = None) -> SecretRules:
    """The packaged secrets catalog (or the file at `path`). `known_runtimes`: the runtime
    catalog's ids, when the caller wants them checked."""
    data, label = read_catalog("secrets.toml", path)
    doc = parse_catalog_toml(data, label, _TOP_KEYS)
    rules = SecretRules(
        options=catalog_entries(doc, "options", label, _option_rule),
        positional=catalog_entries(doc, "positional", label, _positional_rule),
        key_names=tuple(
            p for entry in catalog_entries(doc, "key_names", label, _key_names) for p in entry.patterns
        ),
        values=catalog_entries(doc, "values", label, _value_rule),
    )
    if known_runtimes is not None:
        unknown = sorted(rules.runtime_ids() - set(known_runtimes))
        if unknown:
            raise CatalogError(f"{label}: unknown runtime id(s) {', '.join(map(repr, unknown))}")
    return rules


@lru_cache(maxsize=1)
def default_secret_rules() -> SecretRules:
    from agent.catalog.runtimes import default_runtime_catalog

    return load_secret_rules(known_runtimes=[e.id for e in default_runtime_catalog().entries])


def extra_rules(
    secret_options: Iterable[str], key_patterns: Iterable[str], value_patterns: Iterable[str], where: str
) -> SecretRules:
    """An operator's additions (the agent config's [privacy] section), checked as the catalog's
    own rules are; a CatalogError names `where` and the bad item."""
    options = tuple(secret_options)
    for option in options:
        if not _OPTION_RE.fullmatch(option):
            raise CatalogError(
                f"{where} secret_options: {option!r} is not an option name like --api-key or -p"
            )
    keys = tuple(_compile(p, f"{where} key_patterns", re.IGNORECASE) for p in key_patterns)
    values = tuple(
        ValueRule(f"config-{i}", _compile(p, f"{where} value_patterns"), "agent config")
        for i, p in enumerate(value_patterns, 1)
    )
    option_rules = (
        (OptionRule("config", "credential", frozenset(map(option_key, options)), source="agent config"),)
        if options
        else ()
    )
    return SecretRules(option_rules, (), keys, values)


# --- entries ---------------------------------------------------------------------------------


def _compile(source: str, where: str, flags: int = 0) -> re.Pattern[str]:
    if len(source) > MAX_PATTERN_CHARS:
        raise CatalogError(f"{where}: a pattern of {len(source)} characters (at most {MAX_PATTERN_CHARS})")
    try:
        pattern = re.compile(source, flags)
    except re.error as exc:
        raise CatalogError(f"{where}: {source!r} does not compile: {exc}") from None
    if pattern.search("") is not None:
        raise CatalogError(f"{where}: {source!r} matches the empty string (it would match everything)")
    if pattern.groupindex and set(pattern.groupindex) != {"secret"}:
        raise CatalogError(f"{where}: {source!r}: the only named group allowed is (?P<secret>...)")
    return pattern


def _option_rule(raw: Mapping[str, Any], number: int, label: str) -> OptionRule:
    fail, strings = entry_strings(
        raw,
        number,
        label,
        known={"id", "kind", "options", "runtimes", "programs", "glued", "source", "notes"},
        required=("id", "kind", "options", "source"),
        strings=("id", "kind", "source", "notes"),
    )
    if strings["kind"] not in OPTION_KINDS:
        raise fail(f"kind must be one of {sorted(OPTION_KINDS)}, not {strings['kind']!r}")
    lists = entry_lists(raw, ("options", "runtimes", "programs"), fail)
    if not lists["options"]:
        raise fail("options must not be empty")
    for option in lists["options"]:
        if not _OPTION_RE.fullmatch(option):
            raise fail(f"{option!r} is not an option name like --api-key or -p")
    glued = entry_flag(raw, "glued", False, fail)
    if glued and any(o.startswith("--") or len(o) != 2 for o in lists["options"]):
        raise fail("glued applies to one-letter options only (-p)")
    return OptionRule(
        id=strings["id"],
        kind=strings["kind"],
        options=frozenset(map(option_key, lists["options"])),
        runtimes=lists["runtimes"],
        programs=tuple(p.lower() for p in lists["programs"]),
        glued=glued,
        source=strings["source"],
    )


def _positional_rule(raw: Mapping[str, Any], number: int, label: str) -> PositionalRule:
    fail, strings = entry_strings(
        raw,
        number,
        label,
        known={"id", "runtime", "programs", "subcommand", "keep", "source", "notes"},
        required=("id", "runtime", "keep", "source"),
        strings=("id", "runtime", "subcommand", "source", "notes"),
    )
    keep = raw["keep"]
    if isinstance(keep, bool) or not isinstance(keep, int) or not 0 <= keep <= 16:
        raise fail("keep must be an integer from 0 to 16")
    programs = entry_lists(raw, ("programs",), fail)["programs"]
    return PositionalRule(
        id=strings["id"],
        runtime=strings["runtime"],
        subcommand=strings.get("subcommand", ""),
        keep=keep,
        programs=tuple(p.lower() for p in programs),
        source=strings["source"],
    )


@dataclass(frozen=True)
class _KeyNames:
    id: str
    patterns: tuple[re.Pattern[str], ...]


def _key_names(raw: Mapping[str, Any], number: int, label: str) -> _KeyNames:
    fail, strings = entry_strings(
        raw,
        number,
        label,
        known={"id", "patterns", "source", "notes"},
        required=("id", "patterns", "source"),
        strings=("id", "source", "notes"),
    )
    sources = entry_lists(raw, ("patterns",), fail)["patterns"]
    if not sources:
        raise fail("patterns must not be empty")
    where = f"{label}: entry {strings['id']!r}: patterns"
    return _KeyNames(strings["id"], tuple(_compile(s, where, re.IGNORECASE) for s in sources))


def _value_rule(raw: Mapping[str, Any], number: int, label: str) -> ValueRule:
    _, strings = entry_strings(
        raw,
        number,
        label,
        known={"id", "pattern", "source", "notes"},
        required=("id", "pattern", "source"),
        strings=("id", "pattern", "source", "notes"),
    )
    where = f"{label}: entry {strings['id']!r}: pattern"
    return ValueRule(strings["id"], _compile(strings["pattern"], where), strings["source"])

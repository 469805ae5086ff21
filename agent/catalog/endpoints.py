"""AI endpoint catalog: which host names belong to AI services, and whose they are.

The knowledge lives in `ai_endpoints.toml` (data, with a source for every entry); this module
loads and validates it, merges a user's own file over it, and matches host names (DNS
questions, TLS/QUIC SNI, HTTP Host) against it.

Host patterns, all lower case (the file may use any case; names are compared lower-cased
with a trailing dot removed):

==============================  ===============================================================
pattern                         matches
==============================  ===============================================================
``api.openai.com``              that name only (exact)
``*.openai.azure.com``          any name below ``openai.azure.com``, at any depth; never
                                ``openai.azure.com`` itself, never ``xopenai.azure.com``
``cdn-lfs*.huggingface.co``     one label starting ``cdn-lfs`` directly under
``*-aiplatform.googleapis.com`` ``huggingface.co`` (resp. ending ``-aiplatform``): a ``*``
                                inside the first label stays inside that label
==============================  ===============================================================

Precedence: an exact pattern beats a first-label glob, which beats a suffix (``*.``) pattern;
among suffix patterns the longest wins. Every look-up is a few dict probes (one per label of
the name), so matching costs the same with 300 patterns or 30,000.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from agent.catalog.runtimes import SEVERITIES
from agent.catalog.source import (
    CatalogError,
    catalog_entries,
    entry_strings,
    parse_catalog_toml,
    read_catalog,
)

__all__ = [
    "ENDPOINT_CATEGORIES",
    "EndpointCatalog",
    "EndpointEntry",
    "EndpointMatch",
    "default_endpoint_catalog",
    "load_endpoint_catalog",
    "normalize_host",
    "parse_endpoint_catalog",
]

ENDPOINT_CATEGORIES: Final = frozenset(
    {"chat_app", "model_api", "model_hub", "coding_assistant", "inference_platform", "agent_service"}
)
_SCHEMA_VERSION: Final = 1
_TOP_KEYS: Final = frozenset({"schema_version", "service"})
_STR_KEYS: Final = ("id", "vendor", "product", "category", "risk", "source", "notes")
_REQUIRED: Final = ("id", "vendor", "product", "category", "risk", "source", "hosts")
_ENTRY_KEYS: Final = frozenset({*_STR_KEYS, "hosts"})
_LABEL: Final = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_RE: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
# One '*' inside the first label, with at least one literal character beside it.
_GLOB_LABEL_RE: Final = re.compile(r"[a-z0-9_-]*\*[a-z0-9_-]*")
_MAX_HOST: Final = 253


@dataclass(frozen=True)
class EndpointEntry:
    """One AI service, as written in the catalog."""

    id: str
    vendor: str
    product: str
    category: str
    risk: str  # default severity of its findings
    source: str
    hosts: tuple[str, ...]
    notes: str = ""

    @property
    def vendor_slug(self) -> str:
        """The vendor as a policy token: "Google DeepMind" -> "google-deepmind"."""
        return re.sub(r"[^a-z0-9]+", "-", self.vendor.lower()).strip("-")


@dataclass(frozen=True)
class EndpointMatch:
    """A host name that matched a catalog entry, and through which pattern."""

    entry: EndpointEntry
    host_name: str  # normalised
    pattern: str
    how: str  # "exact", "glob" or "suffix"


def normalize_host(name: str) -> str:
    """Lower case, no trailing dot, no surrounding blanks."""
    return name.strip().lower().rstrip(".")


class EndpointCatalog:
    """The loaded catalog and its indexes; read-only once built, safe to share between threads."""

    def __init__(self, entries: Sequence[EndpointEntry], path: str = "") -> None:
        self.entries: tuple[EndpointEntry, ...] = tuple(entries)
        self.path = path
        self._by_id = {e.id: e for e in self.entries}
        self._exact: dict[str, tuple[EndpointEntry, str]] = {}
        self._suffix: dict[str, tuple[EndpointEntry, str]] = {}  # "openai.azure.com" for "*.openai.azure.com"
        self._globs: dict[str, list[tuple[str, str, EndpointEntry, str]]] = {}  # rest -> (pre, post, ...)
        for entry in self.entries:
            for pattern in entry.hosts:
                if pattern.startswith("*."):
                    self._suffix[pattern[2:]] = (entry, pattern)
                elif "*" in pattern:
                    label, _, rest = pattern.partition(".")
                    pre, _, post = label.partition("*")
                    self._globs.setdefault(rest, []).append((pre, post, entry, pattern))
                else:
                    self._exact[pattern] = (entry, pattern)

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return (
            f"EndpointCatalog({len(self.entries)} services, {self.pattern_count} patterns from {self.path})"
        )

    @property
    def pattern_count(self) -> int:
        return sum(len(e.hosts) for e in self.entries)

    def get(self, service_id: str) -> EndpointEntry | None:
        return self._by_id.get(service_id)

    def match(self, host_name: str) -> EndpointMatch | None:
        """The entry a host name belongs to, or None (see the module doc for precedence)."""
        name = normalize_host(host_name)
        if not name or len(name) > _MAX_HOST:
            return None
        hit = self._exact.get(name)
        if hit is not None:
            return EndpointMatch(hit[0], name, hit[1], "exact")
        label, dot, rest = name.partition(".")
        if dot and self._globs:
            for pre, post, entry, pattern in self._globs.get(rest, ()):
                if len(label) >= len(pre) + len(post) and label.startswith(pre) and label.endswith(post):
                    return EndpointMatch(entry, name, pattern, "glob")
        while dot:  # parents, longest first: "a.b.c" -> "b.c" -> "c"
            hit = self._suffix.get(rest)
            if hit is not None:
                return EndpointMatch(hit[0], name, hit[1], "suffix")
            _, dot, rest = rest.partition(".")
        return None

    def approval_rule(self, entry: EndpointEntry, approved: Collection[str]) -> str | None:
        """The policy rule approving this service, or None.

        `approved` holds service ids ("openai-api") or vendor slugs ("openai"), as the policy's
        `approved_services` lists them; the rule names the token that matched.
        """
        if entry.id in approved:
            return f"approved_services:{entry.id}"
        if entry.vendor_slug in approved:
            return f"approved_services:{entry.vendor_slug}"
        return None

    def unknown_approvals(self, approved: Iterable[str]) -> list[str]:
        """Tokens naming no service id and no vendor (for config validation)."""
        known = {e.id for e in self.entries} | {e.vendor_slug for e in self.entries}
        return sorted(set(approved) - known)

    def merged(self, other: EndpointCatalog) -> EndpointCatalog:
        """This catalog with `other` over it: an entry with the same id replaces ours, and a host
        pattern `other` claims is taken away from whichever of our entries had it."""
        claimed = {p for e in other.entries for p in e.hosts}
        replaced = {e.id for e in other.entries}
        kept = []
        for entry in self.entries:
            if entry.id in replaced:
                continue
            hosts = tuple(h for h in entry.hosts if h not in claimed)
            if hosts:
                kept.append(
                    EndpointEntry(
                        entry.id,
                        entry.vendor,
                        entry.product,
                        entry.category,
                        entry.risk,
                        entry.source,
                        hosts,
                        entry.notes,
                    )
                )
        return EndpointCatalog([*kept, *other.entries], f"{self.path} + {other.path}")


# --- loading -------------------------------------------------------------------------------


def load_endpoint_catalog(path: Path | None = None, user_path: Path | None = None) -> EndpointCatalog:
    """Load and validate the packaged catalog (or `path`), with `user_path` merged over it."""
    catalog = parse_endpoint_catalog(*read_catalog("ai_endpoints.toml", path))
    if user_path is not None:
        catalog = catalog.merged(parse_endpoint_catalog(*read_catalog("", user_path)))
    return catalog


@lru_cache(maxsize=1)
def default_endpoint_catalog() -> EndpointCatalog:
    """The packaged catalog, loaded once per process."""
    return load_endpoint_catalog()


def parse_endpoint_catalog(data: bytes | str, label: str = "<string>") -> EndpointCatalog:
    """Validate catalog TOML text; `label` names it in error messages."""
    doc = parse_catalog_toml(data, label, _TOP_KEYS)
    entries = catalog_entries(doc, "service", label, _entry)
    owners: dict[str, str] = {}
    for entry in entries:
        for pattern in entry.hosts:
            if pattern in owners:
                raise CatalogError(
                    f"{label}: entry {entry.id!r}: host pattern {pattern!r}"
                    f" is already in entry {owners[pattern]!r}"
                )
            owners[pattern] = entry.id
    return EndpointCatalog(entries, label)


def _entry(raw: Mapping[str, Any], number: int, label: str) -> EndpointEntry:
    fail, strings = entry_strings(
        raw, number, label, known=_ENTRY_KEYS, required=_REQUIRED, strings=_STR_KEYS
    )
    if strings["category"] not in ENDPOINT_CATEGORIES:
        raise fail(f"category {strings['category']!r} is not one of {', '.join(sorted(ENDPOINT_CATEGORIES))}")
    if strings["risk"] not in SEVERITIES:
        raise fail(f"risk {strings['risk']!r} is not one of {', '.join(sorted(SEVERITIES))}")
    hosts = raw["hosts"]
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) for h in hosts):
        raise fail("'hosts' must be a non-empty list of strings")
    patterns: list[str] = []
    for host in hosts:
        pattern = normalize_host(host)
        problem = _pattern_problem(pattern)
        if problem:
            raise fail(f"hosts: {host!r} {problem}")
        if pattern in patterns:
            raise fail(f"hosts: {host!r} is listed twice")
        patterns.append(pattern)
    return EndpointEntry(
        id=strings["id"],
        vendor=strings["vendor"],
        product=strings["product"],
        category=strings["category"],
        risk=strings["risk"],
        source=strings["source"],
        hosts=tuple(patterns),
        notes=strings.get("notes", ""),
    )


def _pattern_problem(pattern: str) -> str | None:
    """Why a host pattern is invalid, or None."""
    if len(pattern) > _MAX_HOST:
        return "is longer than 253 characters"
    if pattern.startswith("*."):
        rest = pattern[2:]
        if "*" in rest or not _HOST_RE.fullmatch(rest):
            return "is not '*.' followed by a host name"
        if "." not in rest:
            return "would match a whole top-level domain"
        return None
    if "*" in pattern:
        label, dot, rest = pattern.partition(".")
        if not dot or pattern.count("*") != 1 or not _GLOB_LABEL_RE.fullmatch(label) or label == "*":
            return "may hold one '*': as '*.domain', or inside the first label ('cdn-lfs*.hf.co')"
        if not _HOST_RE.fullmatch(rest) or "." not in rest:
            return "needs a host name of at least two labels after its first label"
        return None
    if not _HOST_RE.fullmatch(pattern):
        return "is not a host name (letters, digits, '-', '_', dot-separated labels)"
    return None

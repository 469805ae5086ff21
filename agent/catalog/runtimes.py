"""Runtime catalog: which processes are local model runtimes or inference servers.

The knowledge lives in `runtimes.toml` (data, with a source for every entry); this module loads
and validates it once, and matches process facts against it. Two entry points:

- `RuntimeCatalog.is_candidate(name, exe, cmdline)`: the pre-filter the process sensor runs on
  every new process. Set lookups on the names, then one scan for the catalog's keywords in the
  program and script arguments; an entry's regexes run only when one of its keywords is there.
- `RuntimeCatalog.match(name, exe, cmdline, listening_ports)`: the full verdict, with the
  evidence (`matched_on`, `reasons`) and a confidence.

Confidence model (documented here because findings carry it):

=============================================  ==========
evidence                                       confidence
=============================================  ==========
port only (opt-in, distinctive port)           0.30 (0.20 when several runtimes share the port)
process name or exe name, exact                0.80
process name and exe name (same file, so not   0.85
independent)
command line (regex or ``python -m`` module)   0.85
command line plus name or exe                  0.95
any of the above plus a default port           +0.05, capped at 0.99
=============================================  ==========
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from agent.catalog.cmdline import as_argv, basename, explicit_argv, norm, program, runs_programs
from agent.catalog.source import (
    CatalogError,
    catalog_entries,
    entry_lists,
    entry_regexes,
    entry_strings,
    parse_catalog_toml,
    read_catalog,
)

__all__ = [
    "CATEGORIES",
    "SEVERITIES",
    "CatalogError",
    "RuntimeCatalog",
    "RuntimeEntry",
    "RuntimeMatch",
    "default_runtime_catalog",
    "load_runtime_catalog",
]

CATEGORIES: Final = frozenset({"inference_server", "desktop_app", "ui", "proxy", "image_generation", "cli"})
SEVERITIES: Final = frozenset({"info", "low", "medium", "high", "critical"})
SIGNALS: Final = ("name", "exe", "cmdline", "port")

CONF_PORT_ONLY: Final = 0.30
CONF_PORT_ONLY_SHARED: Final = 0.20
CONF_NAME: Final = 0.80
CONF_NAME_AND_EXE: Final = 0.85
CONF_CMDLINE: Final = 0.85
CONF_CORROBORATED: Final = 0.95
PORT_BONUS: Final = 0.05
CONF_CAP: Final = 0.99

#: Command lines are scanned up to this many characters: the evidence (program, script, module,
#: subcommand) comes first, and browsers' multi-kilobyte argument lists would only cost time.
MAX_CMDLINE_CHARS: Final = 4096
#: Linux keeps 15 characters of a process name (TASK_COMM_LEN - 1), macOS 16 (MAXCOMLEN).
_COMM_LENGTHS: Final = (15, 16)
#: The keyword scan reads the first arguments only, and not past this many characters: option
#: lists (a browser's hundreds of flags) never hold a program or a script.
_GATE_ARGS: Final = 16
_GATE_CHARS: Final = 2048
_GATE_CACHE_SIZE: Final = 8192

_TOP_KEYS: Final = frozenset({"schema_version", "weak_ports", "runtime"})
_STR_KEYS: Final = ("id", "name", "vendor", "category", "severity", "source", "notes")
_LIST_KEYS: Final = ("process_names", "exe_names", "modules", "cmdline_patterns", "keywords", "libraries")
_ENTRY_KEYS: Final = frozenset({*_STR_KEYS, *_LIST_KEYS, "ports"})
_REQUIRED: Final = ("id", "name", "source")
_NAME_GLOB_RE: Final = re.compile(r"\*?[^*]+|[^*]+\*")
_MODULE_RE: Final = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")

# Script names a pattern mentions: main\.py, (?:server|one_click)\.py, index\.js.
_SCRIPT_REF_RE: Final = re.compile(r"(?:\(\?:([\w|-]+)\)|([\w-]+))\\\.(py|js|sh)\b")


@dataclass(frozen=True)
class RuntimeEntry:
    """One runtime, as written in the catalog (names normalised to lower case, no ".exe")."""

    id: str
    name: str
    source: str
    vendor: str = ""
    category: str = "inference_server"
    severity: str = "medium"
    process_names: tuple[str, ...] = ()
    exe_names: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    cmdline_patterns: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    libraries: tuple[str, ...] = ()
    notes: str = ""
    compiled: tuple[re.Pattern[str], ...] = field(default=(), repr=False, compare=False)


@dataclass(frozen=True)
class RuntimeMatch:
    """A catalog entry that a process matched, why, and how sure we are."""

    entry: RuntimeEntry
    matched_on: tuple[str, ...]  # subset of SIGNALS, in that order
    confidence: float
    reasons: tuple[str, ...]


class _NameIndex:
    """Exact, glob and truncated-comm lookup of normalised names -> entry indexes."""

    def __init__(self, names: Iterable[tuple[str, int]]) -> None:
        self.exact: dict[str, list[tuple[int, str]]] = {}
        self.prefixes: list[tuple[str, int, str]] = []
        self.suffixes: list[tuple[str, int, str]] = []
        self.truncated: dict[str, list[tuple[int, str]]] = {}
        for pattern, idx in names:
            if pattern.endswith("*"):
                self.prefixes.append((pattern[:-1], idx, pattern))
            elif pattern.startswith("*"):
                self.suffixes.append((pattern[1:], idx, pattern))
            else:
                self.exact.setdefault(pattern, []).append((idx, pattern))
                for length in _COMM_LENGTHS:
                    if len(pattern) > length:
                        self.truncated.setdefault(pattern[:length], []).append((idx, pattern))
        self.prefix_tuple = tuple(p for p, _, _ in self.prefixes)  # startswith(()) is False
        self.suffix_tuple = tuple(s for s, _, _ in self.suffixes)

    def hit(self, name: str, comm: bool = False) -> bool:
        """Cheap yes/no for the pre-filter."""
        return (
            name in self.exact
            or name.startswith(self.prefix_tuple)
            or name.endswith(self.suffix_tuple)
            or (comm and name in self.truncated)
        )

    def lookup(self, name: str, comm: bool = False) -> list[tuple[int, str, bool]]:
        """(entry index, catalog name, via truncation) for every entry the name matches."""
        found = [(idx, pat, False) for idx, pat in self.exact.get(name, ())]
        found += [(idx, pat, False) for p, idx, pat in self.prefixes if name.startswith(p) and name != p]
        found += [(idx, pat, False) for s, idx, pat in self.suffixes if name.endswith(s) and name != s]
        if comm:
            found += [(idx, pat, True) for idx, pat in self.truncated.get(name, ())]
        return found


@dataclass
class _Evidence:
    reasons: list[str] = field(default_factory=list)
    name: bool = False
    exe: bool = False
    cmdline: bool = False
    port: bool = False
    port_only_confidence: float = CONF_PORT_ONLY


class RuntimeCatalog:
    """The loaded catalog and its indexes. Read-only once built (but for a bounded cache of
    negative pre-filter results); safe to share between threads."""

    def __init__(
        self, entries: Sequence[RuntimeEntry], weak_ports: Iterable[int] = (), path: str = ""
    ) -> None:
        self.entries: tuple[RuntimeEntry, ...] = tuple(entries)
        self.weak_ports: frozenset[int] = frozenset(weak_ports)
        self.path = path
        self._by_id = {e.id: e for e in self.entries}
        # process_names and exe_names are one set of names to the engine: matched_on says which
        # fact (process name, argv[0], script: "name"; executable: "exe") carried one.
        self._names = _NameIndex(
            (n, i)
            for i, e in enumerate(self.entries)
            for n in dict.fromkeys((*e.process_names, *e.exe_names))
        )
        self._modules = [(m, i) for i, e in enumerate(self.entries) for m in e.modules]
        self._module_roots = frozenset(m.split(".", 1)[0] for m, _ in self._modules)
        owners: dict[str, list[int]] = {}
        for i, e in enumerate(self.entries):
            if e.compiled:
                for kw in e.keywords:
                    owners.setdefault(kw, []).append(i)
        # keyword -> the patterns it unlocks, shortest keywords first (they are the cheapest scans).
        self._keyword_patterns: tuple[tuple[str, tuple[tuple[int, re.Pattern[str]], ...]], ...] = tuple(
            (kw, tuple((i, p) for i in owners[kw] for p in self.entries[i].compiled))
            for kw in sorted(owners, key=lambda k: (len(k), k))
        )
        # Scripts some pattern names (main.py, server.py): run from a relative path, their
        # working directory may decide, so they stay candidates when it is unknown.
        self._script_refs = frozenset(
            f"{stem.lower()}.{ext}"
            for e in self.entries
            for source in e.cmdline_patterns
            for m in _SCRIPT_REF_RE.finditer(source)
            for stem, ext in ((s, m.group(3)) for s in (m.group(1) or m.group(2)).split("|"))
        )
        # Gate strings known to hold no keyword (browser helpers, kernel threads, daemons).
        # A bounded set: a cache only, so sharing it between threads is harmless.
        self._no_keyword: set[str] = set()
        self._port_owners: dict[int, list[int]] = {}
        for i, e in enumerate(self.entries):
            for port in e.ports:
                self._port_owners.setdefault(port, []).append(i)

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"RuntimeCatalog({len(self.entries)} entries from {self.path or '<memory>'})"

    def get(self, runtime_id: str) -> RuntimeEntry | None:
        """The entry with this id, or None."""
        return self._by_id.get(runtime_id)

    def ports(self) -> frozenset[int]:
        """Every default port of every runtime (weak ones included)."""
        return frozenset(self._port_owners)

    def is_candidate(self, name: str, exe: str, cmdline: Sequence[str], *, cwd: str | None = None) -> bool:
        """Cheap pre-filter: False means `match()` finds nothing but, at most, a port-only match.

        Set lookups on the names, then one scan for the catalog's keywords in the program and
        script arguments (those not starting with "-"). Conservative for an interpreter running
        a relative script some pattern names (`python main.py`) when `cwd` is not known.
        """
        argv = as_argv(cmdline)
        names = self._names
        comm = norm(name) if name else ""
        if comm and names.hit(comm, comm=True):
            return True
        exe_name = norm(basename(exe)) if exe else ""
        if exe_name and exe_name != comm and names.hit(exe_name):
            return True
        if not argv:
            return False
        first = norm(basename(argv[0]))
        if first != comm and first != exe_name and names.hit(first):
            return True
        runs = program(argv) if runs_programs(first) else None
        if runs is not None:
            if runs.module is not None and runs.module.split(".", 1)[0] in self._module_roots:
                return True
            if any(names.hit(n) for n, _ in runs.names):
                return True
            if (
                cwd is None
                and runs.relative_script
                and runs.script_index is not None
                and basename(argv[runs.script_index]).lower() in self._script_refs
            ):
                return True
        tokens = explicit_argv(exe, argv, cwd, runs)
        gate = _gate_text(tokens)
        if gate in self._no_keyword:
            return False
        text = ""
        for kw, patterns in self._keyword_patterns:
            if kw in gate:
                text = text or " ".join(tokens)[:MAX_CMDLINE_CHARS]
                if any(p.search(text) for _, p in patterns):
                    return True
        if not text:  # no keyword at all: remember, process tables repeat themselves
            if len(self._no_keyword) >= _GATE_CACHE_SIZE:
                self._no_keyword.clear()
            self._no_keyword.add(gate)
        return False

    def match(
        self,
        name: str,
        exe: str,
        cmdline: Sequence[str],
        listening_ports: Iterable[int] = (),
        *,
        cwd: str | None = None,
        allow_port_only: bool = False,
    ) -> list[RuntimeMatch]:
        """Entries this process matches, best first (usually 0 or 1).

        `name` is the OS process name (Linux comm), `exe` the executable's path, `cmdline` argv
        (a plain string is split on whitespace), `cwd` the working directory when known.
        A default port alone is weak evidence: it is reported only with `allow_port_only=True`,
        only for ports that are not in the catalog's `weak_ports`, and with low confidence.
        """
        found: dict[int, _Evidence] = {}
        ports = {p for p in listening_ports if isinstance(p, int)}
        # Same gate as the pre-filter, so the two never disagree.
        if self.is_candidate(name, exe, cmdline, cwd=cwd):
            self._collect(found, name, exe, as_argv(cmdline), cwd)
        for idx, ev in found.items():
            hits = sorted(ports.intersection(self.entries[idx].ports))
            if hits:
                ev.port = True
                ev.reasons.append(f"listening on default port {', '.join(map(str, hits))}")
        if allow_port_only:
            for port in sorted(ports - self.weak_ports):
                owners = self._port_owners.get(port, [])
                for idx in owners:
                    if idx not in found:
                        ev = found.setdefault(idx, _Evidence())
                        ev.port = True
                        ev.port_only_confidence = CONF_PORT_ONLY_SHARED if len(owners) > 1 else CONF_PORT_ONLY
                        others = (
                            f", shared with {len(owners) - 1} other runtime(s)" if len(owners) > 1 else ""
                        )
                        ev.reasons.append(
                            f"listening on port {port}, the default of {self.entries[idx].name}{others}"
                        )
        matches = [self._verdict(idx, ev) for idx, ev in found.items()]
        matches.sort(key=lambda m: (-m.confidence, -len(m.matched_on), m.entry.id))
        return matches

    def _collect(
        self, found: dict[int, _Evidence], name: str, exe: str, argv: Sequence[str], cwd: str | None
    ) -> None:
        """Name, exe and command-line evidence for every entry."""

        def note(idx: int) -> _Evidence:
            return found.setdefault(idx, _Evidence())

        comm = norm(name) if name else ""
        for idx, pat, truncated in self._names.lookup(comm, comm=True) if comm else ():
            ev = note(idx)
            ev.name = True
            cut = f" (the name {pat!r} cut to {len(comm)} characters)" if truncated else ""
            ev.reasons.append(f"process name {name!r}{cut}")
        exe_base = basename(exe) if exe else ""
        for idx, _pat, _ in self._names.lookup(norm(exe_base)) if exe_base else ():
            ev = note(idx)
            ev.exe = True
            ev.reasons.append(f"executable {exe_base!r}")
        if not argv:
            return
        argv0 = basename(argv[0])
        first = norm(argv0)
        if first and first != comm:  # argv[0] rewritten, or a comm cut short
            for idx, _pat, _ in self._names.lookup(first):
                ev = note(idx)
                if not ev.name:
                    ev.name = True
                    ev.reasons.append(f"argv[0] {argv0!r}")
        runs = program(argv) if runs_programs(first) else None
        if runs is not None:
            for script, runner in runs.names:
                for idx, _pat, _ in self._names.lookup(script):
                    ev = note(idx)
                    if not ev.name:
                        ev.name = True
                        ev.reasons.append(f"script {script!r} run by {runner}")
            if runs.module is not None:
                for module, idx in self._modules:
                    if runs.module == module or runs.module.startswith(module + "."):
                        ev = note(idx)
                        ev.cmdline = True
                        ev.reasons.append(f"python module {runs.module!r}")
        tokens = explicit_argv(exe, argv, cwd, runs)
        gate = _gate_text(tokens)
        text = " ".join(tokens)[:MAX_CMDLINE_CHARS]
        for kw, patterns in self._keyword_patterns:
            if kw not in gate:
                continue
            for idx, pattern in patterns:
                seen = found.get(idx)
                if seen is not None and seen.cmdline:
                    continue
                m = pattern.search(text)
                if m is not None:
                    ev = note(idx)
                    ev.cmdline = True
                    ev.reasons.append(f"command line matches {_excerpt(m.group(0))!r}")

    def _verdict(self, idx: int, ev: _Evidence) -> RuntimeMatch:
        entry = self.entries[idx]
        if ev.cmdline and (ev.name or ev.exe):
            confidence = CONF_CORROBORATED
        elif ev.cmdline:
            confidence = CONF_CMDLINE
        elif ev.name and ev.exe:
            confidence = CONF_NAME_AND_EXE
        elif ev.name or ev.exe:
            confidence = CONF_NAME
        else:  # port only
            return RuntimeMatch(entry, ("port",), ev.port_only_confidence, tuple(ev.reasons))
        if ev.port:
            confidence = min(CONF_CAP, confidence + PORT_BONUS)
        matched_on = tuple(
            s for s, on in zip(SIGNALS, (ev.name, ev.exe, ev.cmdline, ev.port), strict=True) if on
        )
        return RuntimeMatch(entry, matched_on, round(confidence, 4), tuple(ev.reasons))


# --- command lines as patterns see them --------------------------------------------------


def _gate_text(tokens: Sequence[str]) -> str:
    """What the keyword scan reads: program and script arguments, not options, bounded."""
    words = [t for t in tokens[:_GATE_ARGS] if t[:1] != "-"]
    return " ".join(words)[:_GATE_CHARS].lower()


def _excerpt(s: str, limit: int = 80) -> str:
    s = s.strip()
    return s if len(s) <= limit else s[: limit - 3] + "..."


# --- loading -------------------------------------------------------------------------------


def load_runtime_catalog(path: Path | None = None) -> RuntimeCatalog:
    """Load and validate a catalog file (default: the packaged runtimes.toml)."""
    return parse_runtime_catalog(*read_catalog("runtimes.toml", path))


@lru_cache(maxsize=1)
def default_runtime_catalog() -> RuntimeCatalog:
    """The packaged catalog, loaded once per process."""
    return load_runtime_catalog()


def parse_runtime_catalog(data: bytes | str, label: str = "<string>") -> RuntimeCatalog:
    """Validate catalog TOML text; `label` names it in error messages."""
    doc = parse_catalog_toml(data, label, _TOP_KEYS)

    def fail(problem: str) -> CatalogError:
        return CatalogError(f"{label}: {problem}")

    weak_ports = _ports(doc.get("weak_ports", []), lambda p: fail(f"weak_ports: {p}"))
    entries = catalog_entries(doc, "runtime", label, _entry)
    return RuntimeCatalog(entries, weak_ports, label)


def _entry(raw: Mapping[str, Any], number: int, label: str) -> RuntimeEntry:
    fail, strings = entry_strings(
        raw, number, label, known=_ENTRY_KEYS, required=_REQUIRED, strings=_STR_KEYS
    )
    lists = entry_lists(raw, _LIST_KEYS, fail)
    category = strings.get("category", "inference_server")
    if category not in CATEGORIES:
        raise fail(f"category {category!r} is not one of {', '.join(sorted(CATEGORIES))}")
    severity = strings.get("severity", "medium")
    if severity not in SEVERITIES:
        raise fail(f"severity {severity!r} is not one of {', '.join(sorted(SEVERITIES))}")
    names: dict[str, tuple[str, ...]] = {}
    for key in ("process_names", "exe_names"):
        for n in lists[key]:
            if not _NAME_GLOB_RE.fullmatch(n):
                raise fail(f"{key}: {n!r} may hold one '*', at its start or its end only")
        names[key] = tuple(dict.fromkeys(norm(n) for n in lists[key]))
    for module in lists["modules"]:
        if not _MODULE_RE.fullmatch(module):
            raise fail(f"modules: {module!r} is not a dotted Python module name")
    compiled = entry_regexes(lists["cmdline_patterns"], "cmdline_patterns", fail, re.IGNORECASE)
    keywords = tuple(dict.fromkeys(lists["keywords"]))
    for kw in keywords:
        if kw != kw.lower() or kw != kw.strip():
            raise fail(f"keywords: {kw!r} must be lower case, without surrounding blanks")
    if compiled and not keywords:
        raise fail(
            "cmdline_patterns need keywords (the pre-filter only tries patterns whose keyword is present)"
        )
    for source in lists["cmdline_patterns"]:
        literal = _unescape(source).lower()
        if not any(kw in literal for kw in keywords):
            raise fail(f"cmdline_patterns: {source!r} contains none of the keywords {list(keywords)}")
    if not (names["process_names"] or names["exe_names"] or lists["modules"] or compiled):
        raise fail("needs at least one of process_names, exe_names, modules, cmdline_patterns")
    ports = _ports(raw.get("ports", []), lambda p: fail(f"ports: {p}"))
    return RuntimeEntry(
        id=strings["id"],
        name=strings["name"],
        source=strings["source"],
        vendor=strings.get("vendor", ""),
        category=category,
        severity=severity,
        process_names=names["process_names"],
        exe_names=names["exe_names"],
        modules=lists["modules"],
        cmdline_patterns=lists["cmdline_patterns"],
        keywords=keywords,
        ports=ports,
        libraries=lists["libraries"],
        notes=strings.get("notes", ""),
        compiled=compiled,
    )


def _ports(value: object, fail: Callable[[str], CatalogError]) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise fail("must be a list of integers")
    for port in value:
        # bool is an int in Python; `true` is never a port.
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise fail(f"{port!r} is not a TCP port (1..65535)")
    return tuple(dict.fromkeys(value))


def _unescape(pattern: str) -> str:
    """A regex's source with backslash escapes of punctuation removed, for the keyword check."""
    return re.sub(r"\\([^\w])", r"\1", pattern)

"""One name for a host: every command, API filter and page takes a host id ("h-3f2a…") or a host
name ("ws-042") and shows the name first. Resolution lives here once, for the CLI, the API, the
console and the reports.

A name is matched without regard to case against the names hosts gave in their Hello and agents
at enrollment. An unknown host is an error that names it (never an empty result that looks like a
quiet host); a name several hosts share is an error that lists their ids.
"""

from __future__ import annotations

from ..storage.base import Store
from ..storage.reads import FindingFilter
from .errors import BadQuery


class UnknownHost(BadQuery):
    """Neither a host id nor a host name the collector knows."""


def host_names(store: Store) -> dict[str, str]:
    """Every known host id with its name ("" when it never gave one): hosts that said Hello and
    enrolled agents that have not connected yet."""
    names = {a.host_id: a.hostname for a in store.agents()}
    for h in store.hosts(with_counts=False):
        names[h.host_id] = h.hostname or names.get(h.host_id, "")
    return names


def host_label(names: dict[str, str], host_id: str) -> str:
    """What a table shows for a host: its name, or its id when it has none."""
    return names.get(host_id) or host_id


def resolve_host(store: Store, text: str, names: dict[str, str] | None = None) -> str:
    """The host id that `text` (an id or a name) means. UnknownHost or BadQuery (ambiguous) otherwise."""
    wanted = text.strip()
    if not wanted:
        raise UnknownHost("empty host: give a host id or a host name (see 'umbra-collector hosts')")
    if names is None and store.agent(wanted) is not None:
        return wanted  # an enrolled agent's id: one key lookup, the common case
    known = host_names(store) if names is None else names
    if wanted in known:
        return wanted
    matches = sorted(h for h, name in known.items() if name and name.lower() == wanted.lower())
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise BadQuery(f"host name {wanted!r} is ambiguous, give one of its ids: {', '.join(matches)}")
    # A host whose findings arrived without a Hello on record (an imported or pruned store).
    if store.findings_page(FindingFilter(host_id=wanted), 1, None).findings:
        return wanted
    raise UnknownHost(f"no host {wanted!r}: neither a host id nor a host name (see 'umbra-collector hosts')")

"""Findings listed page by page: filters, a time range, and an opaque cursor (keyset pagination)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, replace
from typing import Any

from umbra import codec

from ..storage.base import Store
from ..storage.reads import FindingCursor, FindingFilter
from .errors import BadQuery
from .hosts import resolve_host

__all__ = [
    "MAX_PAGE",
    "BadQuery",
    "FindingsResult",
    "at_least",
    "finding_filter",
    "list_findings",
    "one_finding",
]

MAX_PAGE = 10_000


@dataclass(frozen=True)
class FindingsResult:
    findings: list[dict[str, Any]]
    cursor: str | None  # pass back for the next page; None on the last

    def to_dict(self) -> dict[str, Any]:
        return {"findings": self.findings, "next_cursor": self.cursor}


def encode_cursor(cursor: FindingCursor) -> str:
    raw = json.dumps([cursor.last_seen_ns, cursor.host_id, cursor.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> FindingCursor:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        last_ns, host_id, fid = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise BadQuery("malformed cursor (pass back next_cursor unchanged)") from None
    if not (isinstance(last_ns, int) and isinstance(host_id, str) and isinstance(fid, str)):
        raise BadQuery("malformed cursor (pass back next_cursor unchanged)")
    return FindingCursor(last_ns, host_id, fid)


def at_least(severity: str) -> tuple[str, ...]:
    """This severity and every higher one ("medium" -> medium, high, critical); BadQuery if unknown."""
    if severity not in codec.SEVERITY_NAMES:
        raise BadQuery(f"unknown severity {severity!r}; known: {', '.join(codec.SEVERITY_NAMES)}")
    return codec.SEVERITY_NAMES[codec.SEVERITY_NAMES.index(severity) :]


def finding_filter(
    *,
    kinds: tuple[str, ...] = (),
    severities: tuple[str, ...] = (),
    host: str | None = None,
    user: str | None = None,
    service: str | None = None,
    vendor: str | None = None,
    runtime: str | None = None,
    sha256: str | None = None,
    approved: bool | None = None,
    since: float | None = None,
    until: float | None = None,
) -> FindingFilter:
    """A FindingFilter from names as people write them ("AI_SERVICE_ACCESS", "high"); BadQuery if unknown."""
    try:
        kind_values = tuple(int(codec.kind_value(k)) for k in kinds)
        severity_values = tuple(int(codec.severity_value(s)) for s in severities)
    except ValueError as exc:
        raise BadQuery(str(exc)) from None
    return FindingFilter(
        kinds=kind_values,
        severities=severity_values,
        host_id=host or None,
        user=user or None,
        service=service.lower() if service else None,
        vendor=vendor or None,
        runtime=runtime or None,
        sha256=sha256.lower() if sha256 else None,
        approved=approved,
        since=since,
        until=until,
    )


def list_findings(
    store: Store, where: FindingFilter, limit: int = 100, cursor: str | None = None
) -> FindingsResult:
    """One page of findings, newest first; the filter's host may be a host id or a host name."""
    if not 1 <= limit <= MAX_PAGE:
        raise BadQuery(f"limit must be 1..{MAX_PAGE}")
    if where.host_id is not None:
        where = replace(where, host_id=resolve_host(store, where.host_id))
    page = store.findings_page(where, limit, decode_cursor(cursor) if cursor else None)
    return FindingsResult(page.findings, encode_cursor(page.next) if page.next else None)


def one_finding(store: Store, host_id: str, finding_id: str) -> dict[str, Any] | None:
    """One finding by its key (host id, finding id), or None: the console's finding page."""
    return store.finding(host_id, finding_id)

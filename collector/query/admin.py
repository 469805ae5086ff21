"""The fleet channel's views: enrollment tokens, enrolled agents, the current policy."""

from __future__ import annotations

import time
from typing import Any

from ..storage.base import Store
from .times import iso_seconds


def tokens_view(store: Store, now: float | None = None) -> list[dict[str, Any]]:
    """Tokens as shown: hash prefix (the token itself is never stored), times, uses, state."""
    now = time.time() if now is None else now
    return [
        {
            "hash": t.token_hash[:12],
            "created": iso_seconds(t.created_at),
            "expires": iso_seconds(t.expires_at),
            "uses_left": t.uses_left,
            "uses": t.uses,
            "state": "used" if t.uses_left <= 0 else "expired" if t.expires_at <= now else "valid",
            "note": t.note,
        }
        for t in store.tokens()
    ]


def agents_view(store: Store) -> list[dict[str, Any]]:
    return [
        {
            **a.to_dict(),
            "enrolled_at": iso_seconds(a.enrolled_at),
            "renewed_at": iso_seconds(a.renewed_at),
            "not_after": iso_seconds(a.not_after),
            "revoked_at": iso_seconds(a.revoked_at),
        }
        for a in store.agents()
    ]


def policy_view(store: Store) -> dict[str, Any] | None:
    """The current policy with its version and time, or None before the first `policy set`."""
    record = store.current_policy()
    if record is None:
        return None
    return {"version": record.version, "created": iso_seconds(record.created_at), **record.body}

"""The fleet channel's admin writes, shared by the CLI and the console so both do exactly the same:
mint an enrollment token, store a new policy version (running collectors push it to their agents
within --monitor-interval), revoke an agent."""

from __future__ import annotations

import time
from typing import Any

from . import pki
from .policy import validate
from .storage.base import Store


def mint_token(store: Store, pin: str, ttl: float, uses: int, note: str = "") -> tuple[str, float]:
    """A new token (its text, shown once; only its hash is kept) and when it expires."""
    secret = pki.new_token_secret()
    expires = time.time() + ttl
    store.create_token(pki.token_hash(secret), expires, uses, note)
    return pki.Token(secret, pin).text, expires


def store_policy(store: Store, doc: Any, where: str = "policy") -> int:
    """Validate a policy document (PolicyError naming the key) and keep it as the next version."""
    return store.set_policy(validate(doc, where))


def revoke_agent(store: Store, host_id: str) -> bool:
    """Revoke an agent for good (its streams end within --monitor-interval); False if not enrolled."""
    return store.revoke_agent(host_id, time.time())

"""The console-access storage contract (users, API keys, sessions), for every backend.

A backend's test module composes `AuthContract` into a `Test...` class and provides a `store`
fixture yielding an empty, open store (the pattern of query_contract.py). Only the `Store`
interface is used, so the same tests hold for SQLite and PostgreSQL.
"""

from __future__ import annotations

import time

import pytest

from collector.storage.base import Store, StoreError


class AuthContract:
    def test_users_are_added_once_listed_by_name_and_removed(self, store: Store) -> None:
        assert store.users() == [] and store.user("ann") is None
        assert store.add_user("zoe", "viewer", "scrypt$h1")
        assert store.add_user("ann", "admin", "scrypt$h2")
        assert not store.add_user("ann", "viewer", "scrypt$other"), "a taken name is refused"
        ann = store.user("ann")
        assert ann is not None and (ann.role, ann.password_hash) == ("admin", "scrypt$h2")
        assert abs(ann.created_at - time.time()) < 60
        assert [u.name for u in store.users()] == ["ann", "zoe"]
        assert store.remove_user("zoe") and not store.remove_user("zoe")
        assert [u.name for u in store.users()] == ["ann"]

    def test_roles_outside_admin_and_viewer_are_refused(self, store: Store) -> None:
        with pytest.raises(ValueError, match="role"):
            store.add_user("root", "superuser", "x")
        with pytest.raises(ValueError, match="role"):
            store.add_api_key("k1", "h1", "owner")
        assert store.users() == [] and store.api_keys() == []

    def test_api_keys_are_found_by_hash_only_and_revoked(self, store: Store) -> None:
        store.add_api_key("k1", "hash-1", "viewer", "grafana")
        store.add_api_key("k2", "hash-2", "admin")
        key = store.api_key("hash-1")
        assert key is not None and (key.key_id, key.role, key.note) == ("k1", "viewer", "grafana")
        assert store.api_key("k1") is None, "the public id is not a credential"
        assert {k.key_id for k in store.api_keys()} == {"k1", "k2"}
        with pytest.raises(StoreError):
            store.add_api_key("k1", "hash-3", "viewer")
        assert store.remove_api_key("k1") and not store.remove_api_key("k1")
        assert store.api_key("hash-1") is None and [k.key_id for k in store.api_keys()] == ["k2"]

    def test_sessions_carry_the_users_current_role_until_they_expire(self, store: Store) -> None:
        now = time.time()
        store.add_user("ann", "viewer", "x")
        store.create_session("s-live", "ann", "csrf-1", now + 3600)
        store.create_session("s-old", "ann", "csrf-2", now + 1)
        live = store.session("s-live", now)
        assert live is not None and (live.user, live.role, live.csrf) == ("ann", "viewer", "csrf-1")
        assert store.session("s-old", now + 2) is None, "an expired session is no session"
        assert store.session("nope", now) is None
        store.delete_session("s-live")
        assert store.session("s-live", now) is None
        store.delete_session("s-live")  # twice is harmless

    def test_removing_a_user_ends_their_sessions(self, store: Store) -> None:
        now = time.time()
        store.add_user("ann", "admin", "x")
        store.create_session("s1", "ann", "c", now + 3600)
        assert store.remove_user("ann")
        assert store.session("s1", now) is None
        store.add_user("ann", "viewer", "y")  # the same name again is a new user: old cookies stay dead
        assert store.session("s1", now) is None

"""Collector storage: one `Store` interface, a backend per database, chosen by URL.

URLs follow the SQLAlchemy convention, so they read the same everywhere:
``sqlite:///relative/path.db`` (three slashes: relative to the working directory),
``sqlite:////var/lib/umbra/collector.db`` (four: absolute), ``sqlite:///:memory:`` (tests).
``postgresql://user:password@host:5432/umbra`` (or ``postgres://``, libpq's own URL syntax, with
its query parameters such as ``?sslmode=verify-full``) is the PostgreSQL backend. A bare path
(``collector.db``, ``/var/lib/umbra/collector.db``: no ``://``) is an SQLite file.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, urlsplit

from .base import (
    ROLES,
    AgentRecord,
    ApiKeyRecord,
    HostContact,
    HostRecord,
    InvalidBatch,
    InventoryRecord,
    PolicyRecord,
    PreparedBatch,
    SensorRecord,
    SessionRecord,
    Store,
    StoreError,
    StoreResult,
    TokenRecord,
    TokenRefused,
    UserRecord,
)
from .sqlite import SQLiteStore

__all__ = [
    "DEFAULT_DB_URL",
    "ROLES",
    "AgentRecord",
    "ApiKeyRecord",
    "HostContact",
    "HostRecord",
    "InvalidBatch",
    "InventoryRecord",
    "PolicyRecord",
    "PreparedBatch",
    "SQLiteStore",
    "SensorRecord",
    "SessionRecord",
    "Store",
    "StoreError",
    "StoreResult",
    "StoreURLError",
    "TokenRecord",
    "TokenRefused",
    "UserRecord",
    "open_store",
    "redact_url",
    "sqlite_path",
    "store_url",
]

#: The default store: a file in the working directory.
DEFAULT_DB_URL = "sqlite:///umbra-collector.db"


class StoreURLError(ValueError):
    """A --db URL this collector cannot use (a usage error, not a runtime one)."""


def sqlite_path(url: str) -> str:
    """``sqlite:///x.db`` -> ``x.db``; ``sqlite:////abs/x.db`` -> ``/abs/x.db``."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "sqlite":
        raise StoreURLError(f"not an SQLite URL: {url!r}")
    if not rest.startswith("/"):
        raise StoreURLError(
            f"bad SQLite URL {url!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    path = unquote(rest[1:])
    if not path:
        raise StoreURLError(f"bad SQLite URL {url!r}: no file path (sqlite:///:memory: for a memory store)")
    return path


def store_url(text: str) -> str:
    """A --db value as a URL: a bare path (no "://") is an SQLite file, relative or absolute."""
    text = text.strip()
    if not text:
        raise StoreURLError("empty database URL; expected a path, sqlite:///PATH or postgresql://...")
    if "://" in text:
        return text
    return "sqlite:///" + quote(text, safe="/:")


def redact_url(url: str) -> str:
    """A database URL fit for logs and messages: its password replaced by ***."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def open_store(url: str, *, create: bool = True) -> Store:
    """Open the store a URL names. `create=False` refuses to create a missing database.

    Raises StoreURLError for a URL no backend takes, StoreError when the database cannot be used.
    """
    url = store_url(url)
    scheme = urlsplit(url).scheme.lower()
    if scheme == "sqlite":
        return SQLiteStore(sqlite_path(url), create=create)
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresStore  # psycopg only loads for a PostgreSQL store

        return PostgresStore(url, create=create)
    if scheme.startswith("postgresql+"):
        raise StoreURLError(f"{scheme!r} is an SQLAlchemy driver name; give a plain postgresql://... URL")
    raise StoreURLError(
        f"unsupported database URL scheme {scheme!r} in {url!r}; expected sqlite or postgresql"
    )

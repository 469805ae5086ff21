"""open_store: the --db URL picks the backend; a URL no backend takes is a clear usage error."""

from __future__ import annotations

import socket

import pytest

from collector.storage import StoreError, StoreURLError, open_store, sqlite_path


class TestOpenStore:
    @pytest.mark.parametrize(
        ("url", "path"),
        [
            ("sqlite:///rel.db", "rel.db"),
            ("sqlite:////abs/dir/c.db", "/abs/dir/c.db"),
            ("sqlite:///:memory:", ":memory:"),
            ("SQLITE:///a%20b.db", "a b.db"),
        ],
    )
    def test_sqlite_paths(self, url: str, path: str) -> None:
        assert sqlite_path(url) == path

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("postgresql+psycopg://db/umbra", "SQLAlchemy driver name"),
            ("mysql://db/umbra", "unsupported"),
            ("collector.db", "no scheme"),
            ("sqlite://", "bad SQLite URL"),
            ("sqlite:///", "no file path"),
        ],
    )
    def test_bad_urls_are_clear_value_errors(self, url: str, message: str) -> None:
        with pytest.raises(StoreURLError, match=message):
            open_store(url)
        assert issubclass(StoreURLError, ValueError)


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_an_unreachable_postgresql_server_is_a_store_error_naming_it(scheme: str) -> None:
    """A PostgreSQL URL is taken (not a usage error); a server that is not there is a runtime error,
    and the message never shows the password."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(
        StoreError, match=rf"cannot use {scheme}://umbra:\*\*\*@127.0.0.1:{port}/umbra"
    ) as info:
        open_store(f"{scheme}://umbra:s3cret@127.0.0.1:{port}/umbra")
    assert "s3cret" not in str(info.value)

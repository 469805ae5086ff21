"""open_store: the --db URL picks the backend; a URL no backend takes is a clear usage error."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from collector.storage import StoreError, StoreURLError, open_store, sqlite_path, store_url


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
        ("text", "url"),
        [
            ("collector.db", "sqlite:///collector.db"),
            ("/var/lib/umbra/c.db", "sqlite:////var/lib/umbra/c.db"),
            ("dir/a b.db", "sqlite:///dir/a%20b.db"),
            ("postgresql://db/umbra", "postgresql://db/umbra"),
        ],
    )
    def test_a_bare_path_is_an_sqlite_file(self, text: str, url: str) -> None:
        assert store_url(text) == url
        if "://" not in text:
            assert sqlite_path(store_url(text)) == text

    def test_a_bare_path_opens_that_sqlite_file(self, tmp_path: Path) -> None:
        path = tmp_path / "bare.db"
        with open_store(str(path)) as store:
            assert store.hosts() == []
        assert path.is_file()

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("postgresql+psycopg://db/umbra", "SQLAlchemy driver name"),
            ("mysql://db/umbra", "unsupported"),
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

"""The read side's contract (contract/query_contract.py), the kept summaries' contract
(contract/summary_contract.py) and the console-access contract (contract/auth_contract.py) on the
SQLite backend, file and memory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from contract.auth_contract import AuthContract
from contract.query_contract import QueryContract
from contract.summary_contract import SummaryContract

from collector.storage import Store, open_store


@pytest.fixture(params=["file", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path / 'query.db'}" if request.param == "file" else "sqlite:///:memory:"
    s = open_store(url)
    try:
        yield s
    finally:
        s.close()


class TestQuerySQLite(QueryContract):
    pass


class TestSummariesSQLite(SummaryContract):
    pass


class TestAuthSQLite(AuthContract):
    pass

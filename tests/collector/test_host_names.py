"""One name for a host (issue 17, item 4): every command and the read side take a host id or a host
name; an unknown host is an error naming it, an ambiguous name lists its ids; `agent remove`;
`findings --severity` (minimum) and `--since`; tables fit the terminal and `--wide` shows all.

A real SQLite store filled through the Store interface, then the real `umbra-collector` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from collector_proc import CollectorProc
from collector_testkit import build_finding, build_hello, build_inventory
from conftest import cli

from collector.query.documents import inventories_view
from collector.query.errors import BadQuery
from collector.query.findings import finding_filter, list_findings
from collector.query.hosts import UnknownHost, resolve_host
from collector.storage import open_store

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "console"))
from consolekit import PASSWORDS, Client, add_user

LONG = "a summary long enough that a narrow terminal must cut it short " * 3


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = str(tmp_path / "collector.db")  # a bare path: an SQLite file (CollectorProc's, too)
    now = time.time()  # at set-up, not at collection: a long run must not age the findings
    with open_store(url) as store:
        hosts = {"h-aaa111": "ws-alpha", "h-bbb222": "ws-twin", "h-ccc333": "ws-twin"}
        for host_id, name in hosts.items():
            store.register_agent(host_id, 0x1, now + 86400, name, renewal=False)
            store.upsert_host(host_id, build_hello(host_id, name), "ipv4:10.0.0.1:5000")
        store.store_batch(
            "h-aaa111",
            1,
            [
                build_finding("crit", severity="critical", last_seen=now - 60, summary=LONG),
                build_finding("med", severity="medium", last_seen=now - 20 * 60),
                build_finding("low", severity="low", last_seen=now - 2 * 3600),
                build_finding("old-high", severity="high", last_seen=now - 3 * 86400),
            ],
        )
        store.store_batch("h-bbb222", 1, [build_finding("twin", severity="high", last_seen=now - 60)])
        store.record_inventory("h-aaa111", build_inventory(now, "/m/alpha.gguf"))
    return url


def run(*args: str, columns: int = 100) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run(
        [cli("umbra-collector"), *args], capture_output=True, text=True, timeout=60, env=env
    )


def ids(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    return sorted(json.loads(line)["id"] for line in result.stdout.splitlines())


def error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result
    (line,) = result.stderr.strip().splitlines()
    return line


def test_findings_host_takes_the_id_or_the_name(db: str) -> None:
    by_id = ids(run("findings", "--db", db, "--host", "h-aaa111", "--format", "json"))
    assert by_id == ["crit", "low", "med", "old-high"]
    assert ids(run("findings", "--db", db, "--host", "ws-alpha", "--format", "json")) == by_id
    assert ids(run("findings", "--db", db, "--host", "WS-Alpha", "--format", "json")) == by_id


def test_unknown_and_ambiguous_hosts_are_errors(db: str) -> None:
    line = error(run("findings", "--db", db, "--host", "ws-nobody"))
    assert "no host 'ws-nobody': neither a host id nor a host name" in line
    line = error(run("findings", "--db", db, "--host", "ws-twin"))
    assert "host name 'ws-twin' is ambiguous, give one of its ids: h-bbb222, h-ccc333" in line
    assert ids(run("findings", "--db", db, "--host", "h-bbb222", "--format", "json")) == ["twin"]
    assert "no host 'ws-nobody'" in error(run("inventory", "--db", db, "--host", "ws-nobody"))
    assert "no host 'ws-nobody'" in error(run("agent", "revoke", "ws-nobody", "--db", db))
    assert "no host 'ws-nobody'" in error(
        run("view", "trend", "--scope", "host", "--key", "ws-nobody", "--db", db)
    )


def test_severity_is_a_minimum_and_since_takes_a_unit(db: str) -> None:
    host = ("--db", db, "--host", "ws-alpha", "--format", "json")
    assert ids(run("findings", *host, "--severity", "medium")) == ["crit", "med", "old-high"]
    assert ids(run("findings", *host, "--severity", "high")) == ["crit", "old-high"]
    assert ids(run("findings", *host, "--severity", "medium", "--since", "1h")) == ["crit", "med"]
    assert ids(run("findings", *host, "--since", "3000s")) == ["crit", "med"]  # 50 minutes
    assert "needs a unit" in error(run("findings", *host, "--since", "3600"))


def test_tables_name_hosts_fit_the_terminal_and_wide_shows_all(db: str) -> None:
    narrow = run("findings", "--db", db, "--host", "h-aaa111", columns=80)
    assert narrow.returncode == 0, narrow.stderr
    lines = narrow.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[0].split()[:3] == ["KIND", "SEVERITY", "HOST"]
    assert all("ws-alpha" in line for line in lines[1:]) and "h-aaa111" not in narrow.stdout
    assert LONG.strip() not in narrow.stdout
    wide = run("findings", "--db", db, "--host", "h-aaa111", "--wide", columns=80)
    assert "HOST ID" in wide.stdout and "FIRST SEEN" in wide.stdout and "h-aaa111" in wide.stdout
    assert LONG.strip() in wide.stdout and max(len(line) for line in wide.stdout.splitlines()) > 80

    hosts = run("hosts", "--db", db, columns=80).stdout.splitlines()
    assert hosts[0].split()[:3] == ["HOST", "HOST", "ID"] and all(len(line) <= 80 for line in hosts)
    assert any(line.startswith("ws-alpha") and "h-aaa111" in line for line in hosts)
    agents = run("agent", "list", "--db", db).stdout
    assert "HOST ID" in agents and "ws-twin" in agents and "h-ccc333" in agents
    inventory = run("inventory", "--db", db, "--host", "ws-alpha").stdout
    assert "ws-alpha" in inventory and "/m/alpha.gguf" in inventory and "h-aaa111" not in inventory
    assert "h-aaa111" in run("inventory", "--db", db, "--host", "ws-alpha", "--wide").stdout


def test_agent_remove_deletes_the_host_and_keeps_its_revoked_enrollment(db: str) -> None:
    done = run("agent", "remove", "ws-alpha", "--db", db)
    assert done.returncode == 0, done.stderr
    assert "host ws-alpha (h-aaa111) removed: agent revoked, 4 findings" in done.stderr
    assert "kept: the revoked enrollment record and the risk history" in done.stderr
    # The kept (revoked) enrollment record still names it: a known host with nothing stored.
    assert run("findings", "--db", db, "--host", "ws-alpha").stdout == "no findings\n"
    hosts = json.loads(run("hosts", "--db", db, "--format", "json").stdout)["hosts"]
    assert sorted(h["host_id"] for h in hosts) == ["h-bbb222", "h-ccc333"]
    assert json.loads(run("inventory", "--db", db, "--format", "json").stdout) == {"inventories": []}
    agents = {
        a["host_id"]: a
        for a in json.loads(run("agent", "list", "--db", db, "--format", "json").stdout)["agents"]
    }
    assert agents["h-aaa111"]["revoked"] is True and agents["h-bbb222"]["revoked"] is False
    assert run("agent", "revoke", "ws-alpha", "--db", db).returncode == 0  # revoking twice is fine


def test_the_read_side_resolves_once_for_cli_api_and_console(db: str) -> None:
    with open_store(db, create=False) as store:
        assert resolve_host(store, "ws-alpha") == "h-aaa111"
        assert resolve_host(store, "h-ccc333") == "h-ccc333"
        with pytest.raises(UnknownHost):
            resolve_host(store, "nobody")
        with pytest.raises(BadQuery, match="ambiguous"):
            resolve_host(store, "ws-twin")
        page = list_findings(store, finding_filter(host="ws-alpha", severities=("critical",)))
        assert [f["id"] for f in page.findings] == ["crit"]
        assert [i["host_id"] for i in inventories_view(store, "ws-alpha")] == ["h-aaa111"]


def test_the_console_and_the_api_take_names_too(db: str, tmp_path: Path) -> None:
    collector = CollectorProc(tmp_path, "--http", "127.0.0.1:0")
    collector.start()
    try:
        add_user(collector.url, "vic", "viewer")
        client = Client(f"http://{collector.http}")
        assert client.login("vic", PASSWORDS["viewer"]) == 303
        status, _, body = client.request("/hosts/ws-alpha")
        assert status == 200 and "h-aaa111" in body
        status, _, body = client.request("/hosts/ws-twin")
        assert status == 404 and "ambiguous" in body and "h-bbb222, h-ccc333" in body
        status, _, body = client.request("/api/findings?host=ws-alpha&min_severity=high")
        assert status == 200 and sorted(f["id"] for f in json.loads(body)) == ["crit", "old-high"]
        status, _, body = client.request("/api/inventory?host=ws-nobody")
        assert status == 400 and "no host 'ws-nobody'" in json.loads(body)["error"]
    finally:
        collector.stop()

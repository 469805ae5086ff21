"""`umbra-collector` as users run it: a real subprocess, real files, real signals."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from collector_testkit import T0, build_finding, build_hello, build_inventory
from grpc import aio
from umbra.v1 import agent_pb2, agent_pb2_grpc

from collector.cli import build_parser
from collector.storage import open_store

pytestmark = pytest.mark.timeout(60)

LISTENING = re.compile(r"listening grpc=(?P<grpc>\S+:\d+) http=(?P<http>\S+)")


def collector_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "umbra-collector"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("umbra-collector")
    return [found] if found else [sys.executable, "-m", "collector.cli"]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "100"}
    return subprocess.run(
        [*collector_cmd(), *args], capture_output=True, text=True, timeout=30, cwd=cwd, env=env
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], status: int) -> None:
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("umbra-collector: error: ")


@pytest.fixture(scope="module")
def filled_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two hosts: one with an unapproved critical runtime, one with only approved service access."""
    url = f"sqlite:///{tmp_path_factory.mktemp('cli') / 'fleet.db'}"
    with open_store(url) as store:
        store.upsert_host("host-a", build_hello("host-a", "ws-a"), "ipv4:127.0.0.1:1")
        store.upsert_host("host-b", build_hello("host-b", "ws-b"), "ipv4:127.0.0.1:2")
        store.store_batch(
            "host-a",
            1,
            [
                build_finding("a1", severity="critical", summary="Ollama serving on 0.0.0.0:11434\x1b[31m"),
                build_finding("a2", kind="MODEL_ARTIFACT", severity="medium", last_seen=T0 + 5),
            ],
        )
        store.store_batch(
            "host-b", 4, [build_finding("b1", kind="AI_SERVICE_ACCESS", severity="info", approved=True)]
        )
        store.record_inventory("host-a", build_inventory(time.time() - 120, "/home/a/models/llama.gguf"))
    return url


# ---- help and usage errors


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", ["", *sorted(subcommands())])
def test_help_explains_every_option(command: str) -> None:
    result = cli(*([command] if command else []), "--help")
    assert result.returncode == 0 and result.stderr == ""
    parser = subcommands()[command] if command else build_parser()
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:  # internal (serve's worker processes)
            continue
        assert action.help, f"{command} {action.option_strings} has no help"
        for option in action.option_strings:
            assert option in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["nonsense"],
        ["findings", "--limit", "ten"],
        ["findings", "--kind", "NOT_A_KIND"],
        ["hosts", "--format", "xml"],
        ["serve", "--grpc", "no-port"],
        ["serve", "--grpc", "127.0.0.1:99999"],
        ["fleet", "--db", "mysql://db/umbra"],
        ["fleet", "--db", "postgresql+psycopg://db/umbra"],
        ["serve", "--db", ""],
        ["token", "create", "--ttl", "24"],
    ],
)
def test_usage_errors_are_one_line_with_status_2(args: list[str], tmp_path: Path) -> None:
    assert_one_line_error(cli(*args, cwd=tmp_path), 2)


def test_missing_or_foreign_database_is_a_runtime_error(tmp_path: Path) -> None:
    result = cli("fleet", "--db", f"sqlite:///{tmp_path / 'absent.db'}")
    assert_one_line_error(result, 1)
    assert not (tmp_path / "absent.db").exists()  # reading never creates a database
    junk = tmp_path / "junk.db"
    junk.write_text("hello")
    assert_one_line_error(cli("hosts", "--db", f"sqlite:///{junk}"), 1)
    # A PostgreSQL server that is not there (port 1: nothing listens) is the same kind of error.
    assert_one_line_error(cli("fleet", "--db", "postgresql://umbra@127.0.0.1:1/umbra"), 1)


# ---- read commands


def test_fleet_json_is_one_document(filled_db: str) -> None:
    result = cli("fleet", "--db", filled_db, "--format", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["fleet"]["hosts"] == 2
    assert doc["fleet"]["hosts_at_risk"] == 1
    assert doc["fleet"]["findings"] == 3 and doc["fleet"]["unapproved"] == 2
    hosts = {h["host_id"]: h for h in doc["hosts"]}
    assert hosts["host-a"]["risk"]["score"] == 45.0 and hosts["host-a"]["risk"]["level"] == "high"
    assert hosts["host-b"]["risk"]["level"] == "none"
    assert hosts["host-b"]["last_sequence"] == 4
    assert {f["id"] for f in doc["findings"]} == {"a1", "a2", "b1"}


def test_fleet_table_fits_100_columns(filled_db: str) -> None:
    result = cli("fleet", "--db", filled_db)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(len(line) <= 100 for line in lines), max(lines, key=len)
    assert "HIGH" in lines[0]
    assert any("ws-a" in line and "45 high" in line for line in lines), "hosts are shown by name"
    assert any("MODEL_ARTIFACT" in line for line in lines)
    assert "\x1b" not in result.stdout  # an agent's text cannot drive the operator's terminal


def test_findings_json_lines_and_filters(filled_db: str) -> None:
    result = cli("findings", "--db", filled_db, "--format", "json", "--host", "host-a")
    assert result.returncode == 0, result.stderr
    found = [json.loads(line) for line in result.stdout.splitlines()]
    assert [f["id"] for f in found] == ["a2", "a1"]  # newest first
    assert all(f["host_id"] == "host-a" for f in found)
    result = cli("findings", "--db", filled_db, "--format", "json", "--kind", "ai_service_access")
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == ["b1"]
    result = cli("findings", "--db", filled_db, "--format", "json", "--limit", "1")
    assert len(result.stdout.splitlines()) == 1


def test_findings_and_hosts_tables(filled_db: str) -> None:
    result = cli("findings", "--db", filled_db)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split()[:2] == ["KIND", "SEVERITY"]
    assert "4242/ollama" in result.stdout
    result = cli("hosts", "--db", filled_db)
    assert result.returncode == 0, result.stderr
    # HOST is the name, HOST ID the id: the same two columns in every host table.
    assert [line.split()[:2] for line in result.stdout.splitlines()[1:]] == [
        ["ws-a", "host-a"],
        ["ws-b", "host-b"],
    ]
    assert all(len(line) <= 100 for line in result.stdout.splitlines())
    result = cli("hosts", "--db", filled_db, "--format", "json")
    assert [h["hostname"] for h in json.loads(result.stdout)["hosts"]] == ["ws-a", "ws-b"]


def test_inventory_table_and_json(filled_db: str) -> None:
    result = cli("inventory", "--db", filled_db)
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert header.split() == ["HOST", "PATH", "FORMAT", "SIZE", "PARAMS", "SHA-256", "TAKEN"]
    assert row.split() == [
        "ws-a", "/home/a/models/llama.gguf", "gguf", "4.1", "GB", "7,241,732,096", "00" * 6, "2m", "ago"
    ]  # fmt: skip
    result = cli("inventory", "--db", filled_db, "--format", "json", "--host", "host-b")
    assert json.loads(result.stdout) == {"inventories": []}
    doc = json.loads(cli("inventory", "--db", filled_db, "--format", "json").stdout)
    (inventory,) = doc["inventories"]
    assert inventory["host_id"] == "host-a" and inventory["models"][0]["sha256"] == "00" * 32


# ---- serve


class Serve:
    def __init__(self, proc: subprocess.Popen[str], grpc_addr: str, http: str) -> None:
        self.proc, self.grpc_addr, self.http = proc, grpc_addr, http


def start_serve(*args: str, cwd: Path) -> Serve:
    proc = subprocess.Popen(
        [*collector_cmd(), "serve", "--grpc", "127.0.0.1:0", "--log-level", "warning", "--insecure", *args],
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        if m := LISTENING.search(line):
            return Serve(proc, m["grpc"], m["http"])
    proc.kill()
    raise AssertionError(f"no listening line; exit {proc.wait()}, stderr: {proc.stderr.read()}")


@pytest.fixture
def serve_proc(tmp_path: Path) -> Iterator[Serve]:
    s = start_serve("--http", "127.0.0.1:0", "--grace", "1s", cwd=tmp_path)
    yield s
    if s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait()


async def send_batches(addr: str, batches: list[tuple[int, int]], host: str = "host-cli") -> list[int]:
    async with aio.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        call = agent_pb2_grpc.StreamServiceStub(channel).Stream()
        await call.write(agent_pb2.AgentMessage(hello=build_hello(host)))
        for seq, n in batches:
            findings = [build_finding(f"s{seq}-{i}") for i in range(n)]
            await call.write(
                agent_pb2.AgentMessage(batch=agent_pb2.FindingBatch(sequence=seq, findings=findings))
            )
        acks = []
        for _ in batches:
            reply = await call.read()
            assert isinstance(reply, agent_pb2.CollectorMessage)
            acks.append(reply.ack.sequence)
        await call.done_writing()
        assert await call.code() == grpc.StatusCode.OK
        return acks


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stores_acks_and_stops_gracefully(
    serve_proc: Serve, tmp_path: Path, sig: signal.Signals
) -> None:
    assert serve_proc.http != "off"
    acks = asyncio.run(send_batches(serve_proc.grpc_addr, [(1, 10), (2, 10), (1, 10)]))
    assert acks == [1, 2, 1]
    serve_proc.proc.send_signal(sig)
    assert serve_proc.proc.wait(timeout=15) == 0
    assert "Traceback" not in (serve_proc.proc.stderr.read() if serve_proc.proc.stderr else "")
    # The default database is ./umbra-collector.db in the working directory.
    assert (tmp_path / "umbra-collector.db").exists()
    result = cli("findings", "--format", "json", "--limit", "0", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout == ""
    result = cli("fleet", "--format", "json", cwd=tmp_path)
    doc = json.loads(result.stdout)
    assert doc["fleet"]["findings"] == 20
    assert doc["hosts"][0]["host_id"] == "host-cli" and doc["hosts"][0]["last_sequence"] == 2


def test_serve_on_a_taken_port_fails_cleanly(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = cli("serve", "--grpc", f"127.0.0.1:{port}", cwd=tmp_path)
    assert_one_line_error(result, 1)
    assert str(port) in result.stderr


# ---- fleet channel commands: tokens, agents, policy; serve with TLS and with several workers


def test_token_create_prints_a_pinned_token_and_stores_only_its_hash(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    result = cli("token", "create", "--db", db, "--uses", "3", "--ttl", "15m", "--note", "lab", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    secret, pin = token.split(".")
    assert len(secret) >= 40 and len(pin) == 43 and not token.startswith("-")  # never read as an option
    assert (tmp_path / "umbra-pki" / "ca.crt").exists()  # the CA exists before the first serve
    from collector import pki

    assert pin == pki.certificate_pin((tmp_path / "umbra-pki" / "ca.crt").read_bytes())
    listed = json.loads(cli("token", "list", "--db", db, "--format", "json", cwd=tmp_path).stdout)["tokens"]
    assert [(t["uses_left"], t["state"], t["note"]) for t in listed] == [(3, "valid", "lab")]
    assert secret not in (tmp_path / "c.db").read_bytes().decode("latin-1")
    assert_one_line_error(cli("token", "create", "--db", db, "--ttl", "soon", cwd=tmp_path), 2)
    assert_one_line_error(cli("token", "create", "--db", db, "--uses", "0", cwd=tmp_path), 2)


def test_agent_list_and_revoke(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    with open_store(db) as store:
        store.register_agent("h-aaaa", 1, time.time() + 3600, "ws-a", renewal=False)
    assert "h-aaaa" in cli("agent", "list", "--db", db, cwd=tmp_path).stdout
    result = cli("agent", "revoke", "h-aaaa", "--db", db, cwd=tmp_path)
    assert result.returncode == 0 and "revoked" in result.stderr
    (agent,) = json.loads(cli("agent", "list", "--db", db, "--format", "json", cwd=tmp_path).stdout)["agents"]
    assert agent["revoked"] is True and agent["revoked_at"]
    assert_one_line_error(cli("agent", "revoke", "h-nobody", "--db", db, cwd=tmp_path), 2)


def test_policy_show_before_and_after_set(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    open_store(db).close()
    assert json.loads(cli("policy", "show", "--db", db, "--format", "json").stdout) == {"policy": None}
    assert "no policy" in cli("policy", "show", "--db", db).stdout
    (tmp_path / "p.toml").write_text('approved_runtimes = ["ollama"]\nupload_threshold_bytes = 1000\n')
    done = cli("policy", "set", str(tmp_path / "p.toml"), "--db", db)
    assert done.returncode == 0 and "deprecated" not in done.stderr
    shown = cli("policy", "show", "--db", db).stdout
    assert (
        "policy version 1" in shown
        and "approved_runtimes: ollama" in shown
        and "upload_threshold_bytes: 1000" in shown
        and "min_confidence: - (the agent's own)" in shown
    )
    # The old [thresholds] table still works, with a warning naming the new keys.
    (tmp_path / "old.toml").write_text("[thresholds]\nupload_bytes = 2000\nmin_confidence = 0.7\n")
    old = cli("policy", "set", str(tmp_path / "old.toml"), "--db", db)
    assert old.returncode == 0
    assert (
        "[thresholds] table is deprecated" in old.stderr
        and "upload_bytes -> upload_threshold_bytes" in old.stderr
    )
    shown = json.loads(cli("policy", "show", "--db", db, "--format", "json").stdout)["policy"]
    assert shown["thresholds"] == {"upload_bytes": 2000, "min_confidence": 0.7}


def test_serve_with_tls_refuses_plain_agents_and_insecure_remote_needs_insecure(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            *collector_cmd(),
            "serve",
            "--grpc",
            "127.0.0.1:0",
            "--enroll",
            "127.0.0.1:0",
            "--log-level",
            "warning",
        ],
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        found = re.search(r"listening grpc=(\S+) http=off enroll=(\S+) tls=on", line)
        assert found, line
        with pytest.raises(aio.AioRpcError) as err:
            asyncio.run(send_batches(found.group(1), [(1, 1)]))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # no TLS, no certificate: no stream
        assert (tmp_path / "umbra-pki" / "server.crt").exists()
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0
    assert_one_line_error(cli("serve", "--allow-insecure-remote", cwd=tmp_path), 2)


def test_serve_with_two_workers_shares_the_ports_and_stops_cleanly(tmp_path: Path) -> None:
    import psutil

    serve = start_serve(
        "--workers", "2", "--http", "127.0.0.1:0", "--monitor-interval", "300ms", cwd=tmp_path
    )
    try:
        children = psutil.Process(serve.proc.pid).children()
        assert len(children) == 2

        async def many() -> list[list[int]]:
            return list(
                await asyncio.gather(
                    *(send_batches(serve.grpc_addr, [(1, 5)], f"host-{n}") for n in range(8))
                )
            )

        assert asyncio.run(many()) == [[1]] * 8
        deadline = time.monotonic() + 20
        while True:  # /healthz adds up both workers' counters
            import urllib.request

            with urllib.request.urlopen(f"http://{serve.http}/healthz", timeout=10) as resp:
                health = json.load(resp)
            if health["batches_stored"] == 8 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert health["workers"] == 2 and health["batches_stored"] == 8
        serve.proc.send_signal(signal.SIGTERM)
        assert serve.proc.wait(timeout=30) == 0
        assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    finally:
        if serve.proc.poll() is None:
            serve.proc.kill()
            serve.proc.wait()
    result = cli("fleet", "--format", "json", cwd=tmp_path)
    assert json.loads(result.stdout)["fleet"]["findings"] == 40

    # A SIGKILLed supervisor takes its workers with it: the port is free again at once.
    serve = start_serve("--workers", "2", cwd=tmp_path)
    children = psutil.Process(serve.proc.pid).children()
    serve.proc.kill()
    serve.proc.wait()
    psutil.wait_procs(children, timeout=20)
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)


def test_findings_filters_and_cursor(filled_db: str) -> None:
    result = cli("findings", "--db", filled_db, "--format", "json", "--unapproved", "--severity", "critical")
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == ["a1"]
    result = cli("findings", "--db", filled_db, "--format", "json", "--limit", "2")
    assert len(result.stdout.splitlines()) == 2
    cursor = result.stderr.split("--cursor ", 1)[1].strip()
    rest = cli("findings", "--db", filled_db, "--format", "json", "--cursor", cursor)
    assert len(rest.stdout.splitlines()) == 1 and "--cursor" not in rest.stderr
    assert_one_line_error(cli("findings", "--db", filled_db, "--cursor", "junk"), 2)


def test_views_and_snapshot(filled_db: str) -> None:
    result = cli("view", "risk", "--db", filled_db, "--format", "json")
    assert result.returncode == 0, result.stderr
    risk = json.loads(result.stdout)["risk"]
    # host-b is only approved; a host shows by its name, with its id beside it
    assert [(r["who"], r["name"], r["id"]) for r in risk] == [("host", "ws-a", "host-a")]
    assert risk[0]["reasons"] == "1 unapproved local model runtime; 1 unapproved model file"
    result = cli("view", "runtimes", "--db", filled_db)
    assert result.returncode == 0 and result.stdout.splitlines()[0].split()[:2] == ["RUNTIME", "HOSTS"]
    assert cli("snapshot", "--db", filled_db).returncode == 0
    trend = json.loads(cli("view", "trend", "--db", filled_db, "--format", "json").stdout)["trend"]
    assert [(t["scope"], t["score"], t["level"]) for t in trend] == [("fleet", 45.0, "high")]

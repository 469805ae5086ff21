"""Files hold what they should and no more (issue 17, item 2).

The agent's spool and state and the collector's database and key material are created 0600, in
directories created 0700, whatever the umask of whoever started them; at start each daemon narrows
what an older version or an operator left wider, with a warning that names the path. Checked on
the real files of real runs (the processes started under umask 022), and on umbra.private itself.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from collector_proc import CollectorProc, agent_config, enroll_agent, start_agent, stop_child, wait_for
from conftest import SpawnRuntime, cli, port_or_free
from umbra.private import create_private_file, make_private_dir, tighten, write_private

LOG = logging.getLogger("test_private_files")


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(autouse=True)
def umask_022() -> Iterator[None]:
    """The usual umask, for this process and the daemons it starts: files come out 0644 unless
    the code asks for less."""
    old = os.umask(0o022)
    yield
    os.umask(old)


# --- umbra.private --------------------------------------------------------------------------------


def test_private_file_and_missing_directories_are_created_narrow(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    path = create_private_file(tmp_path / "a" / "b" / "store.db")
    assert _mode(path) == 0o600
    assert _mode(tmp_path / "a") == 0o700 and _mode(tmp_path / "a" / "b") == 0o700
    assert _mode(tmp_path) == 0o755  # an existing parent is not ours to change
    path.write_bytes(b"kept")
    create_private_file(path)  # an existing file is left alone, content and all
    assert path.read_bytes() == b"kept"


def test_existing_directory_is_left_as_it_is(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    make_private_dir(shared)
    assert _mode(shared) == 0o755  # tighten() reports it; creating never changes someone's directory


def test_write_private_replaces_atomically_at_0600_even_over_a_wide_leftover(tmp_path: Path) -> None:
    target = tmp_path / "identity.json"
    leftover = tmp_path / "identity.json.tmp"
    leftover.write_text("half-written by a crash")
    os.chmod(leftover, 0o644)
    write_private(target, b'{"key": 1}')
    assert target.read_bytes() == b'{"key": 1}' and _mode(target) == 0o600
    assert not leftover.exists()


def test_tighten_narrows_what_is_ours_and_names_every_path(tmp_path: Path) -> None:
    wide_file = tmp_path / "spool.db"
    wide_file.write_bytes(b"")
    os.chmod(wide_file, 0o644)
    wide_dir = tmp_path / "state"
    wide_dir.mkdir(mode=0o755)
    os.chmod(wide_dir, 0o755)
    fine = tmp_path / "fine.key"
    fine.write_bytes(b"")
    os.chmod(fine, 0o600)
    link = tmp_path / "link"
    link.symlink_to(wide_file)
    warnings = tighten([wide_file, wide_dir, fine, link, tmp_path / "absent"], LOG)
    assert warnings == [
        f"{wide_file} is mode 0644, open to other users: narrowed to 0600",
        f"{wide_dir} is mode 0755, open to other users: narrowed to 0700",
    ]
    assert _mode(wide_file) == 0o600 and _mode(wide_dir) == 0o700 and _mode(fine) == 0o600


def test_tighten_only_reports_a_sticky_directory_or_someone_elses_file(tmp_path: Path) -> None:
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    warnings = tighten([sticky], LOG)
    assert warnings == [f"{sticky} is mode 1777, open to other users, and not ours to narrow: make it 0700"]
    assert _mode(sticky) == 0o1777
    if os.geteuid() != 0:
        return  # giving a file away needs root
    theirs = tmp_path / "theirs.db"
    theirs.write_bytes(b"")
    os.chmod(theirs, 0o644)
    os.chown(theirs, 65534, 65534)
    assert tighten([theirs], LOG) == [
        f"{theirs} is mode 0644, open to other users, and not ours to narrow: make it 0600"
    ]
    assert _mode(theirs) == 0o644


# --- real runs -------------------------------------------------------------------------------------


def _agent_config(tmp_path: Path, models: Path) -> Path:
    """The file sensor on (its hash cache is one of the agent's files), on one small directory."""
    files = f'[sensors.files]\ndefault_roots = false\nscan_homes = false\npaths = ["{models}"]\n'
    return agent_config(tmp_path / "agent.toml", tmp_path / "agent-state", files)


def test_a_real_collector_and_agent_create_every_file_private(
    tmp_path: Path, spawn_runtime: SpawnRuntime
) -> None:
    spawn_runtime(["ollama", "serve"], listen=[f"127.0.0.1:{port_or_free(11434)}"])
    models = tmp_path / "models"
    models.mkdir()
    work = tmp_path / "collector"
    collector = CollectorProc(work)  # --pki-dir work/pki: created by serve, with the CA and server keys
    collector.start()
    agent = None
    try:
        config = _agent_config(tmp_path, models)
        enroll_agent(collector, config)
        policy = tmp_path / "policy.toml"
        policy.write_text('approved_runtimes = ["vllm"]\n')
        collector.run_cli("policy", "set", str(policy), "--db", collector.url)
        agent = start_agent(config)
        state = tmp_path / "agent-state"
        wait_for("the finding at the collector", lambda: collector.cli_json("findings"))
        wait_for("the pushed policy on the agent", lambda: (state / "policy.json").exists())
        # While both run: every SQLite file exists, its -wal and -shm too.
        agent_files = ["spool.db", "spool.db-wal", "spool.db-shm", "files.db", "identity.json", "policy.json"]
        collector_files = ["collector.db", "collector.db-wal", "collector.db-shm", "collector.db.writer-lock"]
        pki_files = ["ca.key", "ca.crt", "server.key", "server.crt"]
        modes = {
            **{f"agent-state/{name}": _mode(state / name) for name in agent_files},
            **{f"collector/{name}": _mode(work / name) for name in collector_files},
            **{f"collector/pki/{name}": _mode(work / "pki" / name) for name in pki_files},
        }
        assert modes == dict.fromkeys(modes, 0o600)
        assert _mode(state) == 0o700 and _mode(work / "pki") == 0o700
    finally:
        if agent is not None:
            agent_log = stop_child(agent)
            assert "open to other users" not in agent_log  # nothing it made was wider
        collector.stop()
    assert "open to other users" not in collector.log_text()


def test_daemons_narrow_wider_files_they_find_and_name_them(tmp_path: Path) -> None:
    # An agent state left by an older version: the directory 0755, the spool and host id 0644.
    state = tmp_path / "agent-state"
    state.mkdir()
    os.chmod(state, 0o755)
    spool = state / "spool.db"
    sqlite3.connect(spool).close()
    os.chmod(spool, 0o644)
    (state / "host_id").write_text("h-0123456789abcdef0123\n")
    os.chmod(state / "host_id", 0o644)
    config = _agent_config(tmp_path, tmp_path)
    config.write_text(config.read_text().replace("[sensors.files]", "[sensors.files]\nenabled = false"))
    agent = start_agent(config)  # not enrolled: it retries a collector that is not there
    time.sleep(2)
    log = stop_child(agent)
    assert f"{state} is mode 0755, open to other users: narrowed to 0700" in log
    assert f"{spool} is mode 0644, open to other users: narrowed to 0600" in log
    assert f"{state / 'host_id'} is mode 0644, open to other users: narrowed to 0600" in log
    assert _mode(state) == 0o700 and _mode(spool) == 0o600 and _mode(state / "host_id") == 0o600

    # A collector's database and CA left wide (a restore from a backup, an operator's cp).
    work = tmp_path / "collector"
    first = CollectorProc(work)
    first.start()
    first.stop()
    db, ca_key, pki = work / "collector.db", work / "pki" / "ca.key", work / "pki"
    for path, mode in ((db, 0o644), (ca_key, 0o640), (pki, 0o755)):
        os.chmod(path, mode)
    serve = subprocess.Popen(
        [
            *(cli("umbra-collector"), "serve", "--db", f"sqlite:///{db}", "--pki-dir", str(pki)),
            *("--grpc", "127.0.0.1:0", "--enroll", "127.0.0.1:0", "--log-level", "warning"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert serve.stderr is not None
    lines = []
    for line in serve.stderr:
        lines.append(line)
        if re.search(r"listening grpc=", line):
            break
    log = "".join(lines)
    stop_child(serve)
    assert f"{db} is mode 0644, open to other users: narrowed to 0600" in log
    assert f"{ca_key} is mode 0640, open to other users: narrowed to 0600" in log
    assert f"{pki} is mode 0755, open to other users: narrowed to 0700" in log
    assert (_mode(db), _mode(ca_key), _mode(pki)) == (0o600, 0o600, 0o700)

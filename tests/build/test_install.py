"""`umbra-agent install` and `uninstall` with the one-file binary, into a folder (--root), and the
systemd unit they lay down: every path it names exists, `systemd-analyze verify` is clean, and
the four capabilities it grants are enough for the sensors without root."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from binary_fixture import bare, binary
from collector_proc import CollectorProc, Drain, wait_for
from conftest import REPO, SpawnRuntime, cli, port_or_free

from agent.config import load_config
from agent.identity.credentials import load_identity

__all__ = ["binary"]  # the session fixture, used by name

PACKAGED_UNIT = REPO / "agent" / "service" / "umbra-agent.service"


def _unit(path: Path) -> dict[str, list[str]]:
    """key -> values, over all sections (the unit's keys do not repeat across sections)."""
    keys: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            keys.setdefault(key.strip(), []).append(value.strip())
    return keys


def _exec_start(unit: dict[str, list[str]]) -> tuple[str, str]:
    """(the binary, the --config file) of ExecStart."""
    match = re.fullmatch(r"(/\S+) run --config (/\S+)", unit["ExecStart"][0])
    assert match, unit["ExecStart"]
    return match.group(1), match.group(2)


def _install(binary: Path, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return bare(binary, "install", "--root", str(root), *args, cwd=root.parent)


def test_install_puts_every_file_where_the_unit_expects_it(binary: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = _install(binary, root, "--collector", "collector.example:50051")
    assert result.returncode == 0, result.stderr
    installed_unit = root / "etc/systemd/system/umbra-agent.service"
    assert installed_unit.read_text() == PACKAGED_UNIT.read_text()
    unit = _unit(installed_unit)
    exe, config_path = _exec_start(unit)
    # the running one-file binary copied itself, executable
    placed = root / exe.lstrip("/")
    assert placed.read_bytes() == binary.read_bytes() and os.access(placed, os.X_OK)
    config = load_config(root / config_path.lstrip("/"))
    assert config.collector.address == "collector.example:50051"
    assert config.agent.log_format == "json"
    (writable,) = unit["ReadWritePaths"]
    assert config.state_dir == Path(writable)  # the one folder the unit lets the agent write
    state = root / writable.lstrip("/")
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


def test_the_unit_verifies_clean(binary: Path, tmp_path: Path) -> None:
    """`systemd-analyze verify` checks the keys and that ExecStart's program exists: the unit is
    verified as installed, with only ExecStart pointing into the install folder (no systemd runs
    here to verify a whole --root image against)."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: `make setup` installs Debian's systemd"
    root = tmp_path / "root"
    assert _install(binary, root).returncode == 0
    installed = (root / "etc/systemd/system/umbra-agent.service").read_text()
    exe, _ = _exec_start(_unit(root / "etc/systemd/system/umbra-agent.service"))
    check = tmp_path / "verify" / "umbra-agent.service"
    check.parent.mkdir()
    check.write_text(installed.replace(f"ExecStart={exe}", f"ExecStart={root}{exe}", 1))
    result = subprocess.run([analyze, "verify", str(check)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout + result.stderr
    )


def test_the_unit_keeps_privileges_to_its_four_capabilities() -> None:
    unit = _unit(PACKAGED_UNIT)
    caps = {"CAP_NET_RAW", "CAP_NET_ADMIN", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"}
    assert set(unit["AmbientCapabilities"][0].split()) == caps
    assert set(unit["CapabilityBoundingSet"][0].split()) == caps
    assert unit["DynamicUser"] == ["yes"] and "User" not in unit
    for key, value in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "read-only"),
        ("PrivateTmp", "yes"),
        ("Restart", "on-failure"),
    ]:
        assert unit[key] == [value], key


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_the_units_capabilities_are_enough_without_root(binary: Path, request: pytest.FixtureRequest) -> None:
    """The unit's capabilities, as systemd grants them (ambient, bounded), to an unprivileged user:
    capture and other users' processes work; without them, they do not."""
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is missing"
    caps = _unit(PACKAGED_UNIT)["AmbientCapabilities"][0].split()
    spec = ",".join("+" + c.removeprefix("CAP_").lower() for c in caps)
    world = Path(tempfile.mkdtemp(prefix="umbra-nobody-"))  # outside root's 0700 pytest folders
    request.addfinalizer(lambda: shutil.rmtree(world, ignore_errors=True))
    world.chmod(0o777)
    agent = world / "umbra-agent"
    shutil.copy2(binary, agent)
    config = world / "agent.toml"
    config.write_text(f'[agent]\nhost_id = "nobody-host"\nstate_dir = "{world / "state"}"\n')
    config.chmod(0o644)

    def states(*privileges: str) -> dict[str, tuple[str, str]]:
        argv = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *privileges]
        argv += ["env", "-i", str(agent), "status", "--format", "json", "--config", str(config)]
        result = subprocess.run(argv, cwd=world, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return {s["name"]: (s["state"], s["reason"]) for s in json.loads(result.stdout)["sensors"]}

    granted = states(f"--inh-caps={spec}", f"--ambient-caps={spec}", f"--bounding-set=-all,{spec}")
    assert granted["network"][0] == "active" and granted["process"][0] == "active", granted
    unprivileged = states("--inh-caps=-all", "--bounding-set=-all")
    assert unprivileged["process"][0] == "degraded", unprivileged
    # no capture: the socket-table fallback stands in, and says why
    assert unprivileged["network"][0] != "active" and "CAP_NET_RAW" in unprivileged["network"][1]


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProc]:
    c = CollectorProc(tmp_path)
    c.start()
    yield c
    c.stop()


def test_installed_binary_enrolls_and_streams_over_mutual_tls(
    binary: Path, tmp_path: Path, collector: CollectorProc, spawn_runtime: SpawnRuntime
) -> None:
    """install --token enrolls; the installed binary's daemon then streams a stand-in runtime's
    finding to the collector over mutual TLS (gRPC, TLS and the identity, all from the binary)."""
    root = tmp_path / "root"
    result = _install(binary, root, "--collector", collector.enroll, "--token", collector.token())
    assert result.returncode == 0, result.stderr
    state = root / "var/lib/umbra"
    identity = load_identity(state)
    assert identity is not None and identity.host_id
    assert f"enrolled as {identity.host_id}" in result.stdout
    installed = load_config(root / "etc/umbra/agent.toml")
    assert installed.collector.address == identity.collector  # the stream address, not the enrollment one
    assert installed.collector.address != collector.enroll

    proc = spawn_runtime(["ollama", "serve"], listen=[f"127.0.0.1:{port_or_free(11434)}"])
    # the installed config, with the state under the test's root and a quick pace
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[agent]\nstate_dir = "{state}"\nlog_format = "json"\n'
        f'[collector]\naddress = "{installed.collector.address}"\nheartbeat_interval = 1.0\n'
        "[sensors.process]\ninterval = 0.5\n[sensors.files]\nenabled = false\n"
    )
    agent = root / "usr/local/bin/umbra-agent"
    daemon = subprocess.Popen(
        ["env", "-i", str(agent), "run", "--config", str(config)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = Drain(daemon.stderr)
    try:
        found = wait_for(
            "the stand-in's finding at the collector",
            lambda: [
                f
                for f in collector.cli_json("findings")
                if f["kind"] == "LOCAL_MODEL_RUNTIME" and (f["process"] or {}).get("pid") == proc.pid
            ],
        )
        assert found[0]["host_id"] == identity.host_id  # the certificate's, from the binary's TLS
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=30)
    assert code == 0, log.text()
    assert all(json.loads(line)["pid"] for line in log.text().splitlines())  # JSON lines throughout


def test_uninstall_keeps_config_and_state_unless_purged(binary: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert _install(binary, root, "--collector", "127.0.0.1:50051").returncode == 0
    (root / "var/lib/umbra/spool.db").write_bytes(b"unsent findings")
    kept = bare(binary, "uninstall", "--root", str(root), cwd=tmp_path)
    assert kept.returncode == 0, kept.stderr
    assert not (root / "usr/local/bin/umbra-agent").exists()
    assert not (root / "etc/systemd/system/umbra-agent.service").exists()
    assert (root / "etc/umbra/agent.toml").exists() and (root / "var/lib/umbra/spool.db").exists()
    # installed again over the kept config: the config stays as it was
    again = _install(binary, root)
    assert again.returncode == 0 and "kept as it was" in again.stdout
    purged = bare(binary, "uninstall", "--root", str(root), "--purge", cwd=tmp_path)
    assert purged.returncode == 0, purged.stderr
    assert not (root / "etc/umbra").exists() and not (root / "var/lib/umbra").exists()
    assert not (root / "usr/local/bin/umbra-agent").exists()


def test_install_refuses_clearly_and_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    agent = cli("umbra-agent")  # from Python, not frozen: there is no binary to copy by default
    cases = [
        ([], "give --binary PATH"),
        (["--binary", str(tmp_path / "missing")], "is not an executable file"),
        (["--binary", agent, "--token", "abc"], "--token needs --collector"),
        (["--binary", agent, "--collector", "no-port"], "is not HOST:PORT"),
        (
            ["--binary", agent, "--collector", 'h:1"\nbatch_size = 5\n#'],
            "is not HOST:PORT",
        ),  # no TOML injection
    ]
    for args, message in cases:
        result = subprocess.run(
            [agent, "install", "--root", str(root), *args], capture_output=True, text=True, timeout=60
        )
        assert result.returncode in (1, 2) and message in result.stderr, (args, result.stderr)
        assert len(result.stderr.splitlines()) == 1 and not root.exists()
    # a root that cannot hold folders (as a read-only or foreign file system would refuse): one line
    root.write_text("a file, not a folder")
    result = subprocess.run(
        [agent, "install", "--root", str(root), "--binary", agent], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1 and "Not a directory" in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1

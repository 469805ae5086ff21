"""Consistent configuration (issue 17, item 5), through the real `umbra-collector` command: a config
file and UMBRA_COLLECTOR_* variables for its flags (flag > env > file > default), a bare path for
--db, durations that must carry a unit, --version."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from conftest import cli

from collector.cli import build_parser
from collector.cli.settings import config_path


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("UMBRA_COLLECTOR_")}
    return subprocess.run(
        [cli("umbra-collector"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
        cwd=cwd,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("umbra-collector: error: "), result.stderr
    return lines[0]


def hosts_db(result: subprocess.CompletedProcess[str]) -> str:
    """Which database a read command used: the one it names when missing."""
    found = re.search(r"no database at (\S+)", result.stderr)
    assert found, result.stderr
    return found.group(1)


def test_version_is_the_package_version() -> None:
    out = run("--version")
    assert out.returncode == 0 and re.fullmatch(r"umbra-collector \d+\.\d+\.\d+\S*\n", out.stdout)
    agent = subprocess.run([cli("umbra-agent"), "--version"], capture_output=True, text=True, timeout=60)
    assert agent.returncode == 0 and agent.stdout.startswith("umbra-agent ")


def test_a_bare_path_is_an_sqlite_database(tmp_path: Path) -> None:
    db = tmp_path / "bare.db"
    assert run("snapshot", "--db", str(db)).returncode == 0
    assert db.is_file()
    assert json.loads(run("hosts", "--db", str(db), "--format", "json").stdout) == {"hosts": []}
    assert run("hosts", "--db", "rel.db", cwd=tmp_path).returncode == 1  # relative: no such file yet
    assert run("snapshot", "--db", "rel.db", cwd=tmp_path).returncode == 0
    assert (tmp_path / "rel.db").is_file()


def test_flag_beats_environment_beats_file_beats_default(tmp_path: Path) -> None:
    config = tmp_path / "collector.toml"
    config.write_text(f'db = "{tmp_path / "from-file.db"}"\n')
    by_file = run("hosts", "--config", str(config))
    assert hosts_db(by_file) == str(tmp_path / "from-file.db")
    by_env = run("hosts", "--config", str(config), env={"UMBRA_COLLECTOR_DB": str(tmp_path / "env.db")})
    assert hosts_db(by_env) == str(tmp_path / "env.db")
    by_flag = run(
        "hosts", "--config", str(config), "--db", str(tmp_path / "flag.db"),
        env={"UMBRA_COLLECTOR_DB": str(tmp_path / "env.db")},
    )  # fmt: skip
    assert hosts_db(by_flag) == str(tmp_path / "flag.db")
    by_default = run("hosts", cwd=tmp_path)
    assert hosts_db(by_default) == "umbra-collector.db"
    # UMBRA_COLLECTOR_CONFIG names the file when --config does not.
    assert hosts_db(run("hosts", env={"UMBRA_COLLECTOR_CONFIG": str(config)})) == str(
        tmp_path / "from-file.db"
    )


def test_default_config_file_is_used_only_when_it_exists(tmp_path: Path) -> None:
    default = tmp_path / "etc-collector.toml"
    assert config_path([], {}, default) is None
    default.write_text('db = "x.db"\n')
    assert config_path([], {}, default) == default
    assert config_path(["hosts", "--config", "other.toml"], {}, default) == Path("other.toml")
    assert config_path(["hosts", "--config=o2.toml"], {}, default) == Path("o2.toml")
    assert config_path([], {"UMBRA_COLLECTOR_CONFIG": "env.toml"}, default) == Path("env.toml")


def test_serve_takes_its_flags_from_the_file(tmp_path: Path) -> None:
    config = tmp_path / "collector.toml"
    config.write_text(
        f'db = "{tmp_path / "served.db"}"\ngrpc = "127.0.0.1:0"\nenroll = "127.0.0.1:0"\n'
        f'pki-dir = "{tmp_path / "pki"}"\nsilent-after = "10m"\ngrace = "500ms"\nlog-level = "warning"\n'
    )
    proc = subprocess.Popen(
        [cli("umbra-collector"), "serve", "--config", str(config)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "listening grpc=127.0.0.1:" in line and f"store=sqlite:///{tmp_path / 'served.db'}" in line, (
            line
        )
        assert (tmp_path / "pki").is_dir()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert proc.returncode == 0


def test_bad_settings_are_one_line_naming_their_source(tmp_path: Path) -> None:
    config = tmp_path / "collector.toml"
    config.write_text('dbb = "x.db"\n')
    assert "config " + str(config) + ": unknown key 'dbb'" in one_line_error(
        run("hosts", "--config", str(config))
    )
    config.write_text("silent-after = 300\n")
    line = one_line_error(run("serve", "--config", str(config)))
    assert "silent-after" in line and "needs a unit: 500ms, 90s, 15m, 24h, 30d" in line
    config.write_text('log-level = "chatty"\n')
    assert "'chatty' is not one of" in one_line_error(run("serve", "--config", str(config)))
    line = one_line_error(run("hosts", env={"UMBRA_COLLECTOR_SILENT_AFTER": "30"}))
    assert line.startswith("umbra-collector: error: UMBRA_COLLECTOR_SILENT_AFTER: duration '30' needs a unit")
    assert "unknown environment variable UMBRA_COLLECTOR_DBB" in one_line_error(
        run("hosts", env={"UMBRA_COLLECTOR_DBB": "x"})
    )
    assert "missing.toml" in one_line_error(run("hosts", "--config", str(tmp_path / "missing.toml")))


def test_durations_need_a_unit_on_every_flag(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    for args in (
        ("token", "create", "--db", db, "--ttl", "30"),
        ("findings", "--db", db, "--since", "7"),
        ("serve", "--db", db, "--grace", "1"),
        ("serve", "--db", db, "--monitor-interval", "5"),
        ("view", "risk", "--db", db, "--since", "30"),
        ("report", "--db", db, "--format", "json", "--output", str(tmp_path / "r.json"), "--since", "30"),
    ):
        line = one_line_error(run(*args))
        assert "needs a unit: 500ms, 90s, 15m, 24h, 30d" in line, (args, line)
    assert run("token", "create", "--db", db, "--ttl", "90m").returncode == 0
    # the one exception, kept by the CLI contract (DESIGN.md): `scan --duration SECONDS`
    agent = subprocess.run(
        [cli("umbra-agent"), "scan", "--duration", "5x"], capture_output=True, text=True, timeout=60
    )
    assert agent.returncode == 2 and "a number and a unit: 500ms, 90s, 15m, 24h, 30d" in agent.stderr


def test_every_settable_key_is_an_option_of_serve() -> None:
    """The help of --config names the variables; the file's keys are serve's own option names."""
    from collector.cli.settings import settable

    keys = settable(build_parser())
    assert {"db", "grpc", "http", "enroll", "silent-after", "tls-name", "retention"} <= set(keys)
    assert "config" not in keys and "format" not in keys

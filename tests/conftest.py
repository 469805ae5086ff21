"""Shared test helpers: real processes that look like model runtimes, and the CLIs."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pg_server import TEMPLATE as PG_TEMPLATE
from pg_server import PostgresServer, PostgresUnavailable

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

SpawnRuntime = Callable[..., subprocess.Popen[str]]


def port_or_free(preferred: int) -> int:
    """The runtime's default port when it is free here, else any free port.

    Tests use the real default ports, but must not fail because something (a real Ollama,
    a parallel run) already holds one.
    """
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])


def cli(name: str) -> str:
    """Path of an installed console script (umbra-agent, umbra-collector)."""
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run `make setup`")
    return found


def _start_ready(
    procs: list[subprocess.Popen[str]], argv: list[str], executable: str, cwd: Path, env: dict[str, str]
) -> subprocess.Popen[str]:
    """Start a stand-in and wait for its "ready" line (its sockets listen, its files are open)."""
    proc = subprocess.Popen(
        argv,
        executable=executable,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    procs.append(proc)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        pytest.fail(f"{argv} did not start: {proc.stderr.read() if proc.stderr else ''}")
    return proc


def _kill_all(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.fixture
def spawn_runtime(tmp_path: Path) -> Iterator[SpawnRuntime]:
    """Start a real process with a runtime's real command line and listening sockets.

    - spawn_runtime(["ollama", "serve"], listen=["127.0.0.1:11434"]): the interpreter runs
      through a symlink called `ollama` found on PATH (so the kernel's process name is
      `ollama` and argv is exactly `ollama serve`), the program being a file named `serve`.
    - spawn_runtime(["python3", "-m", "llama_cpp.server", "--port", "8000"]): the
      interpreter runs a module of that name, laid out in the process's working directory.
    - cwd="ComfyUI": run inside a folder of that name (for `python main.py` runtimes).
    - maps=[...] files it mmaps (weights, libraries); writes=[...] files it holds open for
      writing (checkpoints); env={...} extra environment (API-key variables).
    """
    procs: list[subprocess.Popen[str]] = []

    def spawn(
        argv: list[str],
        listen: list[str] | None = None,
        cwd: str = "",
        maps: list[Path] | None = None,
        writes: list[Path] | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[str]:
        home = tmp_path / f"rt-{len(procs)}" / cwd  # `cwd`: a folder name the runtime runs in
        home.mkdir(parents=True)
        env = {
            **os.environ,
            **(env or {}),
            "UMBRA_FAKE_LISTEN": ",".join(listen or []),
            "UMBRA_FAKE_MAP": ",".join(map(str, maps or [])),
            "UMBRA_FAKE_WRITE": ",".join(map(str, writes or [])),
            "PATH": f"{home}:{os.environ['PATH']}",
        }
        program = (FIXTURES / "fake_runtime.py").read_text()
        if len(argv) > 2 and argv[1] == "-m":
            module = home.joinpath(*argv[2].split("."))
            module.parent.mkdir(parents=True, exist_ok=True)
            module.with_suffix(".py").write_text(program)
            executable = sys.executable
        else:
            assert len(argv) > 1 and not argv[1].startswith("-"), "argv[1] names the program file"
            (home / argv[0]).symlink_to(sys.executable)
            (home / argv[1]).write_text(program)
            executable = str(home / argv[0])
        return _start_ready(procs, argv, executable, home, env)

    yield spawn
    _kill_all(procs)


@pytest.fixture(scope="session")
def idle_server_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/fixtures/idle_server.c, compiled once per run (gcc is part of the set-up)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.fail("a C compiler (gcc) is needed to build the stand-in runtime binary")
    out = tmp_path_factory.mktemp("bin") / "idle_server"
    subprocess.run([compiler, "-O2", "-o", str(out), str(FIXTURES / "idle_server.c")], check=True)
    return out


SpawnBinary = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def spawn_binary(tmp_path: Path, idle_server_binary: Path) -> Iterator[SpawnBinary]:
    """Start a native process with any name and argv: spawn_binary(["llama-server", "-m", "x.gguf"]).

    The stand-in binary is copied to a file named like argv[0]'s basename, so the kernel's
    process name, the executable and the command line are exactly the runtime's. Every spawn of
    one name in a test runs the same copy, as every instance of an installed program does.
    """
    procs: list[subprocess.Popen[str]] = []

    def spawn(argv: list[str], listen: list[str] | None = None) -> subprocess.Popen[str]:
        home = tmp_path / f"bin-{len(procs)}"
        home.mkdir()
        binary = tmp_path / "installed" / Path(argv[0]).name
        if not binary.exists():
            binary.parent.mkdir(exist_ok=True)
            shutil.copy(idle_server_binary, binary)
        env = {**os.environ, "UMBRA_FAKE_LISTEN": ",".join(listen or [])}
        return _start_ready(procs, argv, str(binary), home, env)

    yield spawn
    _kill_all(procs)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the whole run (tests/pg_server.py), with the template database
    every test database is copied from; fails, never skips, when PostgreSQL is not installed."""
    try:
        server = PostgresServer().start()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc))
    try:
        server.admin(f'CREATE DATABASE "{PG_TEMPLATE}"')
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database of its own for one test."""
    url = pg_server.create_database(PG_TEMPLATE)
    yield url
    pg_server.drop_database(url)

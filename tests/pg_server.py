"""A real PostgreSQL server for the tests and benches, started from Debian's packages.

`initdb` into a fresh temporary directory, `pg_ctl start` on 127.0.0.1 and a free port, trust
authentication on loopback only, stopped and removed at the end. initdb refuses to run as root, so
as root the cluster belongs to the `postgres` user the package creates. Nothing is started by hand,
and missing binaries are a clear failure (the tests must run in CI, not be skipped).
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

#: Debian's `postgresql` package (the Makefile's setup installs it).
PG_BIN = Path(os.environ.get("UMBRA_PG_BIN", "/usr/lib/postgresql/15/bin"))
SUPERUSER = "umbra"
#: The database every per-test database is copied from (CREATE DATABASE ... TEMPLATE).
TEMPLATE = "umbra_template"


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL binaries are missing or the server did not start."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """One throwaway cluster. `durable=False` (tests) turns fsync off; benches keep the defaults."""

    def __init__(
        self, *, durable: bool = False, max_connections: int = 200, root: Path | None = None
    ) -> None:
        """`root`: a directory to keep the cluster in (created when missing, reused when it holds
        one), for a bench that re-times views on data it filled once; default a fresh temporary one."""
        for tool in ("initdb", "pg_ctl"):
            if not (PG_BIN / tool).exists():
                raise PostgresUnavailable(
                    f"{PG_BIN / tool} not found: install Debian's postgresql package (make setup does, "
                    "as root) or set UMBRA_PG_BIN to the directory of initdb and pg_ctl"
                )
        self.durable = durable
        self.max_connections = max_connections
        if root is None:
            root = Path(tempfile.mkdtemp(prefix="umbra-pg-"))
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self._names = itertools.count()
        # initdb refuses root: the cluster then belongs to the package's `postgres` user.
        self._user: str | None = None
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                msg = "running as root, and no `postgres` user to own the cluster"
                raise PostgresUnavailable(msg) from None
            self._user = "postgres"
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def _run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            list(argv), user=self._user, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise PostgresUnavailable(f"{' '.join(argv)} failed: {result.stderr or result.stdout}\n{log}")
        return result

    def start(self) -> PostgresServer:
        if not self.data.exists():
            self._run(
                str(PG_BIN / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                "-E", "UTF8", "--locale=C", "--no-sync",
            )  # fmt: skip
        if not self.port:  # a restart keeps its port, so clients reconnect to the same address
            self.port = _free_port()
        options = [
            "-c listen_addresses=127.0.0.1",
            f"-c port={self.port}",
            f"-c unix_socket_directories={self.root}",
            f"-c max_connections={self.max_connections}",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
            "-o", " ".join(options), "start",
        )  # fmt: skip
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (mode "immediate": as a crash would); the cluster stays for `start`."""
        if (self.data / "postmaster.pid").exists():
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE) as the superuser."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.encode())

    def create_database(self, template: str | None = None) -> str:
        """A new empty database (a copy of `template` when given); returns its URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        self.admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def terminate_connections(self, url: str) -> int:
        """Kill every backend serving the database of `url` (what a failover or restart does)."""
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            ).fetchone()
        return int(row[0]) if row else 0


def wait_until_accepting(server: PostgresServer, timeout: float = 30.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            psycopg.connect(server.url(), connect_timeout=2).close()
            return
        except psycopg.OperationalError as exc:
            last = exc
            time.sleep(0.2)
    raise PostgresUnavailable(f"server not accepting connections: {last}")

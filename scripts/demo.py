"""`make demo`: a collector on loopback, the agent on this host, the fleet view, and the web console.

Starts `umbra-collector serve` (mutual TLS, its own CA) with an SQLite file in a fresh folder,
mints an enrollment token, enrolls the agent with it (`umbra-agent enroll`), runs
`umbra-agent run` against this machine for a short while over mutual TLS, then prints what
the collector now knows. So that a
clean machine has something to show, it also starts a clearly labelled stand-in runtime: a
small program named `ollama` running `ollama serve` on 127.0.0.1:11434 (skipped when that
port is taken, e.g. by a real Ollama), writes small model weights (a GGUF file) into a folder the
agent watches, and looks up an AI service's name (api.openai.com) so the network sensor, where it
can capture, sees a contact. Pass --no-stand-in to see only what is really here.

The console then stays up at the printed address with a generated admin password until Ctrl-C;
--no-wait stops right after printing (a smoke test).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STAND_IN = REPO / "tests" / "fixtures" / "fake_runtime.py"


def start_collector(db: Path, http: str) -> tuple[subprocess.Popen[str], str, str, str]:
    """The collector on loopback; returns it, its stream, enrollment and console addresses."""
    proc = subprocess.Popen(
        [
            str(BIN / "umbra-collector"),
            "serve",
            "--db",
            f"sqlite:///{db}",
            "--grpc",
            "127.0.0.1:0",
            "--enroll",
            "127.0.0.1:0",
            "--http",
            http,
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if found := re.search(r"listening grpc=(\S+) http=(\S+) enroll=(\S+)", line):
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep its pipe drained
            return proc, found.group(1), found.group(3), found.group(2)
    raise SystemExit(f"demo: the collector did not start (exit {proc.wait()})")


def enroll_agent(db: Path, enroll_address: str, config: Path) -> None:
    """`umbra-collector token create`, then `umbra-agent enroll` with that token."""
    token = subprocess.run(
        [str(BIN / "umbra-collector"), "token", "create", "--db", f"sqlite:///{db}", "--ttl", "10m"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print("demo: minted an enrollment token (umbra-collector token create: single use, 10 minutes)")
    result = subprocess.run(
        [
            str(BIN / "umbra-agent"),
            "enroll",
            "--collector",
            enroll_address,
            "--token",
            token,
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"demo: enrollment failed: {result.stderr.strip()}")
    print(f"demo: {result.stdout.strip()}")


def add_admin(db: Path) -> str:
    """`umbra-collector user add admin --role admin` with a generated password; returns it."""
    password = secrets.token_urlsafe(12)
    subprocess.run(
        [str(BIN / "umbra-collector"), "user", "add", "admin", "--role", "admin", "--password-stdin",
         "--db", f"sqlite:///{db}"],
        input=password + "\n", capture_output=True, text=True, check=True,
    )  # fmt: skip
    return password


def write_weights(folder: Path) -> None:
    """Small but real model weights (a 2-layer llama GGUF) where the agent's file sensor looks."""
    sys.path.insert(0, str(REPO / "tests" / "fixtures"))
    from tiny_gguf import write_tiny_llama

    folder.mkdir(parents=True, exist_ok=True)
    write_tiny_llama(folder / "tiny-llama-q8.gguf")
    print(f"demo: wrote model weights {folder / 'tiny-llama-q8.gguf'}")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def start_stand_in(home: Path) -> subprocess.Popen[str] | None:
    if not port_free(11434):
        print("demo: 127.0.0.1:11434 is taken (a real Ollama?), so no stand-in is started")
        return None
    home.mkdir()
    (home / "ollama").symlink_to(sys.executable)
    (home / "serve").write_text(STAND_IN.read_text())
    env = {**os.environ, "UMBRA_FAKE_LISTEN": "127.0.0.1:11434"}
    proc = subprocess.Popen(
        ["ollama", "serve"],
        executable=str(home / "ollama"),
        cwd=home,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    print(f"demo: started a stand-in runtime, `ollama serve` on 127.0.0.1:11434 (pid {proc.pid})")
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="how long the agent watches (default 8)")
    parser.add_argument("--no-stand-in", action="store_true", help="do not start the stand-in runtime")
    parser.add_argument(
        "--http",
        default="127.0.0.1:8080",
        help="the console's address (default 127.0.0.1:8080, else any free)",
    )
    parser.add_argument("--no-wait", action="store_true", help="stop after printing instead of serving on")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="umbra-demo-"))
    db = work / "collector.db"
    http = args.http if port_free(int(args.http.rsplit(":", 1)[1])) else "127.0.0.1:0"
    collector, address, enroll_address, console = start_collector(db, http)
    password = add_admin(db)
    models = work / "models"
    print(f"demo: collector on {address} (mutual TLS; enrollment on {enroll_address}), store sqlite:///{db}")
    config = work / "agent.toml"
    config.write_text(f"""
[agent]
state_dir = "{work / "agent-state"}"
log_level = "warning"
[collector]
heartbeat_interval = 2.0
backoff_initial = 0.5
[sensors.process]
interval = 1.0
[sensors.files]
watched_paths = ["{models}"]
""")
    try:
        enroll_agent(db, enroll_address, config)
    except BaseException:
        collector.terminate()
        raise
    stand_in = None if args.no_stand_in else start_stand_in(work / "stand-in")
    if not args.no_stand_in:
        write_weights(models)
    agent = subprocess.Popen([str(BIN / "umbra-agent"), "run", "--config", str(config)])
    print(f"demo: agent watching this host for {args.seconds:.0f} s ...\n")
    try:
        time.sleep(2)
        if not args.no_stand_in:  # a DNS lookup of an AI service: the network sensor sees the query
            with contextlib.suppress(OSError):
                socket.getaddrinfo("api.openai.com", 443)
        time.sleep(max(0.0, args.seconds - 2))
        spool = work / "agent-state" / "spool.db"
        deadline = time.monotonic() + 10
        while spool.exists() and time.monotonic() < deadline:  # let the last batches be acknowledged
            with sqlite3.connect(spool) as con:
                if con.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0:
                    break
            time.sleep(0.5)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=15)
        if stand_in is not None:
            stand_in.terminate()
            stand_in.wait()
    try:
        subprocess.run([str(BIN / "umbra-collector"), "fleet", "--db", f"sqlite:///{db}"], check=True)
        subprocess.run([str(BIN / "umbra-collector"), "snapshot", "--db", f"sqlite:///{db}"], check=True)
        print(f"\ndemo: the console is at http://{console}/  user: admin  password: {password}")
        if not args.no_wait:
            print("demo: serving until Ctrl-C")
            with contextlib.suppress(KeyboardInterrupt):
                collector.wait()
    finally:
        collector.terminate()
        collector.wait(timeout=15)
    print(
        f"\ndemo: files kept in {work} (collector.db, umbra-pki/, agent-state/spool.db, "
        "agent-state/identity.json, agent.toml)"
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # a SIGTERM (a service manager, `kill`) cleans up as Ctrl-C does


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    main()

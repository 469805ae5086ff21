"""`make demo`: a collector on loopback, the agent on this host, and the fleet view.

Starts `umbra-collector serve` with an SQLite file in a fresh folder, runs `umbra-agent run`
against this machine for a short while, then prints what the collector now knows. So that a
clean machine has something to show, it also starts a clearly labelled stand-in runtime: a
small program named `ollama` running `ollama serve` on 127.0.0.1:11434 (skipped when that
port is taken, e.g. by a real Ollama). Pass --no-stand-in to see only what is really here.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STAND_IN = REPO / "tests" / "fixtures" / "fake_runtime.py"


def start_collector(db: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [str(BIN / "umbra-collector"), "serve", "--db", f"sqlite:///{db}", "--grpc", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if found := re.search(r"listening grpc=(\S+)", line):
            return proc, found.group(1)
    raise SystemExit(f"demo: the collector did not start (exit {proc.wait()})")


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
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="umbra-demo-"))
    db = work / "collector.db"
    collector, address = start_collector(db)
    print(f"demo: collector on {address}, store sqlite:///{db}")
    stand_in = None if args.no_stand_in else start_stand_in(work / "stand-in")
    config = work / "agent.toml"
    config.write_text(f"""
[agent]
state_dir = "{work / "agent-state"}"
log_level = "warning"
[collector]
address = "{address}"
heartbeat_interval = 2.0
backoff_initial = 0.5
[sensors.process]
interval = 1.0
""")
    agent = subprocess.Popen([str(BIN / "umbra-agent"), "run", "--config", str(config)])
    print(f"demo: agent watching this host for {args.seconds:.0f} s ...\n")
    try:
        time.sleep(args.seconds)
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
    finally:
        collector.terminate()
        collector.wait(timeout=15)
    print(f"\ndemo: files kept in {work} (collector.db, agent-state/spool.db, agent.toml)")


if __name__ == "__main__":
    main()

"""The process sensor on the real OS: real processes, real sockets."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FIXTURES, SpawnRuntime, port_or_free

from agent.catalog.runtimes import load_runtime_catalog
from agent.detection.runtime import RuntimeDetector
from agent.observations import ListeningSocket, ProcessObservation
from agent.sensors.base import SensorState
from agent.sensors.process.sensor import ProcessSensor

CATALOG = load_runtime_catalog()


def _poll_for(sensor: ProcessSensor, pid: int, timeout: float = 10.0) -> ProcessObservation | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for obs in sensor.poll():
            if obs.pid == pid and obs.listening:
                return obs
        time.sleep(0.2)
    return None


def test_runtime_process_is_followed_with_its_sockets(spawn_runtime: SpawnRuntime) -> None:
    sensor = ProcessSensor(CATALOG.is_candidate)
    sensor.poll()  # everything already running is now 'seen'
    port = port_or_free(11434)
    proc = spawn_runtime(["ollama", "serve"], listen=[f"127.0.0.1:{port}"])
    obs = _poll_for(sensor, proc.pid)
    assert obs is not None, "a new ollama process was not observed"
    assert obs.name == "ollama"
    assert obs.cmdline == ("ollama", "serve")
    assert obs.ppid == os.getpid()
    assert obs.listening == (ListeningSocket("127.0.0.1", port, "tcp"),)
    assert obs.username  # looked up for followed processes

    proc.kill()
    proc.wait()
    assert all(o.pid != proc.pid for o in sensor.poll()), "an exited process is still reported"


def test_unrelated_process_is_not_followed(spawn_runtime: SpawnRuntime) -> None:
    sensor = ProcessSensor(CATALOG.is_candidate)
    sensor.poll()
    janitor = spawn_runtime(["janitor", "serve"], listen=[f"127.0.0.1:{port_or_free(11434)}"])
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert all(o.pid != janitor.pid for o in sensor.poll())
        time.sleep(0.2)


def test_exposed_listener_yields_an_exposed_server_finding(spawn_runtime: SpawnRuntime) -> None:
    sensor = ProcessSensor(CATALOG.is_candidate)
    sensor.poll()
    port = port_or_free(11434)
    proc = spawn_runtime(["ollama", "serve"], listen=[f"0.0.0.0:{port}"])
    obs = _poll_for(sensor, proc.pid)
    assert obs is not None
    drafts = RuntimeDetector(CATALOG).detect(obs)
    kinds = sorted(d.kind for d in drafts)
    from umbra.v1 import finding_pb2 as fpb

    assert kinds == sorted([fpb.KIND_LOCAL_MODEL_RUNTIME, fpb.KIND_MODEL_SERVER_EXPOSED])
    exposed = next(d for d in drafts if d.kind == fpb.KIND_MODEL_SERVER_EXPOSED)
    assert f"0.0.0.0:{port}" in exposed.summary and exposed.severity == fpb.SEVERITY_HIGH


def test_status_says_why_it_is_degraded() -> None:
    status = ProcessSensor(CATALOG.is_candidate).status()
    if os.geteuid() == 0:
        assert status.state is SensorState.ACTIVE
    else:
        assert status.state is SensorState.DEGRADED and "not root" in status.reason


def test_relative_script_is_judged_in_its_working_directory(spawn_runtime: SpawnRuntime) -> None:
    """`python3 main.py` is ComfyUI only because it runs inside a ComfyUI checkout."""
    sensor = ProcessSensor(CATALOG.is_candidate)
    sensor.poll()
    comfy = spawn_runtime(
        ["python3", "main.py", "--listen"], listen=[f"127.0.0.1:{port_or_free(8188)}"], cwd="ComfyUI"
    )
    other = spawn_runtime(
        ["python3", "main.py", "--listen"], listen=[f"127.0.0.1:{port_or_free(8189)}"], cwd="homework"
    )
    detector = RuntimeDetector(CATALOG)
    obs = _poll_for(sensor, comfy.pid)
    assert obs is not None and obs.cwd.endswith("/ComfyUI")
    (runtime,) = [d for d in detector.detect(obs) if d.subject == "comfyui"]
    assert "cmdline" in runtime.evidence[0].runtime.matched_on
    for seen in sensor.poll():
        if seen.pid == other.pid:
            assert detector.detect(seen) == [], "main.py outside a ComfyUI checkout is not ComfyUI"


def _late_exec(tmp_path: Path, delay: float) -> subprocess.Popen[str]:
    """`sh launch.sh`, a script that sleeps and then `exec`s `ollama serve`: a launcher whose
    own command line says nothing, that becomes a runtime later under the same PID."""
    (tmp_path / "ollama").symlink_to(sys.executable)
    (tmp_path / "serve").write_text((FIXTURES / "fake_runtime.py").read_text())
    (tmp_path / "launch.sh").write_text(f"sleep {delay}\nexec ollama serve\n")
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "UMBRA_FAKE_LISTEN": ""}
    return subprocess.Popen(
        ["sh", "launch.sh"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="the kernel's process events need root")
def test_exec_after_start_is_seen_through_kernel_events(tmp_path: Path) -> None:
    sensor = ProcessSensor(CATALOG.is_candidate, young_age=0.5)
    sensor.start()
    try:
        assert "polling only" not in sensor.status().reason, sensor.status().reason
        sensor.poll()
        proc = _late_exec(tmp_path, delay=2.0)
        try:
            time.sleep(0.5)
            assert all(o.pid != proc.pid for o in sensor.poll()), "still a shell: not a runtime yet"
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"  # exec'd now
            observed = [o for o in sensor.poll() if o.pid == proc.pid]
            assert [o.name for o in observed] == ["ollama"]
        finally:
            proc.kill()
            proc.wait()
    finally:
        sensor.stop()


def test_without_kernel_events_a_late_exec_is_missed_and_the_status_says_polling(tmp_path: Path) -> None:
    """The documented limit of polling alone, so the status line is not a boast."""
    sensor = ProcessSensor(CATALOG.is_candidate, young_age=0.5, exec_events=False)
    sensor.start()
    sensor.poll()
    proc = _late_exec(tmp_path, delay=2.0)
    try:
        time.sleep(0.5)
        sensor.poll()
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        sensor.poll()  # the young-process second look has passed
        assert all(o.pid != proc.pid for o in sensor.poll())
    finally:
        proc.kill()
        proc.wait()


_LATE_LISTENER = """
import socket, sys
print("ready", flush=True)
sys.stdin.readline()
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
print(s.getsockname()[1], flush=True)
sys.stdin.readline()
s.close()
print("closed", flush=True)
sys.stdin.readline()
"""


def test_a_followed_process_that_starts_and_stops_listening_is_seen_at_the_next_poll() -> None:
    """Listening sockets are read again only when the host's listening set changes: a change
    in a followed process is still seen by the very next poll, both ways."""
    sensor = ProcessSensor(CATALOG.is_candidate, deep_interval=3600.0)
    proc = subprocess.Popen(
        [sys.executable, "-c", _LATE_LISTENER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready"

        def mine() -> ProcessObservation:
            (obs,) = [o for o in sensor.poll() if o.pid == proc.pid]  # python is always followed
            return obs

        assert mine().listening == ()
        assert mine().listening == ()  # the cached answer
        proc.stdin.write("listen\n")
        proc.stdin.flush()
        port = int(proc.stdout.readline())
        assert mine().listening == (ListeningSocket("127.0.0.1", port, "tcp"),)
        proc.stdin.write("close\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "closed"
        assert mine().listening == ()
    finally:
        proc.kill()
        proc.wait()


def test_listeners_from_sock_diag_match_the_proc_tables() -> None:
    """The kernel's LISTEN-only dump names the same listeners, inode, address and port, as /proc/net/tcp{,6}
    (read just after; retried, since this shared host opens and closes listeners all the time)."""
    import socket

    from agent.sensors.process.listening import _listeners
    from agent.system.sockdiag import tcp_listeners

    with socket.socket() as v4, socket.socket(socket.AF_INET6) as v6:
        v4.bind(("127.0.0.1", 0))
        v4.listen()
        v6.bind(("::1", 0))
        v6.listen()
        for _ in range(20):
            dumped, printed = tcp_listeners(), _listeners("/proc")
            if dumped == printed:
                break
        assert dumped is not None and dumped == printed
        assert dumped[os.fstat(v4.fileno()).st_ino] == ("127.0.0.1", v4.getsockname()[1])
        assert dumped[os.fstat(v6.fileno()).st_ino] == ("::1", v6.getsockname()[1])
        closed_inode = os.fstat(v4.fileno()).st_ino
    assert closed_inode not in (tcp_listeners() or {})


def test_listeners_from_descriptors_match_psutil() -> None:
    """A process's listeners found among its descriptors (against the host's listening set) are the
    ones psutil finds in the socket tables, IPv4 and IPv6, address and port."""
    import socket

    from agent.sensors.process.listening import ListeningSockets, listening_sockets

    with socket.socket() as v4, socket.socket(socket.AF_INET6) as v6, socket.socket() as idle:
        v4.bind(("127.0.0.1", 0))
        v4.listen()
        v6.bind(("::1", 0))
        v6.listen()
        idle.bind(("127.0.0.1", 0))  # bound, not listening
        sockets = ListeningSockets()
        sockets.begin_poll()
        mine = sockets.of(os.getpid())
        assert mine == listening_sockets(os.getpid())
        assert mine is not None
        assert ListeningSocket("127.0.0.1", v4.getsockname()[1], "tcp") in mine
        assert ListeningSocket("::1", v6.getsockname()[1], "tcp") in mine
        assert all(s.port != idle.getsockname()[1] for s in mine)

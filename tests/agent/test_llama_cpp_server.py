"""A real local model server: llama-cpp-python's OpenAI-compatible server on a tiny GGUF model.

The agent must find it by the catalog (`python -m llama_cpp.server`), and, started under a
different process name from a script that names no runtime, still find it from the weights it
maps and the llama.cpp libraries it loads.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FIXTURES, port_or_free

from agent.catalog.runtimes import load_runtime_catalog
from agent.detection.runtime import RuntimeDetector
from agent.observations import ProcessObservation
from agent.sensors.process.sensor import ProcessSensor

sys.path.insert(0, str(FIXTURES))
from tiny_gguf import write_tiny_llama

CATALOG = load_runtime_catalog()
LAUNCHER = """
import runpy, sys
sys.argv = ["llama_cpp.server", *sys.argv[1:]]
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("models") / "helpdesk-notes.bin")  # an innocent name


def _serve(
    argv: list[str], port: int, cwd: Path, executable: str | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        argv,
        executable=executable,
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"llama_cpp.server exited: {proc.stderr.read() if proc.stderr else ''}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.2)
    proc.kill()
    pytest.fail("llama_cpp.server did not listen within 60 s")


@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _observe(sensor: ProcessSensor, pid: int, timeout: float = 30.0) -> ProcessObservation:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for obs in sensor.poll():
            if obs.pid == pid and obs.listening and obs.model_files:
                return obs
        time.sleep(0.3)
    raise AssertionError(f"the server (pid {pid}) was not observed with its sockets and weights")


def _completion(port: int) -> dict[str, object]:
    body = json.dumps({"prompt": "hello", "max_tokens": 2}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/completions", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # loopback only
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_llama_cpp_python_server_is_found_by_catalog_libraries_and_weights(
    model: Path, tmp_path: Path, servers: list[subprocess.Popen[str]]
) -> None:
    port = port_or_free(8000)
    sensor = ProcessSensor(CATALOG.is_candidate, deep_interval=0)
    sensor.poll()
    argv = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "128",
    ]
    servers.append(_serve(argv, port, tmp_path))
    assert _completion(port)["choices"], "the server really serves completions"
    obs = _observe(sensor, servers[0].pid)
    (draft,) = RuntimeDetector(CATALOG).detect(obs)
    runtime = draft.evidence[0].runtime
    assert runtime.runtime_id == "llama-cpp-python"
    assert {"cmdline", "library", "model_file"} <= set(runtime.matched_on)
    assert any(lib.startswith("libllama") for lib in runtime.libraries)
    assert list(runtime.model_files) == [str(model)]
    assert draft.confidence >= 0.95


def test_renamed_server_is_still_found_by_what_it_maps(
    model: Path, tmp_path: Path, servers: list[subprocess.Popen[str]]
) -> None:
    """An interpreter copied to `svc-helper`, running `job.py`: no name, module or path says AI."""
    port = port_or_free(8011)
    helper = tmp_path / "svc-helper"
    shutil.copy(os.path.realpath(sys.executable), helper)  # a copy: its exe is svc-helper too
    (tmp_path / "job.py").write_text(LAUNCHER)
    env_path = os.pathsep.join(sys.path[1:])  # the copied interpreter finds llama_cpp where we do
    sensor = ProcessSensor(
        CATALOG.is_candidate, deep_interval=0, large_rss_bytes=32 * 2**20, sweep_interval=0
    )
    sensor.poll()
    argv = [
        "svc-helper",
        "job.py",
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "128",
    ]
    env = {**os.environ, "PYTHONPATH": env_path}
    servers.append(_serve(argv, port, tmp_path, executable=str(helper), env=env))
    obs = _observe(sensor, servers[0].pid)
    assert obs.name == "svc-helper" and os.path.basename(obs.exe) == "svc-helper"
    assert not CATALOG.match(obs.name, obs.exe, obs.cmdline, cwd=obs.cwd), "nothing in its name says AI"
    (draft,) = RuntimeDetector(CATALOG).detect(obs)
    runtime = draft.evidence[0].runtime
    assert runtime.runtime_id == "llama-cpp", "libllama identifies the engine"
    assert set(runtime.matched_on) == {"library", "model_file"}
    assert any("helpdesk-notes.bin" in reason for reason in runtime.reasons)
    assert draft.confidence >= 0.9

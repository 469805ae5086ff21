"""Catalog entries against real processes: each runtime started under its real binary name,
with its real command line and default port, is found; everyday programs are not."""

from __future__ import annotations

import time

import pytest
from conftest import SpawnBinary, port_or_free

from agent.catalog.runtimes import load_runtime_catalog
from agent.detection.runtime import RuntimeDetector
from agent.observations import ProcessObservation
from agent.sensors.process.sensor import ProcessSensor

CATALOG = load_runtime_catalog()

# (catalog id, argv as the runtime's docs show it, default port)
RUNTIMES = [
    ("ollama", ["ollama", "serve"], 11434),
    (
        "ollama",
        ["/usr/lib/ollama/ollama_llama_server", "--model", "/root/.ollama/models/blobs/sha256-6a0746a1"],
        0,
    ),
    ("llama-cpp", ["llama-server", "-m", "models/qwen2.5-7b-instruct-q4_k_m.gguf", "--port", "8080"], 8080),
    ("llama-cpp", ["llama-cli", "-m", "model.gguf", "-p", "hello"], 0),
    ("llamafile", ["./mistral-7b-instruct-v0.2.Q4_0.llamafile", "--server"], 8080),
    ("vllm", ["vllm", "serve", "Qwen/Qwen2.5-1.5B-Instruct"], 8000),
    ("tgi", ["text-generation-launcher", "--model-id", "HuggingFaceH4/zephyr-7b-beta"], 0),
    ("lm-studio", ["lms", "server", "start"], 1234),
    ("koboldcpp", ["koboldcpp", "--model", "model.gguf"], 5001),
    ("localai", ["local-ai", "run"], 8080),
    ("tabby", ["tabby", "serve", "--model", "StarCoder-1B"], 8080),
    ("triton", ["tritonserver", "--model-repository=/models"], 8000),
    ("invokeai", ["invokeai-web"], 9090),
    ("open-webui", ["open-webui", "serve"], 8080),
    ("litellm", ["litellm", "--model", "ollama/llama3"], 4000),
    ("gpt4all", ["gpt4all"], 4891),
    ("jan", ["jan"], 1337),
]

# Everyday programs, some with look-alike names, on ports runtimes also use.
EVERYDAY = [
    (["sshd", "-D"], 0),
    (["nginx", "-g", "daemon off;"], 8080),
    (["postgres", "-D", "/var/lib/postgresql/15/main"], 0),
    (["janitor", "--daemon"], 0),
    (["exoscale", "compute", "instance", "list"], 0),
    (["ollama-exporter", "--listen", ":9101"], 0),
    (["lmstat", "-a"], 0),
    (["server", "--port", "8000"], 8000),
    (["chat", "-v", "ABORT", "BUSY"], 0),
    (["tabby-terminal"], 0),
    (["node", "server.js"], 3000),
    (["java", "-jar", "app.jar", "--server.port=8080"], 0),
    (["code", "--unity-launch"], 0),
]


def _observe(sensor: ProcessSensor, pid: int, want_sockets: bool) -> ProcessObservation | None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for obs in sensor.poll():
            if obs.pid == pid and (obs.listening or not want_sockets):
                return obs
        time.sleep(0.1)
    return None


@pytest.mark.parametrize(
    ("runtime_id", "argv", "port"), RUNTIMES, ids=[f"{r[0]}:{r[1][0]}" for r in RUNTIMES]
)
def test_runtime_started_as_documented_is_found(
    spawn_binary: SpawnBinary, runtime_id: str, argv: list[str], port: int
) -> None:
    sensor = ProcessSensor(CATALOG.is_candidate, exec_events=False)
    sensor.poll()
    listen = [f"127.0.0.1:{port_or_free(port)}"] if port else []
    proc = spawn_binary(argv, listen=listen)
    obs = _observe(sensor, proc.pid, want_sockets=bool(listen))
    assert obs is not None, f"{argv[0]} was not followed"
    drafts = RuntimeDetector(CATALOG).detect(obs)
    assert [d.evidence[0].runtime.runtime_id for d in drafts] == [runtime_id]
    assert drafts[0].confidence >= 0.8


@pytest.mark.parametrize(("argv", "port"), EVERYDAY, ids=[e[0][0] for e in EVERYDAY])
def test_everyday_programs_yield_no_runtime(spawn_binary: SpawnBinary, argv: list[str], port: int) -> None:
    sensor = ProcessSensor(CATALOG.is_candidate, exec_events=False, large_rss_bytes=0)  # follow everything
    sensor.poll()
    listen = [f"127.0.0.1:{port_or_free(port)}"] if port else []
    proc = spawn_binary(argv, listen=listen)
    obs = _observe(sensor, proc.pid, want_sockets=False)
    assert obs is not None
    assert RuntimeDetector(CATALOG).detect(obs) == []


def test_this_hosts_own_processes_yield_no_runtime_findings() -> None:
    """Whatever runs on the test machine itself (no AI runtimes here) is not a runtime."""
    sensor = ProcessSensor(CATALOG.is_candidate, exec_events=False, large_rss_bytes=0)
    detector = RuntimeDetector(CATALOG)
    found = [d.summary for obs in sensor.poll() for d in detector.detect(obs)]
    assert found == []

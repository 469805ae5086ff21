"""Runtimes known by what they do, not what they are called: mapped weights and libraries,
API-key variable names, files written. Real processes, real /proc."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from conftest import FIXTURES, SpawnRuntime
from umbra import codec
from umbra.v1 import finding_pb2 as fpb

from agent.catalog.runtimes import load_runtime_catalog
from agent.delivery.tracker import FindingTracker
from agent.detection.runtime import RuntimeDetector
from agent.observations import ProcessObservation
from agent.sensors.process.facts import ModelFileCache
from agent.sensors.process.sensor import ProcessSensor

CATALOG = load_runtime_catalog()
sys.path.insert(0, str(FIXTURES))
from tiny_gguf import write_tiny_llama  # noqa: E402


def _gguf(path: Path) -> Path:
    """Real weights (a tiny llama GGUF written by the `gguf` package) under any name."""
    return write_tiny_llama(path)


def _observe(sensor: ProcessSensor, pid: int, timeout: float = 10.0) -> ProcessObservation:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for obs in sensor.poll():
            if obs.pid == pid:
                return obs
        time.sleep(0.2)
    raise AssertionError(f"pid {pid} was never observed")


def test_python_worker_mapping_gguf_weights_is_a_runtime(tmp_path: Path, spawn_runtime: SpawnRuntime) -> None:
    weights = _gguf(tmp_path / "customer-support-v2.1.dat")  # innocent name, GGUF content
    sensor = ProcessSensor(CATALOG.is_candidate, deep_interval=0)
    sensor.poll()
    proc = spawn_runtime(["python3", "worker.py"], maps=[weights])
    obs = _observe(sensor, proc.pid)
    assert obs.model_files == (str(weights),), obs
    (draft,) = RuntimeDetector(CATALOG).detect(obs)
    assert draft.kind == fpb.KIND_LOCAL_MODEL_RUNTIME
    assert draft.confidence >= 0.8
    runtime = draft.evidence[0].runtime
    assert list(runtime.matched_on) == ["model_file"]
    assert any(str(weights) in r for r in runtime.reasons)
    (model,) = [e.model_file for e in draft.evidence if e.HasField("model_file")]
    assert model.path == str(weights) and model.size_bytes == weights.stat().st_size
    assert (model.format, model.architecture, model.model_name) == ("gguf", "llama", "umbra-test-tiny")
    assert model.parameter_count > 1_000_000


def test_renamed_binary_mapping_libllama_is_llama_cpp(tmp_path: Path, spawn_runtime: SpawnRuntime) -> None:
    lib = tmp_path / "libllama.so"
    lib.write_bytes(b"\x7fELF" + b"\0" * 4096)
    weights = _gguf(tmp_path / "model.bin")
    sensor = ProcessSensor(CATALOG.is_candidate, deep_interval=0, large_rss_bytes=0)  # follow everything new
    sensor.poll()
    proc = spawn_runtime(["inventory-sync", "daemon"], maps=[lib, weights])
    obs = _observe(sensor, proc.pid)
    assert "libllama.so" in obs.libraries
    (draft,) = RuntimeDetector(CATALOG).detect(obs)
    runtime = draft.evidence[0].runtime
    assert runtime.runtime_id == "llama-cpp", "libllama identifies llama.cpp under any name"
    assert set(runtime.matched_on) == {"library", "model_file"}
    assert draft.confidence >= 0.9


def test_small_or_plain_files_are_not_weights(tmp_path: Path, spawn_runtime: SpawnRuntime) -> None:
    tiny = tmp_path / "tiny.gguf"
    tiny.write_bytes(b"GGUF" + b"\0" * 196)  # 200 bytes that only look like a model
    text = tmp_path / "notes.bin"
    text.write_bytes(b"hello\n" * 400_000)
    sensor = ProcessSensor(CATALOG.is_candidate, deep_interval=0)
    sensor.poll()
    proc = spawn_runtime(["python3", "report.py"], maps=[tiny, text])
    obs = _observe(sensor, proc.pid)
    assert obs.model_files == ()
    assert RuntimeDetector(CATALOG).detect(obs) == []


def test_api_key_variable_names_are_evidence_but_values_never_are(
    tmp_path: Path, spawn_runtime: SpawnRuntime
) -> None:
    secret = "sk-test-DO-NOT-LEAK-1234567890"
    sensor = ProcessSensor(CATALOG.is_candidate, deep_interval=0)
    sensor.poll()
    proc = spawn_runtime(
        ["ollama", "serve"], env={"OPENAI_API_KEY": secret, "HF_TOKEN": "hf_x", "EDITOR": "vi"}
    )
    obs = _observe(sensor, proc.pid)
    assert obs.env_key_names == ("HF_TOKEN", "OPENAI_API_KEY")
    tracker = FindingTracker("h1")
    (draft,) = RuntimeDetector(CATALOG).detect(obs)
    finding = tracker.observe(draft, fpb.PolicyDecision(rule="default:unapproved"), time.time())
    assert finding is not None
    as_json = json.dumps(codec.finding_to_dict(finding))
    assert "OPENAI_API_KEY" in as_json and secret not in as_json and "hf_x" not in as_json


def test_files_open_for_writing_are_observed(tmp_path: Path, spawn_runtime: SpawnRuntime) -> None:
    checkpoint = tmp_path / "checkpoint-100"
    checkpoint.mkdir()
    optimizer = checkpoint / "optimizer.pt"
    sensor = ProcessSensor(CATALOG.is_candidate, deep_interval=0)
    sensor.poll()
    proc = spawn_runtime(["python3", "train.py"], writes=[optimizer])
    obs = _observe(sensor, proc.pid)
    assert str(optimizer) in obs.written_files


def test_model_file_answers_are_cached_per_file_version(tmp_path: Path) -> None:
    check = ModelFileCache()
    path = _gguf(tmp_path / "w.gguf")
    assert check(str(path))
    path.write_bytes(b"x" * (2 * 1024 * 1024))  # same path, new content: asked again
    assert not check(str(path))
    assert not check(str(tmp_path / "absent"))

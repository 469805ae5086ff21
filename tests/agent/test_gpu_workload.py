"""GPU_AI_WORKLOAD, and the GPU bookkeeping (peaks, sustained use) it shares with FINE_TUNING.

The pipeline tests run the real GPU sensor and pynvml against the stand-in libnvidia-ml.so.1
(tests/agent/nvml_stub.py), with real processes behind the PIDs it lists."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import nvml_stub
import pytest
from conftest import SpawnRuntime
from nvml_stub import Gpu, NvmlStub
from umbra.v1 import finding_pb2 as fpb

from agent.catalog.runtimes import load_runtime_catalog
from agent.delivery.tracker import FindingTracker
from agent.detection.gpu import GpuUsage, GpuWorkloadDetector, coarse_bytes, workload_identity
from agent.observations import GpuProcessObservation, ProcessObservation
from agent.pipeline import Pipeline
from agent.policy.rules import Policy
from agent.sensors.gpu import GpuSensor

nvml_stub_dir = nvml_stub.nvml_stub_dir  # the stub's fixtures, made this module's
stub_nvml = nvml_stub.stub_nvml

GIB = 2**30
CATALOG = load_runtime_catalog()


def _library(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(b"\x7fELF" + bytes(4096))
    return path


@pytest.fixture
def pipeline(stub_nvml: NvmlStub) -> Iterator[Pipeline]:
    """The real GPU sensor (default loader: pynvml, reaching the stub) and the GPU detector."""
    pipeline = Pipeline(
        [GpuSensor(interval=0.0)], [GpuWorkloadDetector(CATALOG)], Policy(), FindingTracker("host-1")
    )
    pipeline.start()
    yield pipeline
    pipeline.stop()


def test_a_process_holding_gpu_memory_with_pytorch_mapped_is_an_ai_workload(
    stub_nvml: NvmlStub, pipeline: Pipeline, spawn_runtime: SpawnRuntime, tmp_path: Path
) -> None:
    proc = spawn_runtime(["python3", "infer.py"], maps=[_library(tmp_path, "libtorch_cuda.so")])
    stub_nvml.set(Gpu(uuid="GPU-aaaa", compute={proc.pid: 6 * GIB}, process_util={proc.pid: (73, 20)}))
    (finding,) = pipeline.poll()
    assert finding.kind == fpb.KIND_GPU_AI_WORKLOAD
    assert finding.severity == fpb.SEVERITY_MEDIUM
    assert finding.confidence == pytest.approx(0.9)
    assert finding.process.pid == proc.pid
    gpu = next(e.gpu for e in finding.evidence if e.HasField("gpu"))
    assert (gpu.gpu_index, gpu.gpu_name, gpu.memory_used_bytes) == (0, "NVIDIA H100 80GB HBM3", 6 * GIB)
    assert gpu.sm_utilization_percent == 70  # peak, in steps of 10
    assert list(gpu.ai_libraries) == ["libtorch_cuda.so"]
    runtime = next(e.runtime for e in finding.evidence if e.HasField("runtime"))
    assert "library" in runtime.matched_on
    assert any("PyTorch CUDA" in r for r in runtime.reasons)
    assert "infer.py" in finding.summary and "GPU 0" in finding.summary


def test_numbers_that_move_every_sample_do_not_resend_the_finding(
    stub_nvml: NvmlStub, pipeline: Pipeline, spawn_runtime: SpawnRuntime, tmp_path: Path
) -> None:
    proc = spawn_runtime(["python3", "infer.py"], maps=[_library(tmp_path, "libllama.so")])
    gpu = Gpu(compute={proc.pid: 6 * GIB}, process_util={proc.pid: (91, 20)})
    stub_nvml.set(gpu)
    assert len(pipeline.poll()) == 1
    for used, sm in [(6 * GIB - 2**20, 85), (6 * GIB + 3 * 2**20, 93), (5 * GIB, 40)]:
        gpu.compute[proc.pid], gpu.process_util[proc.pid] = used, (sm, 20)
        stub_nvml.write()
        assert pipeline.poll() == [], "a finding was resent for a small change"
    gpu.compute[proc.pid] = 9 * GIB  # the workload grew: worth saying
    stub_nvml.write()
    (grown,) = pipeline.poll()
    assert next(e.gpu for e in grown.evidence if e.HasField("gpu")).memory_used_bytes == 9 * GIB


def test_one_finding_per_gpu(
    stub_nvml: NvmlStub, pipeline: Pipeline, spawn_runtime: SpawnRuntime, tmp_path: Path
) -> None:
    proc = spawn_runtime(["python3", "train.py"], maps=[_library(tmp_path, "libtorch_cuda.so")])
    stub_nvml.set(Gpu(uuid="GPU-a", compute={proc.pid: GIB}), Gpu(uuid="GPU-b", compute={proc.pid: GIB}))
    findings = pipeline.poll()
    assert len({f.id for f in findings}) == 2
    assert {next(e.gpu.gpu_uuid for e in f.evidence if e.HasField("gpu")) for f in findings} == {
        "GPU-a",
        "GPU-b",
    }


def test_a_game_on_the_gpu_is_observed_but_is_no_ai_workload(
    stub_nvml: NvmlStub, spawn_runtime: SpawnRuntime, tmp_path: Path
) -> None:
    # CUDA itself (libcudart) is loaded by games, renderers and encoders: not AI on its own.
    game = spawn_runtime(["supertuxkart", "game.py"], maps=[_library(tmp_path, "libcudart.so.12")])
    stub_nvml.set(Gpu(graphics={game.pid: 2 * GIB}, process_util={game.pid: (99, 60)}))
    sensor = GpuSensor(interval=0.0)
    observations = [o for o in sensor.poll() if isinstance(o, GpuProcessObservation)]
    sensor.stop()
    assert [(o.process.pid, o.context) for o in observations] == [(game.pid, "graphics")]
    assert observations[0].process.libraries == ("libcudart.so.12",)
    detector = GpuWorkloadDetector(CATALOG)
    assert [d for o in observations for d in detector.detect(o)] == []


def _gpu_obs(
    proc: ProcessObservation, used: int | None = GIB, t: float = 0.0, **kw: Any
) -> GpuProcessObservation:
    defaults: dict[str, Any] = {
        "gpu_index": 0,
        "gpu_uuid": "GPU-a",
        "gpu_name": "NVIDIA L4",
        "sm_utilization_percent": 50,
        "memory_utilization_percent": 10,
        "context": "compute",
    }
    return GpuProcessObservation(process=proc, used_memory_bytes=used, sampled_at=t, **{**defaults, **kw})


OLLAMA = ProcessObservation(4242, 1, "ollama", "/usr/local/bin/ollama", ("ollama", "serve"), "alice", 1000.0)


def test_a_catalogued_runtime_on_the_gpu_is_a_workload_even_when_its_maps_are_hidden() -> None:
    (draft,) = GpuWorkloadDetector(CATALOG).detect(_gpu_obs(OLLAMA))
    assert draft.subject == "ollama"
    assert draft.key == "/usr/local/bin/ollama|alice|GPU-a"
    assert draft.confidence >= 0.8


def test_a_context_without_memory_is_not_yet_a_workload() -> None:
    assert GpuWorkloadDetector(CATALOG).detect(_gpu_obs(OLLAMA, used=0)) == []


def test_unreported_memory_still_counts_as_held() -> None:
    (draft,) = GpuWorkloadDetector(CATALOG).detect(_gpu_obs(OLLAMA, used=None))
    assert "memory not reported" in draft.summary


def test_identity_separates_scripts_and_modules_and_not_restarts() -> None:
    base = ProcessObservation(1, 0, "python3", "/usr/bin/python3.11", (), "bob", 0.0, cwd="/home/bob/proj")
    assert (
        workload_identity(replace(base, cmdline=("python3", "train.py")))
        == "/usr/bin/python3.11 /home/bob/proj/train.py"
    )
    assert (
        workload_identity(replace(base, cmdline=("python3", "-u", "/opt/x/serve.py")))
        == "/usr/bin/python3.11 /opt/x/serve.py"
    )
    assert workload_identity(
        replace(base, cmdline=("python3", "-m", "vllm.entrypoints.openai.api_server"))
    ) == ("/usr/bin/python3.11 -m vllm.entrypoints.openai.api_server")
    game = ProcessObservation(
        7, 1, "Game", "/opt/game/bin/Game", ("/opt/game/bin/Game", "-fullscreen"), "bob", 5.0
    )
    assert (
        workload_identity(game)
        == workload_identity(replace(game, pid=8, create_time=99.0))
        == "/opt/game/bin/Game"
    )


# --- sustained use, with timestamps from the observations ----------------------------------------

PROC = ProcessObservation(99, 1, "python3", "/usr/bin/python3", ("python3", "train.py"), "bob", 1.0)


def _feed(usage: GpuUsage, times: Any, **kw: Any) -> None:
    for t in times:
        usage.record(_gpu_obs(PROC, t=t, **kw))


def test_sustained_needs_the_window_and_the_samples() -> None:
    usage = GpuUsage(window=60, min_samples=5, min_utilization=10)
    _feed(usage, [0, 15, 30, 45])
    assert usage.sustained(PROC.instance_key) is None  # 45 s, 4 samples
    _feed(usage, [60])
    sustained = usage.sustained(PROC.instance_key)
    assert sustained is not None
    assert (sustained.seconds, sustained.samples, sustained.mean_sm_percent) == (60, 5, 50)

    few = GpuUsage(window=60, min_samples=5)
    _feed(few, [0, 70])  # long enough, too few samples
    assert few.sustained(PROC.instance_key) is None


def test_a_gap_or_released_memory_starts_the_run_again() -> None:
    usage = GpuUsage(window=60, min_samples=3)
    _feed(usage, [0, 30, 60])
    assert usage.sustained(PROC.instance_key) is not None
    _feed(usage, [200])  # silent for more than the window
    assert usage.sustained(PROC.instance_key) is None
    _feed(usage, [230, 260])
    assert usage.sustained(PROC.instance_key) is not None
    _feed(usage, [270], used=0)
    assert usage.sustained(PROC.instance_key) is None


def test_an_idle_gpu_holder_is_not_sustained_use_and_unknown_utilisation_is() -> None:
    idle = GpuUsage(window=60, min_samples=3, min_utilization=10)
    _feed(idle, [0, 30, 60], sm_utilization_percent=2)
    assert idle.sustained(PROC.instance_key) is None
    unknown = GpuUsage(window=60, min_samples=3)
    _feed(unknown, [0, 30, 60], sm_utilization_percent=None)
    sustained = unknown.sustained(PROC.instance_key)
    assert sustained is not None and sustained.mean_sm_percent is None


def test_two_gpus_in_one_poll_are_one_sample_and_the_busiest_counts() -> None:
    usage = GpuUsage(window=20, min_samples=3)
    for t in (0, 10, 20):
        usage.record(_gpu_obs(PROC, t=t, gpu_uuid="GPU-a", sm_utilization_percent=20))
        usage.record(_gpu_obs(PROC, t=t, gpu_uuid="GPU-b", gpu_index=1, sm_utilization_percent=80))
    sustained = usage.sustained(PROC.instance_key)
    assert sustained is not None and (sustained.samples, sustained.mean_sm_percent) == (3, 80)
    assert [p.uuid for p in usage.peaks(PROC.instance_key)] == ["GPU-a", "GPU-b"]


def test_instances_not_seen_for_a_while_are_forgotten() -> None:
    usage = GpuUsage(window=60, forget_after=600)
    counter = itertools.count(1)
    for t in range(0, 3000, 30):
        usage.record(_gpu_obs(replace(PROC, pid=next(counter), create_time=float(t)), t=float(t)))
    assert len(usage) <= 600 // 30 + 600 // 4 // 30 + 2


def test_coarse_bytes_changes_in_steps() -> None:
    assert coarse_bytes(None) == 0
    assert coarse_bytes(5 * 2**20 + 7) == 5 * 2**20
    assert coarse_bytes(300 * 2**20 + 1) == 288 * 2**20
    assert coarse_bytes(6 * GIB + 100 * 2**20) == 6 * GIB

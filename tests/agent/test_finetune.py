"""FINE_TUNING: real training-like processes, the real /proc, the whole pipeline, and NVML as
nvidia-ml-py really calls it, answered by a stand-in libnvidia-ml.so.1 (tests/agent/nvml_stub.py).

The scenario: an insider fine-tunes a model on proprietary code on a GPU, in plain `python`.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import nvml_stub
import pytest
from conftest import SpawnRuntime, cli
from nvml_stub import Gpu, NvmlStub, child_env
from umbra.v1 import finding_pb2 as fpb

from agent.catalog.runtimes import load_runtime_catalog
from agent.delivery.tracker import FindingTracker
from agent.detection.finetune import FineTuningDetector, artifact_format, command_line_signals
from agent.detection.gpu import GpuUsage, GpuWorkloadDetector
from agent.observations import GpuProcessObservation, ProcessObservation
from agent.pipeline import Detector, Pipeline
from agent.policy.rules import Policy
from agent.sensors.gpu import GpuSensor
from agent.sensors.process.sensor import ProcessSensor

nvml_stub_dir = nvml_stub.nvml_stub_dir  # the stub's fixtures, made this module's
stub_nvml = nvml_stub.stub_nvml

GIB = 2**30
CATALOG = load_runtime_catalog()


class StepClock:
    """The sensor's clock: each read is one poll, `step` seconds after the last."""

    def __init__(self, step: float = 15.0) -> None:
        self._times: Iterator[float] = (1_700_000_000.0 + i * step for i in range(10**6))

    def __call__(self) -> float:
        return next(self._times)


def _library(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(b"\x7fELF" + bytes(4096))
    return path


@pytest.fixture
def gpu_pipeline(stub_nvml: NvmlStub) -> Iterator[Callable[..., Pipeline]]:
    """gpu_pipeline(clock=..., window=..., min_samples=...): the real GPU sensor (pynvml, reaching
    the stub) and both GPU detectors; stopped after the test."""
    made: list[Pipeline] = []

    def make(*, clock: Any, **usage: Any) -> Pipeline:
        sensor = GpuSensor(interval=0.0, clock=clock)
        detectors: list[Detector] = [
            GpuWorkloadDetector(CATALOG),
            FineTuningDetector(usage=GpuUsage(**usage)),
        ]
        pipeline = Pipeline([sensor], detectors, Policy(), FindingTracker("host-1"))
        pipeline.start()
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        pipeline.stop()


def _fine_tuning(findings: list[fpb.Finding]) -> list[fpb.Finding]:
    return [f for f in findings if f.kind == fpb.KIND_FINE_TUNING]


def test_fine_tuning_in_plain_python_on_a_gpu_with_the_combined_evidence(
    stub_nvml: NvmlStub, gpu_pipeline: Callable[..., Pipeline], spawn_runtime: SpawnRuntime, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    (out / "checkpoint-100").mkdir(parents=True)
    optimizer = out / "checkpoint-100" / "optimizer.pt"
    adapter = out / "checkpoint-100" / "adapter_model.safetensors"
    proc = spawn_runtime(
        ["python3", "-m", "accelerate.commands.launch", "train.py"],
        maps=[_library(tmp_path, "libtorch_cuda.so")],
        writes=[optimizer, adapter],
    )
    stub_nvml.set(Gpu(compute={proc.pid: 21 * GIB}, process_util={proc.pid: (96, 60)}, utilization=(98, 61)))
    pipeline = gpu_pipeline(clock=StepClock(15.0), window=60, min_samples=5)

    first = pipeline.poll()
    assert {f.kind for f in first} == {fpb.KIND_GPU_AI_WORKLOAD, fpb.KIND_FINE_TUNING}
    (early,) = _fine_tuning(first)
    assert early.severity == fpb.SEVERITY_MEDIUM  # the GPU use is not yet sustained
    assert early.confidence == pytest.approx(0.80)  # command line + writes

    confidences = [early.confidence]
    for _ in range(5):  # 15 s a poll: a minute and more of GPU use
        confidences += [f.confidence for f in _fine_tuning(pipeline.poll())]
    assert confidences == sorted(confidences) and confidences[-1] > confidences[0]

    (finding,) = [f for f in pipeline.tracker.current() if f.kind == fpb.KIND_FINE_TUNING]
    assert finding.severity == fpb.SEVERITY_HIGH
    assert finding.confidence == pytest.approx(0.90)  # command line + writes + sustained GPU
    assert finding.process.pid == proc.pid
    runtime = next(e.runtime for e in finding.evidence if e.HasField("runtime"))
    assert runtime.runtime_id == "accelerate"
    assert list(runtime.matched_on) == ["cmdline", "written_file", "gpu"]
    assert any("python -m accelerate.commands.launch" in r for r in runtime.reasons)
    assert any(r.startswith("sustained GPU use") for r in runtime.reasons)
    assert "libtorch_cuda.so" in runtime.libraries
    gpu_ev = next(e.gpu for e in finding.evidence if e.HasField("gpu"))
    assert (gpu_ev.memory_used_bytes, gpu_ev.sm_utilization_percent) == (21 * GIB, 90)
    files = {e.model_file.path: e.model_file.format for e in finding.evidence if e.HasField("model_file")}
    assert files == {str(optimizer): "trainer_checkpoint", str(adapter): "lora_adapter"}
    assert "accelerate" in finding.summary.lower() and "GPU 0" in finding.summary


def test_deepspeed_training_seen_by_the_process_sensor_without_any_gpu(
    spawn_runtime: SpawnRuntime, tmp_path: Path
) -> None:
    # Training without an NVIDIA GPU (CPU, Apple, AMD) is still training: the process facts say so.
    ckpt = tmp_path / "run" / "global_step200"
    ckpt.mkdir(parents=True)
    states = ckpt / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"
    sensor = ProcessSensor(CATALOG.is_candidate, deep_interval=0.0)
    sensor.poll()
    proc = spawn_runtime(["python3", "train.py", "--deepspeed", "ds.json"], writes=[states])
    pipeline = Pipeline([sensor], [FineTuningDetector()], Policy(), FindingTracker("host-1"))
    deadline = time.monotonic() + 20
    found: list[fpb.Finding] = []
    while not found and time.monotonic() < deadline:
        found = [f for f in _fine_tuning(pipeline.poll()) if f.process.pid == proc.pid]
        time.sleep(0.1)
    assert found, "the training process was not found"
    (finding,) = found
    assert finding.severity == fpb.SEVERITY_MEDIUM
    assert finding.confidence == pytest.approx(0.85)  # command line + writes, plus the script's name
    runtime = next(e.runtime for e in finding.evidence if e.HasField("runtime"))
    assert runtime.runtime_id == "deepspeed"
    assert any("--deepspeed" in r for r in runtime.reasons)
    assert any("train.py" in r for r in runtime.reasons)
    (artifact,) = [e.model_file for e in finding.evidence if e.HasField("model_file")]
    assert (artifact.path, artifact.format) == (str(states), "deepspeed_checkpoint")


def test_a_python_process_writing_an_ordinary_file_is_not_training(
    stub_nvml: NvmlStub, gpu_pipeline: Callable[..., Pipeline], spawn_runtime: SpawnRuntime, tmp_path: Path
) -> None:
    log = tmp_path / "service.log"
    proc = spawn_runtime(
        ["python3", "service.py"], writes=[log], maps=[_library(tmp_path, "libtorch_cuda.so")]
    )
    stub_nvml.set(Gpu(compute={proc.pid: 4 * GIB}, process_util={proc.pid: (80, 30)}))
    pipeline = gpu_pipeline(clock=StepClock(30.0), window=60, min_samples=3)
    kinds = [f.kind for _ in range(5) for f in pipeline.poll()]
    # Inference on a GPU is an AI workload; busy for minutes, it is still not training.
    assert fpb.KIND_GPU_AI_WORKLOAD in kinds
    assert fpb.KIND_FINE_TUNING not in kinds


# --- the rules, on hand-built observations -----------------------------------------------------

BASE = ProcessObservation(
    500, 1, "python3", "/usr/bin/python3.11", ("python3", "job.py"), "eve", 100.0, cwd="/home/eve/p"
)
TOOL = ("python3", "job.py", "--use_peft", "--lora_r", "16")
WRITES = ("/home/eve/p/out/checkpoint-500/adapter_model.safetensors",)
TRAINING_LIB = ("libbitsandbytes_cuda124.so",)


def _confidence(
    cmdline: tuple[str, ...] = BASE.cmdline,
    written: tuple[str, ...] = (),
    libraries: tuple[str, ...] = (),
    sustained: bool = False,
) -> float | None:
    proc = replace(BASE, cmdline=cmdline, written_files=written, libraries=libraries)
    detector = FineTuningDetector(usage=GpuUsage(window=60, min_samples=3))
    drafts = []
    for t in (0.0, 30.0, 60.0) if sustained else ():
        drafts = detector.detect(
            GpuProcessObservation(proc, 0, "GPU-a", "NVIDIA L4", 10 * GIB, 90, 40, "compute", sampled_at=t)
        )
    drafts = drafts or detector.detect(proc)
    return drafts[0].confidence if drafts else None


def test_confidence_grows_with_each_kind_of_signal() -> None:
    assert _confidence(TOOL) == pytest.approx(0.60)
    assert _confidence(written=WRITES) == pytest.approx(0.60)
    assert _confidence(TOOL, WRITES) == pytest.approx(0.80)
    assert _confidence(TOOL, WRITES, sustained=True) == pytest.approx(0.90)
    assert _confidence(TOOL, WRITES, TRAINING_LIB, sustained=True) == pytest.approx(0.97)


def test_signals_that_inference_also_shows_never_make_a_finding_alone() -> None:
    assert _confidence() is None
    assert _confidence(libraries=TRAINING_LIB) is None  # vLLM maps FlashAttention, bitsandbytes
    assert _confidence(sustained=True) is None  # inference keeps a GPU busy too
    assert _confidence(("python3", "train.py"), libraries=TRAINING_LIB, sustained=True) is None
    assert _confidence(("torchrun", "--nproc_per_node", "8", "serve.py")) is None


def test_a_checkpoint_written_between_polls_is_remembered() -> None:
    detector = FineTuningDetector()
    proc = replace(BASE, cmdline=TOOL)
    detector.detect(replace(proc, written_files=WRITES))
    (draft,) = detector.detect(proc)  # closed since: the instance still wrote it
    assert draft.confidence == pytest.approx(0.80)
    paths = [e.model_file.path for e in draft.evidence if e.HasField("model_file")]
    assert paths == list(WRITES)


def test_the_ranks_of_one_job_are_one_finding() -> None:
    detector = FineTuningDetector()
    ranks = [replace(BASE, pid=600 + i, create_time=200.0 + i, cmdline=TOOL) for i in range(4)]
    keys = {d.key for r in ranks for d in detector.detect(r)}
    assert keys == {"/usr/bin/python3.11 /home/eve/p/job.py|eve"}


@pytest.mark.parametrize(
    ("argv", "tool"),
    [
        (
            ("/usr/bin/python3", "/usr/local/bin/accelerate", "launch", "--num_processes", "2", "train.py"),
            "accelerate",
        ),
        (("accelerate", "launch", "-m", "axolotl.cli.train", "cfg.yml"), "accelerate"),
        (("python", "-m", "axolotl.cli.train", "config.yml"), "axolotl"),
        (("axolotl", "train", "config.yml"), "axolotl"),
        (("deepspeed", "--num_gpus", "8", "train.py", "--deepspeed", "ds.json"), "deepspeed"),
        (("python", "run.py", "--deepspeed=ds_z3.json"), "deepspeed"),
        (
            ("/opt/conda/bin/python3.11", "/opt/conda/bin/tune", "run", "lora_finetune_single_device"),
            "torchtune",
        ),
        (("trl", "sft", "--model_name_or_path", "Qwen/Qwen2.5-3B", "--dataset_name", "x"), "trl"),
        (("llamafactory-cli", "train", "examples/train_lora/llama3_lora_sft.yaml"), "llamafactory"),
        (("python", "-m", "mlx_lm.lora", "--model", "m", "--train"), "mlx-lm-lora"),
        (("python", "unsloth-cli.py", "--model_name", "unsloth/llama-3-8b"), "unsloth"),
        (("python", "sft.py", "--per_device_train_batch_size", "4"), "hf-trainer"),
        (("python", "job.py", "--use_peft", "--lora_r", "16"), "peft"),
    ],
)
def test_training_command_lines(argv: tuple[str, ...], tool: str) -> None:
    signals = command_line_signals(replace(BASE, cmdline=argv))
    assert signals.strong
    assert signals.tools[0].id == tool


@pytest.mark.parametrize(
    "argv",
    [
        ("accelerate", "config"),
        ("tune", "ls"),
        ("trl", "env"),
        ("python", "-m", "pytest", "tests/test_train.py"),
        ("vim", "train.py"),
        ("python", "-m", "vllm.entrypoints.openai.api_server", "--model", "m"),
        ("python", "train.py"),  # only a hint
        ("torchrun", "--nproc_per_node", "2", "serve.py"),  # only a hint
        ("python", "accelerate_notes.py"),
        ("python", "-c", "import peft"),
    ],
)
def test_look_alikes_are_not_training_tools(argv: tuple[str, ...]) -> None:
    assert not command_line_signals(replace(BASE, cmdline=argv)).strong


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        ("/w/out/checkpoint-500/optimizer.pt", "trainer_checkpoint"),
        ("/w/out/checkpoint-500/adapter_model.safetensors", "lora_adapter"),
        ("/w/out/adapter_model.bin", "lora_adapter"),
        ("/w/adapters/0000100_adapters.safetensors", "lora_adapter"),
        ("/w/out/global_step300/mp_rank_00_model_states.pt", "deepspeed_checkpoint"),
        ("/w/out/optimizer.pt", "optimizer_state"),
        ("/w/out/trainer_state.json", "optimizer_state"),
        ("/w/lightning_logs/version_0/checkpoints/epoch=3-step=100.ckpt", "trainer_checkpoint"),
        ("/w/model.safetensors", None),
        ("/w/notes/checkpoint.txt", None),
        ("/var/log/app.log", None),
    ],
)
def test_artifact_formats(path: str, fmt: str | None) -> None:
    assert artifact_format(path) == fmt


def test_seen_by_both_sensors_the_finding_is_sent_once_not_every_poll(
    stub_nvml: NvmlStub, spawn_runtime: SpawnRuntime, tmp_path: Path
) -> None:
    # The process sensor follows interpreters too: the same instance reaches the detector twice a
    # poll. Both routes must agree, or the finding would be resent on every poll.
    out = tmp_path / "out" / "checkpoint-20"
    out.mkdir(parents=True)
    proc = spawn_runtime(
        ["python3", "finetune.py", "--use_peft", "--lora_r", "8"],
        maps=[_library(tmp_path, "libtorch_cuda.so")],
        writes=[out / "adapter_model.safetensors"],
    )
    stub_nvml.set(Gpu(compute={proc.pid: 8 * GIB}, process_util={proc.pid: (88, 50)}))
    sensors = [
        ProcessSensor(CATALOG.is_candidate, deep_interval=0.0),
        GpuSensor(interval=0.0, clock=StepClock(20.0)),
    ]
    detectors: list[Detector] = [
        GpuWorkloadDetector(CATALOG),
        FineTuningDetector(usage=GpuUsage(window=60, min_samples=3)),
    ]
    pipeline = Pipeline(sensors, detectors, Policy(), FindingTracker("host-1"))
    pipeline.start()
    sent = [f for _ in range(8) for f in _fine_tuning(pipeline.poll()) if f.process.pid == proc.pid]
    pipeline.stop()
    # Once with what the first poll knew, once more when the GPU use became sustained.
    assert [f.confidence for f in sent] == pytest.approx([0.85, 0.95])
    assert [f.severity for f in sent] == [fpb.SEVERITY_MEDIUM, fpb.SEVERITY_HIGH]
    assert len({f.id for f in sent}) == 1


# --- end to end: umbra-agent, with the stub first on its library path ---------------------------


def test_umbra_agent_scan_reports_fine_tuning_on_a_gpu_from_nvml(
    nvml_stub_dir: Path, spawn_runtime: SpawnRuntime, tmp_path: Path
) -> None:
    # `umbra-agent scan` as a user runs it, in a child whose dynamic loader finds the stub first on
    # LD_LIBRARY_PATH: the installed console script, the real pynvml, the real /proc.
    out = tmp_path / "out" / "checkpoint-100"
    out.mkdir(parents=True)
    torch = _library(tmp_path, "libtorch_cuda.so")
    trainer = spawn_runtime(
        ["python3", "-m", "accelerate.commands.launch", "train.py"],
        maps=[torch],
        writes=[out / "optimizer.pt", out / "adapter_model.safetensors"],
    )
    server = spawn_runtime(["python3", "serve.py"], maps=[torch])
    stub = NvmlStub(tmp_path / "nvml.state")
    stub.set(
        Gpu(uuid="GPU-train", compute={trainer.pid: 21 * GIB}, process_util={trainer.pid: (96, 60)}),
        Gpu(name="NVIDIA L4", uuid="GPU-serve", memory_total=24 * GIB, compute={server.pid: 5 * GIB}),
    )
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[agent]\nhost_id = "gpu-host"\nstate_dir = "{tmp_path / "state"}"\n'
        "[sensors.process]\nenabled = false\ninterval = 0.2\n"  # the GPU route alone; a poll per 0.2 s
        "[sensors.gpu]\ninterval = 0.2\nsustained_seconds = 0.6\nsustained_samples = 3\n"
    )
    result = subprocess.run(
        [cli("umbra-agent"), "scan", "--format", "json", "--duration", "1.5", "--config", str(config)],
        env=child_env(nvml_stub_dir, stub.path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    findings = [json.loads(line) for line in result.stdout.splitlines()]
    by_pid: dict[int, dict[str, Any]] = {}
    for f in findings:
        if f["process"] and f["kind"] in {"GPU_AI_WORKLOAD", "FINE_TUNING"}:
            by_pid.setdefault(f["process"]["pid"], {})[f["kind"]] = f
    assert set(by_pid) == {trainer.pid, server.pid}
    assert set(by_pid[server.pid]) == {"GPU_AI_WORKLOAD"}  # inference: an AI workload, not training
    assert set(by_pid[trainer.pid]) == {"GPU_AI_WORKLOAD", "FINE_TUNING"}

    training = by_pid[trainer.pid]["FINE_TUNING"]
    assert training["host_id"] == "gpu-host"
    assert training["process"]["cmdline"] == ["python3", "-m", "accelerate.commands.launch", "train.py"]
    assert (training["severity"], training["confidence"]) == ("high", pytest.approx(0.9))  # sustained
    (runtime,) = [e for e in training["evidence"] if e["type"] == "runtime"]
    assert any(r.startswith("sustained GPU use") for r in runtime["reasons"])
    gpus = [e for f in by_pid[trainer.pid].values() for e in f["evidence"] if e["type"] == "gpu"]
    assert gpus and all(e["gpu_uuid"] == "GPU-train" for e in gpus)
    # both findings say which kind of context the process holds (a real H200 showed FINE_TUNING's blank)
    assert {e["context"] for e in gpus} == {"compute"}
    (serving,) = [e for e in by_pid[server.pid]["GPU_AI_WORKLOAD"]["evidence"] if e["type"] == "gpu"]
    assert (serving["gpu_name"], serving["gpu_index"]) == ("NVIDIA L4", 1)

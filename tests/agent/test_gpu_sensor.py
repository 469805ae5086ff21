"""The GPU sensor: the real pynvml against a stand-in libnvidia-ml.so.1 (tests/fixtures/nvml_stub.c),
real processes and the real /proc behind it. Nothing in the sensor is replaced: `GpuSensor()`
loads pynvml itself, and pynvml loads the stub where it would load the NVIDIA driver's library.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nvml_stub
import psutil
import pynvml
import pytest
from conftest import REPO, SpawnRuntime
from nvml_stub import DRIVER_VERSION, Gpu, NvmlStub, child_env

from agent.config import ConfigError, load_config
from agent.daemon import build_pipeline
from agent.delivery.tracker import FindingTracker
from agent.detection.finetune import FineTuningDetector
from agent.detection.gpu import GpuWorkloadDetector
from agent.observations import GpuDeviceObservation, GpuProcessObservation, Observation
from agent.pipeline import Pipeline
from agent.policy.rules import Policy
from agent.sensors.base import SensorState
from agent.sensors.gpu import GpuSensor
from agent.system.nvml import MEMORY, PROCESS_UTILIZATION, UTILIZATION

# The stub's fixtures, made this module's (pytest finds fixtures among a module's names).
nvml_stub_dir = nvml_stub.nvml_stub_dir
old_driver_stub_dir = nvml_stub.old_driver_stub_dir
stub_nvml = nvml_stub.stub_nvml

GIB = 2**30
COMPUTE_V3 = "nvmlDeviceGetComputeRunningProcesses_v3"
NO_SUCH_PID = 4_194_304  # above Linux's largest pid_max: no process has it


@pytest.fixture
def sensor(stub_nvml: NvmlStub) -> Iterator[GpuSensor]:
    """The real sensor with its default loader (the real pynvml, reaching the stub), polling on
    every call; stopped before the stub checks that NVML was left shut down."""
    sensor = GpuSensor(interval=0.0)
    yield sensor
    sensor.stop()


def _devices(observations: list[Observation] | Any) -> list[GpuDeviceObservation]:
    return [o for o in observations if isinstance(o, GpuDeviceObservation)]


def _processes(observations: list[Observation] | Any) -> list[GpuProcessObservation]:
    return [o for o in observations if isinstance(o, GpuProcessObservation)]


def _pids(observations: list[Observation] | Any) -> list[int]:
    return [o.process.pid for o in _processes(observations)]


def _trouble(sensor: GpuSensor) -> str:
    """The sensor's problem, if any, apart from the note that it does not run as root."""
    reason = sensor.status().reason
    return "" if reason.startswith("not root") else reason


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _sleeper(spawn: SpawnRuntime, argv: list[str] | None = None, **kwargs: Any) -> subprocess.Popen[str]:
    return spawn(argv or ["python3", "worker.py"], **kwargs)


def _child(code: str, env: dict[str, str]) -> Any:
    """Run `code` in a fresh interpreter (its own dynamic loader and pynvml); its JSON output."""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --- the stub is what pynvml reaches -----------------------------------------------------------


def test_the_real_binding_runs_against_the_stub(stub_nvml: NvmlStub) -> None:
    stub_nvml.set(Gpu(uuid="GPU-aaaa"), Gpu(name="NVIDIA RTX A2000", uuid="GPU-bbbb", memory_total=12 * GIB))
    pynvml.nvmlInit()
    try:
        assert pynvml.nvmlSystemGetDriverVersion() == DRIVER_VERSION
        assert pynvml.nvmlDeviceGetCount() == 2
        handle = pynvml.nvmlDeviceGetHandleByIndex(1)
        assert pynvml.nvmlDeviceGetName(handle) == "NVIDIA RTX A2000"
        assert pynvml.nvmlDeviceGetMemoryInfo(handle).total == 12 * GIB
        assert pynvml.nvmlDeviceGetComputeRunningProcesses(handle) == []
    finally:
        pynvml.nvmlShutdown()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        pynvml.nvmlDeviceGetCount()


# --- no NVML ------------------------------------------------------------------------------------

NO_GPU_CHILD = """
import json, logging
from agent.delivery.tracker import FindingTracker
from agent.pipeline import Pipeline
from agent.policy.rules import Policy
from agent.sensors.gpu import GpuSensor

levels = []
class Keep(logging.Handler):
    def emit(self, record): levels.append(record.levelno)
logging.getLogger().addHandler(Keep())
logging.getLogger().setLevel(logging.DEBUG)
pipeline = Pipeline([GpuSensor()], [], Policy(), FindingTracker("h"))
(status,) = pipeline.start()
polls = [len(pipeline.poll()), len(pipeline.poll())]
print(json.dumps({"state": status.state.value, "reason": status.reason, "polls": polls,
                  "same": pipeline.statuses() == [status],
                  "warnings": sum(level >= logging.WARNING for level in levels)}))
pipeline.stop()
"""


@pytest.mark.skipif(ctypes.util.find_library("nvidia-ml") is not None, reason="this host has NVML")
def test_without_any_libnvidia_ml_the_real_binding_makes_the_sensor_inactive_not_an_error() -> None:
    # A child process: this one has the stub loaded, and pynvml keeps the library it found.
    env = {k: v for k, v in os.environ.items() if k not in {"LD_LIBRARY_PATH", "UMBRA_NVML_STUB"}}
    doc = _child(NO_GPU_CHILD, env)
    assert doc["state"] == SensorState.INACTIVE.value
    assert doc["reason"].startswith("no NVIDIA driver/NVML (NVML Shared Library Not Found")
    assert doc["polls"] == [0, 0]
    assert doc["same"] is True
    assert doc["warnings"] == 0


def test_driver_not_loaded_is_probed_once_and_reported_inactive(stub_nvml: NvmlStub) -> None:
    stub_nvml.set(Gpu(), driver="missing")
    inits = stub_nvml.calls("nvmlInitWithFlags")
    sensor = GpuSensor(interval=0.0)
    pipeline = Pipeline([sensor], [], Policy(), FindingTracker("h"))
    (status,) = pipeline.start()
    assert [pipeline.poll() for _ in range(3)] == [[], [], []]
    assert {sensor.status() for _ in range(5)} == {status}
    assert status.state is SensorState.INACTIVE
    assert status.reason == "no NVIDIA driver/NVML (Driver Not Loaded)"
    assert stub_nvml.calls("nvmlInitWithFlags") - inits == 1
    pipeline.stop()


def test_a_driver_that_appears_later_is_found_by_the_reprobe(stub_nvml: NvmlStub) -> None:
    stub_nvml.set(Gpu(), driver="missing")
    sensor = GpuSensor(interval=0.0, reprobe_interval=0.0)
    assert sensor.status().state is SensorState.INACTIVE
    stub_nvml.set(Gpu())
    assert sensor.status().state is not SensorState.INACTIVE
    assert _devices(sensor.poll())
    sensor.stop()


def test_binding_not_installed_is_inactive() -> None:
    def missing() -> Any:  # the binding's import failing: nothing of NVML is reached
        raise ImportError("No module named 'pynvml'")

    status = GpuSensor(missing).status()
    assert status.state is SensorState.INACTIVE
    assert "no NVIDIA driver/NVML" in status.reason and "nvidia-ml-py" in status.reason


def test_no_permission_at_init_says_what_failed(stub_nvml: NvmlStub) -> None:
    stub_nvml.set(Gpu(), driver="noperm")
    status = GpuSensor(interval=0.0).status()
    assert status.state is SensorState.INACTIVE
    assert status.reason == "NVML failed to initialise: Insufficient Permissions"
    assert stub_nvml.inits() == 0


# --- what a poll reports ------------------------------------------------------------------------


def test_gpus_and_processes_are_attributed_to_real_processes(
    stub_nvml: NvmlStub, sensor: GpuSensor, spawn_runtime: SpawnRuntime
) -> None:
    trainer = _sleeper(spawn_runtime)
    viewer = _sleeper(spawn_runtime, ["glxgears", "gears.py"])
    stub_nvml.set(
        Gpu(
            uuid="GPU-aaaa",
            utilization=(97, 40),
            compute={trainer.pid: 3 * GIB},
            process_util={trainer.pid: (87, 35)},
        ),
        Gpu(
            name="NVIDIA RTX A2000",
            uuid="GPU-bbbb",
            memory_total=12 * GIB,
            graphics={viewer.pid: 512 * 2**20},
            unsupported={PROCESS_UTILIZATION},
        ),
    )
    sensor.start()
    observations = sensor.poll()

    gpu0, gpu1 = _devices(observations)
    assert (gpu0.index, gpu0.uuid, gpu0.name) == (0, "GPU-aaaa", "NVIDIA H100 80GB HBM3")
    assert (gpu0.memory_total_bytes, gpu0.memory_used_bytes) == (80 * GIB, 3 * GIB)
    assert (gpu0.utilization_percent, gpu0.memory_utilization_percent, gpu0.process_count) == (97, 40, 1)
    assert (gpu1.index, gpu1.name, gpu1.memory_total_bytes) == (1, "NVIDIA RTX A2000", 12 * GIB)
    assert gpu1.unsupported == (PROCESS_UTILIZATION,)

    by_pid = {o.process.pid: o for o in _processes(observations)}
    assert set(by_pid) == {trainer.pid, viewer.pid}
    t, v = by_pid[trainer.pid], by_pid[viewer.pid]
    real = psutil.Process(trainer.pid)
    assert t.process.cmdline == ("python3", "worker.py")
    assert t.process.create_time == pytest.approx(real.create_time())
    assert t.process.username == real.username()
    assert t.process.cwd == real.cwd()
    assert (t.gpu_index, t.gpu_uuid, t.context, t.used_memory_bytes) == (0, "GPU-aaaa", "compute", 3 * GIB)
    assert (t.sm_utilization_percent, t.memory_utilization_percent) == (87, 35)
    assert (v.gpu_index, v.context, v.used_memory_bytes, v.sm_utilization_percent) == (
        1,
        "graphics",
        512 * 2**20,
        None,
    )
    assert v.process.cmdline == ("glxgears", "gears.py")
    assert t.sampled_at == gpu0.sampled_at

    # NotSupported is remembered per GPU: only GPU 0 is asked again (pynvml: sizing call, then read).
    asked = stub_nvml.calls(PROCESS_UTILIZATION)
    sensor.poll()
    assert stub_nvml.calls(PROCESS_UTILIZATION) == asked + 2


def test_process_facts_come_from_proc_maps_and_open_files(
    stub_nvml: NvmlStub, sensor: GpuSensor, spawn_runtime: SpawnRuntime, tmp_path: Path
) -> None:
    lib = tmp_path / "libtorch_cuda.so"
    lib.write_bytes(b"\x7fELF" + bytes(4096))
    out = tmp_path / "out" / "checkpoint-100"
    out.mkdir(parents=True)
    proc = _sleeper(spawn_runtime, maps=[lib], writes=[out / "optimizer.pt"])
    stub_nvml.set(Gpu(compute={proc.pid: GIB}))
    (obs,) = _processes(sensor.poll())
    assert obs.process.libraries == ("libtorch_cuda.so",)
    assert str(out / "optimizer.pt") in obs.process.written_files


def test_a_pid_that_vanished_or_is_killed_between_polls_is_left_out(
    stub_nvml: NvmlStub, sensor: GpuSensor, spawn_runtime: SpawnRuntime
) -> None:
    live = _sleeper(spawn_runtime)
    going = _sleeper(spawn_runtime)
    gone = _dead_pid()  # NVML still lists it: it exited between NVML's list and /proc
    stub_nvml.set(Gpu(compute={gone: GIB, live.pid: GIB, going.pid: GIB, NO_SUCH_PID: GIB}))
    first = sensor.poll()
    assert sorted(_pids(first)) == sorted([live.pid, going.pid])
    assert _devices(first)[0].process_count == 4  # what NVML said
    going.kill()
    going.wait()
    assert _pids(sensor.poll()) == [live.pid]  # NVML still lists it; /proc no longer has it
    assert sensor.status().state is not SensorState.INACTIVE
    assert _trouble(sensor) == ""


@pytest.mark.parametrize("field", [MEMORY, UTILIZATION, PROCESS_UTILIZATION])
def test_a_field_a_gpu_does_not_support_is_none_and_not_asked_again(
    stub_nvml: NvmlStub, sensor: GpuSensor, spawn_runtime: SpawnRuntime, field: str
) -> None:
    proc = _sleeper(spawn_runtime)
    stub_nvml.set(
        Gpu(
            compute={proc.pid: GIB},
            utilization=(50, 5),
            process_util={proc.pid: (40, 4)},
            unsupported={field},
        )
    )
    observations = sensor.poll()
    asked = stub_nvml.calls(field)
    assert asked >= 1
    for _ in range(2):
        observations = sensor.poll()
    assert stub_nvml.calls(field) == asked  # it will not start being supported
    (gpu,) = _devices(observations)
    (obs,) = _processes(observations)
    assert gpu.unsupported == (field,)
    memory = (gpu.memory_total_bytes, gpu.memory_used_bytes)
    assert memory == ((None, None) if field == MEMORY else (80 * GIB, GIB))
    rates = (gpu.utilization_percent, gpu.memory_utilization_percent)
    assert rates == ((None, None) if field == UTILIZATION else (50, 5))
    samples = (obs.sm_utilization_percent, obs.memory_utilization_percent)
    assert samples == ((None, None) if field == PROCESS_UTILIZATION else (40, 4))
    assert obs.used_memory_bytes == GIB
    assert _trouble(sensor) == ""  # NotSupported is no problem


def test_with_nothing_supported_and_no_memory_figure_the_gpu_and_process_are_still_reported(
    stub_nvml: NvmlStub, sensor: GpuSensor, spawn_runtime: SpawnRuntime
) -> None:
    proc = _sleeper(spawn_runtime)
    stub_nvml.set(Gpu(compute={proc.pid: None}, unsupported={UTILIZATION, MEMORY, PROCESS_UTILIZATION}))
    observations = sensor.poll()
    (gpu,) = _devices(observations)
    assert (gpu.memory_total_bytes, gpu.memory_used_bytes, gpu.utilization_percent) == (None, None, None)
    assert set(gpu.unsupported) == {UTILIZATION, MEMORY, PROCESS_UTILIZATION}
    (obs,) = _processes(observations)
    assert obs.used_memory_bytes is None  # NVML_VALUE_NOT_AVAILABLE
    assert sensor.status().state is not SensorState.INACTIVE
    assert "lost" not in sensor.status().reason


def test_utilisation_samples_already_read_are_not_counted_again(
    stub_nvml: NvmlStub, sensor: GpuSensor, spawn_runtime: SpawnRuntime
) -> None:
    proc = _sleeper(spawn_runtime)
    stamp = int(time.time() * 1e6)
    gpu = Gpu(compute={proc.pid: GIB}, process_util={proc.pid: (60, 30)}, sample_stamp=stamp)
    stub_nvml.set(gpu)
    (first,) = _processes(sensor.poll())
    assert first.sm_utilization_percent == 60
    (again,) = _processes(sensor.poll())  # NVML is asked for samples after `stamp`: NOT_FOUND
    assert again.sm_utilization_percent is None
    assert _trouble(sensor) == ""  # NOT_FOUND is "no new samples", not an error
    gpu.process_util, gpu.sample_stamp = {proc.pid: (20, 10)}, stamp + 1_000_000
    stub_nvml.write()
    (newer,) = _processes(sensor.poll())
    assert (newer.sm_utilization_percent, newer.memory_utilization_percent) == (20, 10)


def test_processes_that_start_while_nvml_lists_them_are_caught_by_the_sizing_retry(
    stub_nvml: NvmlStub, sensor: GpuSensor, spawn_runtime: SpawnRuntime
) -> None:
    procs = [_sleeper(spawn_runtime) for _ in range(3)]
    # The sizing call counts one process; two more start before pynvml's second call, which has
    # room for 2 * 1 + 5 and gets all three.
    stub_nvml.set(Gpu(compute={p.pid: GIB for p in procs}, late=2))
    asked = stub_nvml.calls(COMPUTE_V3)
    observations = sensor.poll()
    assert stub_nvml.calls(COMPUTE_V3) - asked == 2
    assert sorted(_pids(observations)) == sorted(p.pid for p in procs)
    assert _devices(observations)[0].process_count == 3


def test_more_new_processes_than_the_retry_has_room_for_leave_that_gpu_out_for_a_poll(
    stub_nvml: NvmlStub, sensor: GpuSensor, spawn_runtime: SpawnRuntime
) -> None:
    a, b = _sleeper(spawn_runtime), _sleeper(spawn_runtime)
    burst = Gpu(uuid="GPU-aaaa", compute={a.pid: GIB, **{NO_SUCH_PID + i: GIB for i in range(7)}}, late=7)
    stub_nvml.set(burst, Gpu(uuid="GPU-bbbb", compute={b.pid: GIB}))
    observations = sensor.poll()  # 1 counted, 8 by the second call: more than 2 * 1 + 5
    assert [g.uuid for g in _devices(observations)] == ["GPU-bbbb"]
    assert _pids(observations) == [b.pid]
    status = sensor.status()
    assert (status.state, status.reason) == (SensorState.DEGRADED, "GPU 0: Insufficient Size")

    burst.late = 0  # the burst is over: the sizing call counts them all
    stub_nvml.write()
    observations = sensor.poll()
    assert [g.uuid for g in _devices(observations)] == ["GPU-aaaa", "GPU-bbbb"]
    assert sorted(_pids(observations)) == sorted([a.pid, b.pid])
    assert _trouble(sensor) == ""


def test_a_gpu_lost_mid_poll_degrades_the_sensor_and_the_other_gpu_is_still_read(
    stub_nvml: NvmlStub, sensor: GpuSensor, spawn_runtime: SpawnRuntime
) -> None:
    a, b = _sleeper(spawn_runtime), _sleeper(spawn_runtime)
    second = Gpu(uuid="GPU-bbbb", compute={b.pid: GIB})
    stub_nvml.set(Gpu(uuid="GPU-aaaa", compute={a.pid: GIB}), second)
    sensor.start()
    assert [g.uuid for g in _devices(sensor.poll())] == ["GPU-aaaa", "GPU-bbbb"]

    # GPU 1 falls off the bus after its memory and utilisation were read, at its process list.
    second.lost_from = "nvmlDeviceGetComputeRunningProcesses"
    stub_nvml.write()
    observations = sensor.poll()
    assert [g.uuid for g in _devices(observations)] == ["GPU-aaaa"]
    assert _pids(observations) == [a.pid]
    status = sensor.status()
    assert status.state is SensorState.DEGRADED
    assert status.reason == "GPU 1: GPU is lost"
    assert [g.uuid for g in _devices(sensor.poll())] == ["GPU-aaaa"]  # still lost

    handles = stub_nvml.calls("nvmlDeviceGetHandleByIndex_v2")
    second.lost_from = ""  # reset by the administrator
    stub_nvml.write()
    observations = sensor.poll()
    assert [g.uuid for g in _devices(observations)] == ["GPU-aaaa", "GPU-bbbb"]
    assert sorted(_pids(observations)) == sorted([a.pid, b.pid])
    assert stub_nvml.calls("nvmlDeviceGetHandleByIndex_v2") == handles + 1  # a fresh handle for GPU 1
    assert "lost" not in sensor.status().reason


def test_a_driver_failing_mid_run_degrades_and_recovers_with_a_new_session(
    stub_nvml: NvmlStub, sensor: GpuSensor, spawn_runtime: SpawnRuntime
) -> None:
    proc = _sleeper(spawn_runtime)
    gpu = Gpu(compute={proc.pid: GIB})
    stub_nvml.set(gpu)
    sensor.start()
    inits = stub_nvml.calls("nvmlInitWithFlags")
    assert _processes(sensor.poll())

    stub_nvml.set(gpu, driver="failing")
    assert sensor.poll() == []
    status = sensor.status()
    assert (status.state, status.reason) == (SensorState.DEGRADED, "NVML: Unknown Error")
    assert stub_nvml.inits() == 0  # the broken session was shut down
    assert sensor.poll() == []  # still failing: a new nvmlInit fails too
    assert sensor.status().reason == "NVML failed to initialise: Unknown Error"

    stub_nvml.set(gpu)
    assert _pids(sensor.poll()) == [proc.pid]
    assert stub_nvml.calls("nvmlInitWithFlags") - inits == 2  # the failed re-init, and the good one
    assert stub_nvml.inits() == 1
    assert _trouble(sensor) == ""


def test_a_sensor_error_never_escapes_into_the_pipeline(
    stub_nvml: NvmlStub, spawn_runtime: SpawnRuntime
) -> None:
    proc = _sleeper(spawn_runtime)
    stub_nvml.set(Gpu(compute={proc.pid: GIB}, lost_from="nvmlDeviceGetHandleByIndex"))
    pipeline = Pipeline([GpuSensor(interval=0.0)], [], Policy(), FindingTracker("h"))
    pipeline.start()
    assert pipeline.poll() == []
    (status,) = pipeline.statuses()
    assert (status.state, status.reason) == (SensorState.DEGRADED, "GPU 0: GPU is lost")
    pipeline.stop()


OLD_DRIVER_CHILD = """
import json, pynvml
from agent.observations import GpuProcessObservation
from agent.sensors.gpu import GpuSensor

sensor = GpuSensor(interval=0.0)
sensor.start()
seen = [[o.process.pid, o.context, o.used_memory_bytes] for o in sensor.poll()
        if isinstance(o, GpuProcessObservation)]
reason = sensor.status().reason
print(json.dumps({"driver": pynvml.nvmlSystemGetDriverVersion(), "seen": seen,
                  "reason": "" if reason.startswith("not root") else reason}))
sensor.stop()
"""


def test_an_older_driver_falls_back_to_the_v2_process_lists(
    old_driver_stub_dir: Path, spawn_runtime: SpawnRuntime, tmp_path: Path
) -> None:
    # A libnvidia-ml without the _v3 process calls, put first on LD_LIBRARY_PATH of a child.
    trainer, viewer = _sleeper(spawn_runtime), _sleeper(spawn_runtime, ["glxgears", "gears.py"])
    stub = NvmlStub(tmp_path / "nvml.state")
    stub.set(Gpu(compute={trainer.pid: 2 * GIB}, graphics={viewer.pid: None}))
    doc = _child(OLD_DRIVER_CHILD, child_env(old_driver_stub_dir, stub.path))
    assert doc["driver"] == DRIVER_VERSION
    seen = {tuple(entry) for entry in doc["seen"]}
    assert seen == {(trainer.pid, "compute", 2 * GIB), (viewer.pid, "graphics", None)}
    assert doc["reason"] == ""


def test_reads_are_spaced_by_the_interval_and_stop_shuts_nvml_down(
    stub_nvml: NvmlStub, spawn_runtime: SpawnRuntime
) -> None:
    proc = _sleeper(spawn_runtime)
    stub_nvml.set(Gpu(compute={proc.pid: GIB}))
    sensor = GpuSensor(interval=3600.0)
    sensor.start()
    assert stub_nvml.inits() == 1
    assert sensor.poll()
    counted = stub_nvml.calls()
    assert sensor.poll() == []  # too soon: the process sensor's rhythm is faster than NVML's
    assert stub_nvml.calls() == counted  # and NVML was not asked
    sensor.stop()
    assert stub_nvml.inits() == 0
    assert pynvml._nvmlLib_refcount == 0


def test_a_process_on_two_gpus_is_read_from_proc_once(
    stub_nvml: NvmlStub, sensor: GpuSensor, spawn_runtime: SpawnRuntime
) -> None:
    proc = _sleeper(spawn_runtime)
    stub_nvml.set(Gpu(uuid="GPU-a", compute={proc.pid: GIB}), Gpu(uuid="GPU-b", compute={proc.pid: 2 * GIB}))
    observations = _processes(sensor.poll())
    assert [(o.gpu_uuid, o.used_memory_bytes) for o in observations] == [("GPU-a", GIB), ("GPU-b", 2 * GIB)]
    assert observations[0].process is observations[1].process  # /proc read once per poll


# --- configuration and wiring ---------------------------------------------------------------------


def test_gpu_section_is_read_checked_and_wired(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("[sensors.gpu]\ninterval = 2\nsustained_seconds = 120\nsustained_samples = 8\n")
    config = load_config(path)
    assert (config.sensors.gpu.interval, config.sensors.gpu.sustained_seconds) == (2.0, 120.0)
    pipeline = build_pipeline(config, FindingTracker("h"))
    assert [s.name for s in pipeline.sensors][:2] == ["process", "gpu"]
    finetune = next(d for d in pipeline.detectors if isinstance(d, FineTuningDetector))
    assert (finetune.usage.window, finetune.usage.min_samples) == (120.0, 8)
    assert any(isinstance(d, GpuWorkloadDetector) for d in pipeline.detectors)

    path.write_text("[sensors.gpu]\nenabled = false\n")
    pipeline = build_pipeline(load_config(path), FindingTracker("h"))
    assert "gpu" not in [s.name for s in pipeline.sensors]
    assert any(isinstance(d, FineTuningDetector) for d in pipeline.detectors)  # CPU training still seen


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("interval = 0", "[sensors.gpu] interval"),
        ("sustained_samples = 1", "[sensors.gpu] sustained_samples"),
        ("sustained_utilization = 101", "[sensors.gpu] sustained_utilization"),
        ("sustained_secs = 60", "unknown key 'sustained_secs'"),
    ],
)
def test_gpu_section_refuses_bad_values(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f"[sensors.gpu]\n{text}\n")
    with pytest.raises(ConfigError, match=re.escape(problem)):
        load_config(path)

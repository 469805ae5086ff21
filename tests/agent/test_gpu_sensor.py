"""The GPU sensor: a fake NVML at the hardware boundary, real processes and the real /proc behind it."""

from __future__ import annotations

import ctypes.util
import logging
import re
import subprocess
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import SpawnRuntime
from fake_nvml import (
    NVML_ERROR_DRIVER_NOT_LOADED,
    NVML_ERROR_NO_PERMISSION,
    NVML_ERROR_UNKNOWN,
    FakeGpu,
    FakeNvml,
)

from agent.config import ConfigError, load_config
from agent.daemon import build_pipeline
from agent.detection.finetune import FineTuningDetector
from agent.detection.gpu import GpuWorkloadDetector
from agent.findings import FindingTracker
from agent.nvml import PROCESS_UTILIZATION, UTILIZATION
from agent.observations import GpuDeviceObservation, GpuProcessObservation, Observation
from agent.pipeline import Pipeline
from agent.policy import Policy
from agent.sensors.base import SensorState
from agent.sensors.gpu import GpuSensor

GIB = 2**30


def _sensor(fake: Any, **kwargs: Any) -> GpuSensor:
    return GpuSensor(lambda: fake, interval=0.0, **kwargs)


def _devices(observations: list[Observation] | Any) -> list[GpuDeviceObservation]:
    return [o for o in observations if isinstance(o, GpuDeviceObservation)]


def _processes(observations: list[Observation] | Any) -> list[GpuProcessObservation]:
    return [o for o in observations if isinstance(o, GpuProcessObservation)]


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _sleeper(spawn: SpawnRuntime, argv: list[str] | None = None, **kwargs: Any) -> subprocess.Popen[str]:
    return spawn(argv or ["python3", "worker.py"], **kwargs)


# --- no NVML ------------------------------------------------------------------------------------


@pytest.mark.skipif(ctypes.util.find_library("nvidia-ml") is not None, reason="this host has NVML")
def test_without_a_driver_the_real_binding_makes_the_sensor_inactive_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sensor = GpuSensor()  # the real pynvml, and no libnvidia-ml.so.1 here
    pipeline = Pipeline([sensor], [], Policy(), FindingTracker("h"))
    with caplog.at_level(logging.DEBUG):
        (status,) = pipeline.start()
        assert pipeline.poll() == []
        assert pipeline.poll() == []
    assert status.state is SensorState.INACTIVE
    assert status.reason.startswith("no NVIDIA driver/NVML")
    assert pipeline.statuses() == [status]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    pipeline.stop()


def test_driver_not_loaded_is_probed_once_and_reported_inactive() -> None:
    fake = FakeNvml(init_error=NVML_ERROR_DRIVER_NOT_LOADED)
    sensor = _sensor(fake)
    states = {sensor.status() for _ in range(5)}
    assert len(states) == 1
    (status,) = states
    assert status.state is SensorState.INACTIVE
    assert status.reason == "no NVIDIA driver/NVML (Driver Not Loaded)"
    assert fake.calls["nvmlInit"] == 1


def test_a_driver_that_appears_later_is_found_by_the_reprobe() -> None:
    fake = FakeNvml(init_error=NVML_ERROR_DRIVER_NOT_LOADED)
    sensor = _sensor(fake, reprobe_interval=0.0)
    assert sensor.status().state is SensorState.INACTIVE
    fake.init_error = None
    assert sensor.status().state is not SensorState.INACTIVE
    assert _devices(sensor.poll())


def test_binding_not_installed_is_inactive() -> None:
    def missing() -> Any:
        raise ImportError("No module named 'pynvml'")

    status = GpuSensor(missing).status()
    assert status.state is SensorState.INACTIVE
    assert "no NVIDIA driver/NVML" in status.reason and "nvidia-ml-py" in status.reason


def test_other_init_failures_say_what_failed() -> None:
    status = _sensor(FakeNvml(init_error=NVML_ERROR_NO_PERMISSION)).status()
    assert status.state is SensorState.INACTIVE
    assert status.reason == "NVML failed to initialise: Insufficient Permissions"


# --- what a poll reports ------------------------------------------------------------------------


def test_gpus_and_processes_are_attributed_to_real_processes(spawn_runtime: SpawnRuntime) -> None:
    trainer = _sleeper(spawn_runtime)
    viewer = _sleeper(spawn_runtime, ["glxgears", "gears.py"])
    fake = FakeNvml(
        [
            FakeGpu(
                uuid="GPU-aaaa",
                utilization=(97, 40),
                compute={trainer.pid: 3 * GIB},
                process_util={trainer.pid: (87, 35)},
            ),
            FakeGpu(
                name="NVIDIA RTX A2000",
                uuid="GPU-bbbb",
                memory_total=12 * GIB,
                graphics={viewer.pid: 512 * 2**20},
                unsupported={PROCESS_UTILIZATION},
            ),
        ]
    )
    sensor = _sensor(fake)
    sensor.start()
    observations = sensor.poll()

    gpu0, gpu1 = _devices(observations)
    assert (gpu0.index, gpu0.uuid, gpu0.name) == (0, "GPU-aaaa", "NVIDIA H100 80GB HBM3")
    assert (gpu0.memory_total_bytes, gpu0.memory_used_bytes) == (80 * GIB, 3 * GIB)
    assert (gpu0.utilization_percent, gpu0.memory_utilization_percent, gpu0.process_count) == (97, 40, 1)
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
    assert t.sampled_at == gpu0.sampled_at

    # NotSupported is remembered per GPU: not asked again.
    asked = fake.calls["nvmlDeviceGetProcessUtilization"]
    sensor.poll()
    assert fake.calls["nvmlDeviceGetProcessUtilization"] == asked + 1  # GPU 0 only


def test_process_facts_come_from_proc_maps_and_open_files(
    spawn_runtime: SpawnRuntime, tmp_path: Path
) -> None:
    lib = tmp_path / "libtorch_cuda.so"
    lib.write_bytes(b"\x7fELF" + bytes(4096))
    out = tmp_path / "out" / "checkpoint-100"
    out.mkdir(parents=True)
    proc = _sleeper(spawn_runtime, maps=[lib], writes=[out / "optimizer.pt"])
    fake = FakeNvml([FakeGpu(compute={proc.pid: GIB})])
    (obs,) = _processes(_sensor(fake).poll())
    assert obs.process.libraries == ("libtorch_cuda.so",)
    assert str(out / "optimizer.pt") in obs.process.written_files


def test_a_pid_that_vanished_is_left_out(spawn_runtime: SpawnRuntime) -> None:
    live = _sleeper(spawn_runtime)
    going = _sleeper(spawn_runtime)
    gone = _dead_pid()  # NVML still lists it: it exited between NVML's list and /proc
    fake = FakeNvml([FakeGpu(compute={gone: GIB, live.pid: GIB, going.pid: GIB})])
    sensor = _sensor(fake)
    assert {o.process.pid for o in _processes(sensor.poll())} == {live.pid, going.pid}
    going.kill()
    going.wait()
    assert {o.process.pid for o in _processes(sensor.poll())} == {live.pid}
    assert sensor.status().state is not SensorState.INACTIVE


def test_a_field_a_gpu_does_not_support_is_none_and_the_rest_is_read(spawn_runtime: SpawnRuntime) -> None:
    proc = _sleeper(spawn_runtime)
    fake = FakeNvml(
        [
            FakeGpu(
                compute={proc.pid: None},
                unsupported={UTILIZATION, "nvmlDeviceGetMemoryInfo", PROCESS_UTILIZATION},
            )
        ]
    )
    sensor = _sensor(fake)
    observations = sensor.poll()
    (gpu,) = _devices(observations)
    assert (gpu.memory_total_bytes, gpu.memory_used_bytes, gpu.utilization_percent) == (None, None, None)
    assert set(gpu.unsupported) == {UTILIZATION, "nvmlDeviceGetMemoryInfo", PROCESS_UTILIZATION}
    (obs,) = _processes(observations)
    assert obs.used_memory_bytes is None  # NVML_VALUE_NOT_AVAILABLE
    assert "lost" not in sensor.status().reason
    assert sensor.status().state is not SensorState.INACTIVE


def test_a_gpu_lost_mid_poll_degrades_the_sensor_and_the_other_gpu_is_still_read(
    spawn_runtime: SpawnRuntime,
) -> None:
    a, b = _sleeper(spawn_runtime), _sleeper(spawn_runtime)
    fake = FakeNvml(
        [
            FakeGpu(uuid="GPU-aaaa", compute={a.pid: GIB}),
            FakeGpu(uuid="GPU-bbbb", compute={b.pid: GIB}, lost_at="nvmlDeviceGetComputeRunningProcesses"),
        ]
    )
    sensor = _sensor(fake)
    sensor.start()
    observations = sensor.poll()
    assert [g.uuid for g in _devices(observations)] == ["GPU-aaaa"]
    assert [o.process.pid for o in _processes(observations)] == [a.pid]
    status = sensor.status()
    assert status.state is SensorState.DEGRADED
    assert status.reason == "GPU 1: GPU is lost"

    fake.gpus[1].lost, fake.gpus[1].lost_at = False, ""  # reset by the administrator
    observations = sensor.poll()
    assert [g.uuid for g in _devices(observations)] == ["GPU-aaaa", "GPU-bbbb"]
    assert "lost" not in sensor.status().reason


def test_a_driver_failing_mid_run_degrades_and_recovers(spawn_runtime: SpawnRuntime) -> None:
    proc = _sleeper(spawn_runtime)
    fake = FakeNvml([FakeGpu(compute={proc.pid: GIB})])
    sensor = _sensor(fake)
    sensor.start()
    assert _processes(sensor.poll())
    fake.read_error = NVML_ERROR_UNKNOWN
    assert sensor.poll() == []
    status = sensor.status()
    assert (status.state, status.reason) == (SensorState.DEGRADED, "NVML: Unknown Error")
    fake.read_error = None
    assert _processes(sensor.poll())
    assert fake.calls["nvmlInit"] == 2  # a fresh session after the failure
    assert sensor.status().reason != "NVML: Unknown Error"


def test_a_sensor_error_never_escapes_into_the_pipeline(spawn_runtime: SpawnRuntime) -> None:
    proc = _sleeper(spawn_runtime)
    fake = FakeNvml([FakeGpu(compute={proc.pid: GIB}, lost_at="nvmlDeviceGetHandleByIndex")])
    pipeline = Pipeline([_sensor(fake)], [], Policy(), FindingTracker("h"))
    pipeline.start()
    pipeline.poll()
    (status,) = pipeline.statuses()
    assert (status.state, status.reason) == (SensorState.DEGRADED, "GPU 0: GPU is lost")


def test_an_older_driver_falls_back_to_the_v2_process_list(spawn_runtime: SpawnRuntime) -> None:
    proc = _sleeper(spawn_runtime)

    class OldDriver(FakeNvml):
        def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeGpu) -> list[Any]:
            raise self.NVMLLibraryMismatchError("Unversioned function called")

        def nvmlDeviceGetComputeRunningProcesses_v2(self, handle: FakeGpu) -> list[Any]:
            return super().nvmlDeviceGetComputeRunningProcesses(handle)

    (obs,) = _processes(_sensor(OldDriver([FakeGpu(compute={proc.pid: GIB})])).poll())
    assert obs.process.pid == proc.pid


def test_reads_are_spaced_by_the_interval_and_stop_shuts_nvml_down(spawn_runtime: SpawnRuntime) -> None:
    proc = _sleeper(spawn_runtime)
    fake = FakeNvml([FakeGpu(compute={proc.pid: GIB})])
    sensor = GpuSensor(lambda: fake, interval=3600.0)
    sensor.start()
    assert sensor.poll()
    assert sensor.poll() == []  # too soon: the process sensor's rhythm is faster than NVML's
    sensor.stop()
    assert fake.initialised == 0


def test_a_process_on_two_gpus_is_read_from_proc_once(spawn_runtime: SpawnRuntime) -> None:
    proc = _sleeper(spawn_runtime)
    fake = FakeNvml(
        [FakeGpu(uuid="GPU-a", compute={proc.pid: GIB}), FakeGpu(uuid="GPU-b", compute={proc.pid: 2 * GIB})]
    )
    observations = _processes(_sensor(fake).poll())
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

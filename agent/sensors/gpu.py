"""GPU sensor: per-GPU and per-process memory and utilisation through NVML, attributed to processes.

Each poll reads every GPU (memory, utilisation, compute and graphics processes, per-process
utilisation samples where the GPU supports them) and, for every process holding a context,
the process's facts from /proc: name, executable, command line, user and working directory
once per process instance, the AI libraries and model files it maps every `facts_interval`
seconds (a PyTorch process maps hundreds of files; they do not change), and the files it
holds open for writing on every poll when it may be training (it maps AI or CUDA libraries,
or it is an interpreter): checkpoints are written in bursts. Each poll re-reads only the
start time of a known PID, to notice a reused one.

Without NVML (no NVIDIA driver, or nvidia-ml-py missing) the sensor is INACTIVE with the
reason, found once and then only re-probed every `reprobe_interval` seconds, silently: an
absent GPU is a fact about the host, not an error. A GPU that is lost mid-poll, a field a GPU
does not support, a process that exits between NVML's list and /proc: each is handled where
it happens and the rest of the poll goes on (see agent/system/nvml.py). Processes that NVML names
but /proc does not know (gone, or in another PID namespace) are left out.
"""

from __future__ import annotations

import platform
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import psutil

from agent.observations import GpuDeviceObservation, GpuProcessObservation, Observation, ProcessObservation
from agent.sensors.base import Sensor, SensorCapabilities, SensorState, SensorStatus
from agent.sensors.process.facts import MAX_FILES_PER_PROCESS, DeepFacts, describe_process
from agent.system import procfs
from agent.system.nvml import GpuRead, Nvml, NvmlUnavailable, load_pynvml
from agent.system.privileges import CAP_SYS_PTRACE, has_capability

_INTERPRETER = re.compile(r"python[0-9.]*w?|pypy[0-9.]*")
_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess)


@dataclass
class _Facts:
    process: ProcessObservation
    start: float  # the process's start, as read each poll to notice a reused pid
    deep_at: float  # monotonic time of the last maps/environment read


class GpuSensor(Sensor):
    name = "gpu"
    capabilities = SensorCapabilities(needs_root=True, platforms=("Linux", "Windows"))
    produces = (GpuDeviceObservation, GpuProcessObservation)

    def __init__(
        self,
        nvml_loader: Callable[[], Any] = load_pynvml,
        *,
        interval: float = 5.0,
        facts_interval: float = 30.0,
        reprobe_interval: float = 600.0,
        facts: DeepFacts | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._nvml = Nvml(nvml_loader)
        self._interval = interval
        self._facts_interval = facts_interval
        self._reprobe_interval = reprobe_interval
        self._deep = facts or DeepFacts()
        self._clock = clock
        self._unavailable: str | None = None  # why NVML cannot be used (INACTIVE), once probed
        self._probed_at: float | None = None
        self._problem = ""  # the last poll's trouble (a lost GPU, a failing driver): DEGRADED
        self._last_poll: float | None = None
        self._facts: dict[int, _Facts] = {}

    # --- lifecycle ------------------------------------------------------------------------------

    def status(self) -> SensorStatus:
        system = platform.system()
        if system not in self.capabilities.platforms:
            return SensorStatus(self.name, SensorState.INACTIVE, f"unsupported platform {system}")
        if self._probed_at is None or (
            self._unavailable is not None and time.monotonic() - self._probed_at >= self._reprobe_interval
        ):
            self._probe()  # once, then cheap: the answer is kept
        if self._unavailable is not None:
            return SensorStatus(self.name, SensorState.INACTIVE, self._unavailable)
        if self._problem:
            return SensorStatus(self.name, SensorState.DEGRADED, self._problem)
        if system == "Linux" and not has_capability(CAP_SYS_PTRACE):
            return SensorStatus(
                self.name,
                SensorState.DEGRADED,
                "not root: libraries and open files of other users' GPU processes are hidden",
            )
        return SensorStatus(self.name, SensorState.ACTIVE)

    def _probe(self) -> None:
        self._probed_at = time.monotonic()
        try:
            self._nvml.open()
        except NvmlUnavailable as exc:
            self._unavailable = str(exc)
        else:
            self._unavailable = None

    def start(self) -> None:
        if self._probed_at is None:
            self._probe()

    def stop(self) -> None:
        self._nvml.close()  # a later poll opens a new session
        self._facts.clear()

    # --- polling --------------------------------------------------------------------------------

    def poll(self) -> Sequence[Observation]:
        started = time.monotonic()
        if self._last_poll is not None and started - self._last_poll < self._interval:
            return []  # the pipeline's rhythm is the process sensor's; NVML is read less often
        self._last_poll = started
        try:
            self._nvml.open()
            read = self._nvml.read()
        except NvmlUnavailable as exc:
            self._problem = str(exc)  # a driver that went away mid-run: degraded, retried next poll
            return []
        self._problem = "; ".join(read.problems)
        stamp = self._clock()
        observations: list[Observation] = []
        live: set[int] = set()
        for gpu in read.gpus:
            observations.append(_device_observation(gpu, stamp))
            for proc in gpu.processes:
                facts = self._process_facts(proc.pid, started, refresh_writes=proc.pid not in live)
                if facts is None:
                    continue  # exited since NVML listed it, or not visible from this namespace
                live.add(proc.pid)
                observations.append(
                    GpuProcessObservation(
                        process=facts,
                        gpu_index=gpu.index,
                        gpu_uuid=gpu.uuid,
                        gpu_name=gpu.name,
                        used_memory_bytes=proc.used_memory_bytes,
                        sm_utilization_percent=proc.sm_utilization_percent,
                        memory_utilization_percent=proc.memory_utilization_percent,
                        context=proc.context,
                        sampled_at=stamp,
                    )
                )
        for pid in self._facts.keys() - live:
            del self._facts[pid]
        return observations

    def _process_facts(self, pid: int, now: float, refresh_writes: bool) -> ProcessObservation | None:
        cached = self._facts.get(pid)
        if not refresh_writes and cached is not None:
            return cached.process  # the same process on a second GPU, this poll
        start = _start_marker(pid)
        if start is None:
            self._facts.pop(pid, None)
            return None  # gone since NVML listed it
        if cached is None or cached.start != start:  # new, or a reused pid
            basic = describe_process(pid)
            if basic is None:
                self._facts.pop(pid, None)
                return None
            cached = _Facts(basic, start, deep_at=float("-inf"))
            self._facts[pid] = cached
        process = cached.process
        deep = now - cached.deep_at >= self._facts_interval
        # Checkpoints are written in bursts: the open files of a process that may train (it maps
        # AI or CUDA libraries, or is an interpreter) are read on every poll, others' with the maps.
        if deep or process.libraries or _INTERPRETER.fullmatch(process.name.lower()):
            reading, writing = procfs.open_files(pid)
            if deep:
                process = self._deep.read(process, (reading, writing))
                cached.deep_at = now
            writing = writing[:MAX_FILES_PER_PROCESS]
            if writing != process.written_files:
                process = replace(process, written_files=writing)
            cached.process = process
        return process


def _device_observation(gpu: GpuRead, stamp: float) -> GpuDeviceObservation:
    return GpuDeviceObservation(
        index=gpu.index,
        uuid=gpu.uuid,
        name=gpu.name,
        memory_total_bytes=gpu.memory_total_bytes,
        memory_used_bytes=gpu.memory_used_bytes,
        utilization_percent=gpu.utilization_percent,
        memory_utilization_percent=gpu.memory_utilization_percent,
        process_count=len(gpu.processes),
        sampled_at=stamp,
        unsupported=gpu.unsupported,
    )


def _start_marker(pid: int) -> float | None:
    """When the process started, in the cheapest form there is: on Linux the start time in
    clock ticks from /proc/PID/stat (one read), elsewhere psutil's create time. None: gone."""
    if sys.platform.startswith("linux"):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read(4096)
            return float(stat[stat.rindex(b")") + 2 :].split()[19])
        except (OSError, ValueError, IndexError):
            return None
    try:
        return float(psutil.Process(pid).create_time())
    except (*_GONE, psutil.AccessDenied):
        return None

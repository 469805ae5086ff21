"""A fake NVML at the hardware boundary: the pynvml functions Umbra's wrapper calls, nothing more.

Errors are pynvml's own classes (`pynvml.NVMLError(code)` builds the NVMLError_* subclass with
`.value`), so agent/nvml.py's real error handling runs. Only the driver is fake: GPUs, their
processes and utilisation samples are plain data a test sets and changes between polls.

Modelled: one or more GPUs; per-process `usedGpuMemory` (None for "not available"); per-process
utilisation samples newer than the caller's timestamp (NOT_FOUND when there are none);
NOT_SUPPORTED per call and per GPU; a GPU lost from some call on (GPU_IS_LOST from then on);
nvmlInit failing (no library, no driver); a driver that fails on the whole read.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml

NVMLError = pynvml.NVMLError
NVMLLibraryMismatchError = pynvml.NVMLLibraryMismatchError
NVML_ERROR_UNINITIALIZED = pynvml.NVML_ERROR_UNINITIALIZED
NVML_ERROR_NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED
NVML_ERROR_NO_PERMISSION = pynvml.NVML_ERROR_NO_PERMISSION
NVML_ERROR_NOT_FOUND = pynvml.NVML_ERROR_NOT_FOUND
NVML_ERROR_DRIVER_NOT_LOADED = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
NVML_ERROR_LIBRARY_NOT_FOUND = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
NVML_ERROR_FUNCTION_NOT_FOUND = pynvml.NVML_ERROR_FUNCTION_NOT_FOUND
NVML_ERROR_GPU_IS_LOST = pynvml.NVML_ERROR_GPU_IS_LOST
NVML_ERROR_UNKNOWN = pynvml.NVML_ERROR_UNKNOWN


@dataclass
class FakeGpu:
    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    memory_total: int = 80 * 2**30
    utilization: tuple[int, int] = (0, 0)  # (gpu %, memory %)
    compute: dict[int, int | None] = field(default_factory=dict)  # pid -> usedGpuMemory
    graphics: dict[int, int | None] = field(default_factory=dict)
    process_util: dict[int, tuple[int, int]] = field(default_factory=dict)  # pid -> (sm %, mem %)
    unsupported: set[str] = field(default_factory=set)  # NVML function names answering NOT_SUPPORTED
    lost_at: str = ""  # this call, and every call after it, answers GPU_IS_LOST
    lost: bool = False


class FakeNvml:
    """Stands in for the `pynvml` module: pass `lambda: fake` as the sensor's loader."""

    NVMLError = NVMLError
    NVMLLibraryMismatchError = NVMLLibraryMismatchError
    NVML_ERROR_UNINITIALIZED = NVML_ERROR_UNINITIALIZED
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_ERROR_NO_PERMISSION = NVML_ERROR_NO_PERMISSION
    NVML_ERROR_NOT_FOUND = NVML_ERROR_NOT_FOUND
    NVML_ERROR_DRIVER_NOT_LOADED = NVML_ERROR_DRIVER_NOT_LOADED
    NVML_ERROR_LIBRARY_NOT_FOUND = NVML_ERROR_LIBRARY_NOT_FOUND
    NVML_ERROR_FUNCTION_NOT_FOUND = NVML_ERROR_FUNCTION_NOT_FOUND
    NVML_ERROR_GPU_IS_LOST = NVML_ERROR_GPU_IS_LOST

    def __init__(self, gpus: list[FakeGpu] | None = None, init_error: int | None = None) -> None:
        self.gpus = gpus if gpus is not None else [FakeGpu()]
        self.init_error = init_error
        self.read_error: int | None = None  # nvmlDeviceGetCount fails with this (driver trouble)
        self.initialised = 0
        self.calls: Counter[str] = Counter()

    # --- session --------------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        self.calls["nvmlInit"] += 1
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.calls["nvmlShutdown"] += 1
        if self.initialised <= 0:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        self.initialised -= 1

    def nvmlDeviceGetCount(self) -> int:
        self._check("nvmlDeviceGetCount")
        if self.read_error is not None:
            raise NVMLError(self.read_error)
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        self._check("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self._gpu(self.gpus[index], "nvmlDeviceGetHandleByIndex")

    # --- one GPU --------------------------------------------------------------------------------

    def nvmlDeviceGetName(self, handle: FakeGpu) -> str:
        return self._gpu(handle, "nvmlDeviceGetName").name

    def nvmlDeviceGetUUID(self, handle: FakeGpu) -> str:
        return self._gpu(handle, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetMemoryInfo(self, handle: FakeGpu) -> Any:
        gpu = self._gpu(handle, "nvmlDeviceGetMemoryInfo")
        used = sum(m or 0 for m in {**gpu.graphics, **gpu.compute}.values())
        return SimpleNamespace(total=gpu.memory_total, free=gpu.memory_total - used, used=used)

    def nvmlDeviceGetUtilizationRates(self, handle: FakeGpu) -> Any:
        gpu = self._gpu(handle, "nvmlDeviceGetUtilizationRates")
        return SimpleNamespace(gpu=gpu.utilization[0], memory=gpu.utilization[1])

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeGpu) -> list[Any]:
        gpu = self._gpu(handle, "nvmlDeviceGetComputeRunningProcesses")
        return [_process(pid, used) for pid, used in gpu.compute.items()]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: FakeGpu) -> list[Any]:
        gpu = self._gpu(handle, "nvmlDeviceGetGraphicsRunningProcesses")
        return [_process(pid, used) for pid, used in gpu.graphics.items()]

    def nvmlDeviceGetProcessUtilization(self, handle: FakeGpu, timeStamp: int) -> list[Any]:
        gpu = self._gpu(handle, "nvmlDeviceGetProcessUtilization")
        now = int(time.time() * 1e6)  # NVML stamps samples with the CPU clock, in microseconds
        samples = [
            SimpleNamespace(pid=pid, timeStamp=now, smUtil=sm, memUtil=mem, encUtil=0, decUtil=0)
            for pid, (sm, mem) in gpu.process_util.items()
            if now > timeStamp
        ]
        if not samples:
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return samples

    # --- plumbing -------------------------------------------------------------------------------

    def _check(self, call: str) -> None:
        self.calls[call] += 1
        if self.initialised <= 0:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    def _gpu(self, gpu: FakeGpu, call: str) -> FakeGpu:
        self._check(call)
        if gpu.lost_at == call:
            gpu.lost = True
        if gpu.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        if call in gpu.unsupported:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return gpu


def _process(pid: int, used: int | None) -> Any:
    # pynvml turns NVML_VALUE_NOT_AVAILABLE into None; gpuInstanceId/computeInstanceId are MIG's.
    return SimpleNamespace(
        pid=pid, usedGpuMemory=used, gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF
    )

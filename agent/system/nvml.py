"""NVML, read defensively: the only module that talks to the NVIDIA driver.

The NVML binding (nvidia-ml-py's `pynvml`) is imported lazily, when the GPU sensor first
probes, and only once the driver's library loads, so a host without it, or without a driver,
costs a dlopen attempt and nothing else (glances imports lazily too). On machines without a
GPU the tests build a stand-in `libnvidia-ml.so.1` (tests/fixtures/nvml_stub.c), so the real
binding and the real error handling below run against it; the hardware boundary is the only
thing replaced.

Errors, as NVML defines them (`NVMLError.value` is the NVML_ERROR_* code):

- NOT_SUPPORTED / NO_PERMISSION on one field: that field is None, the GPU is still read, and
  the field is not asked again on that GPU (it will not start being supported).
- NOT_FOUND from process utilisation: no samples since the last read; not an error.
- GPU_IS_LOST (or any other error) on one GPU: that GPU is left out of this read and named in
  `NvmlRead.problems`; the other GPUs are read as usual.
- UNINITIALIZED, DRIVER_NOT_LOADED, LIBRARY_NOT_FOUND on the whole read: `NvmlUnavailable`.

Real call costs are the driver's: a few microseconds to a millisecond per call, more for
process utilisation on a busy GPU. Reading one GPU is six to seven calls.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

NO_NVML = "no NVIDIA driver/NVML"
NVML_SONAME = "libnvidia-ml.so.1"

#: NVML error codes (nvml.h). Read from the binding when it has them; these are the fallbacks.
_CODES = {
    "NVML_ERROR_UNINITIALIZED": 1,
    "NVML_ERROR_NOT_SUPPORTED": 3,
    "NVML_ERROR_NO_PERMISSION": 4,
    "NVML_ERROR_NOT_FOUND": 6,
    "NVML_ERROR_DRIVER_NOT_LOADED": 9,
    "NVML_ERROR_LIBRARY_NOT_FOUND": 12,
    "NVML_ERROR_FUNCTION_NOT_FOUND": 13,
    "NVML_ERROR_GPU_IS_LOST": 15,
}

#: Fields that may be unsupported on a GPU, by the name of the NVML call that reads them.
MEMORY = "nvmlDeviceGetMemoryInfo"
UTILIZATION = "nvmlDeviceGetUtilizationRates"
COMPUTE_PROCESSES = "nvmlDeviceGetComputeRunningProcesses"
GRAPHICS_PROCESSES = "nvmlDeviceGetGraphicsRunningProcesses"
PROCESS_UTILIZATION = "nvmlDeviceGetProcessUtilization"


class NvmlUnavailable(Exception):
    """NVML cannot be used on this host now; the message is the reason for an operator."""


def load_pynvml() -> Any:
    """The real binding, imported only when asked for (ImportError when not installed), and on
    Linux only once the driver's library loads: the binding is about 1 MiB of Python that a host
    without an NVIDIA driver would keep for nothing (NvmlUnavailable, as NVML itself would say)."""
    if sys.platform == "linux":
        try:
            ctypes.CDLL(NVML_SONAME)  # the name pynvml loads; kept loaded for it when present
        except OSError:
            raise NvmlUnavailable(f"{NO_NVML} (NVML Shared Library Not Found)") from None
    return importlib.import_module("pynvml")


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_memory_bytes: int | None  # None: NVML_VALUE_NOT_AVAILABLE (WDDM, MIG without privileges)
    context: str  # "compute" or "graphics" (a process with both is "compute")
    sm_utilization_percent: int | None = None  # mean of the samples since the last read
    memory_utilization_percent: int | None = None


@dataclass(frozen=True)
class GpuRead:
    index: int
    uuid: str
    name: str
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    utilization_percent: int | None
    memory_utilization_percent: int | None
    processes: tuple[GpuProcess, ...]
    unsupported: tuple[str, ...]  # NVML calls this GPU does not support (or does not allow us)


@dataclass(frozen=True)
class NvmlRead:
    gpus: tuple[GpuRead, ...]
    problems: tuple[str, ...] = ()  # "GPU 1: GPU is lost", one per GPU that could not be read


@dataclass
class _Device:
    handle: Any
    uuid: str
    name: str
    unsupported: set[str] = field(default_factory=set)
    last_sample_us: int = 0  # newest process-utilisation sample seen (NVML's CPU timestamp, µs)


class Nvml:
    """An initialised NVML session: `open()`, `read()` as often as wanted, `close()`."""

    def __init__(self, loader: Callable[[], Any] = load_pynvml) -> None:
        self._loader = loader
        self._lib: Any = None
        self._devices: dict[int, _Device] = {}

    @property
    def is_open(self) -> bool:
        return self._lib is not None

    def open(self) -> None:
        """Load the binding and initialise NVML; NvmlUnavailable with the reason when it cannot."""
        if self._lib is not None:
            return
        try:
            lib = self._loader()
        except ImportError as exc:
            raise NvmlUnavailable(f"{NO_NVML} (nvidia-ml-py not installed: {exc})") from None
        try:
            lib.nvmlInit()
        except lib.NVMLError as exc:
            code = _code(exc)
            if code in _codes(lib, "NVML_ERROR_LIBRARY_NOT_FOUND", "NVML_ERROR_DRIVER_NOT_LOADED"):
                raise NvmlUnavailable(f"{NO_NVML} ({_text(exc)})") from None
            raise NvmlUnavailable(f"NVML failed to initialise: {_text(exc)}") from None
        except OSError as exc:  # a broken libnvidia-ml (wrong architecture, missing symbol)
            raise NvmlUnavailable(f"{NO_NVML} ({exc})") from None
        self._lib = lib
        self._devices.clear()

    def close(self) -> None:
        lib, self._lib = self._lib, None
        self._devices.clear()
        if lib is not None:
            with contextlib.suppress(lib.NVMLError):  # a lost driver: nothing left to release
                lib.nvmlShutdown()

    def read(self) -> NvmlRead:
        """Every GPU's memory, utilisation and processes. NvmlUnavailable when NVML itself fails."""
        lib = self._lib
        if lib is None:
            raise NvmlUnavailable("NVML is not initialised")
        try:
            count = int(lib.nvmlDeviceGetCount())
        except lib.NVMLError as exc:
            self.close()  # the next open() starts afresh (a reloaded driver needs a new nvmlInit)
            raise NvmlUnavailable(f"NVML: {_text(exc)}") from None
        gpus: list[GpuRead] = []
        problems: list[str] = []
        for index in range(count):
            try:
                gpus.append(self._read_gpu(lib, index))
            except lib.NVMLError as exc:
                # GPU_IS_LOST, UNKNOWN, a reset in progress: this GPU only. Its handle may be stale.
                self._devices.pop(index, None)
                problems.append(f"GPU {index}: {_text(exc)}")
        return NvmlRead(tuple(gpus), tuple(problems))

    # --- one GPU ------------------------------------------------------------------------------

    def _device(self, lib: Any, index: int) -> _Device:
        device = self._devices.get(index)
        if device is None:
            handle = lib.nvmlDeviceGetHandleByIndex(index)
            device = _Device(handle, _str(lib.nvmlDeviceGetUUID(handle)), _str(lib.nvmlDeviceGetName(handle)))
            self._devices[index] = device
        return device

    def _read_gpu(self, lib: Any, index: int) -> GpuRead:
        device = self._device(lib, index)
        handle = device.handle
        memory = self._field(lib, device, MEMORY, lambda: lib.nvmlDeviceGetMemoryInfo(handle))
        rates = self._field(lib, device, UTILIZATION, lambda: lib.nvmlDeviceGetUtilizationRates(handle))
        processes = functools.partial(_processes, lib, handle)
        compute = self._field(lib, device, COMPUTE_PROCESSES, lambda: processes(COMPUTE_PROCESSES)) or []
        graphics = self._field(lib, device, GRAPHICS_PROCESSES, lambda: processes(GRAPHICS_PROCESSES)) or []
        utilization = self._process_utilization(lib, device)

        by_pid: dict[int, GpuProcess] = {}
        for context, entries in (("graphics", graphics), ("compute", compute)):
            for entry in entries:
                pid = int(entry.pid)
                used = _memory(entry.usedGpuMemory)
                earlier = by_pid.get(pid)
                if earlier is not None and earlier.used_memory_bytes is not None:
                    used = max(used or 0, earlier.used_memory_bytes)  # the same context, listed twice
                sm, mem = utilization.get(pid, (None, None))
                by_pid[pid] = GpuProcess(pid, used, context, sm, mem)
        return GpuRead(
            index=index,
            uuid=device.uuid,
            name=device.name,
            memory_total_bytes=int(memory.total) if memory is not None else None,
            memory_used_bytes=int(memory.used) if memory is not None else None,
            utilization_percent=int(rates.gpu) if rates is not None else None,
            memory_utilization_percent=int(rates.memory) if rates is not None else None,
            processes=tuple(by_pid[pid] for pid in sorted(by_pid)),
            unsupported=tuple(sorted(device.unsupported)),
        )

    def _field(self, lib: Any, device: _Device, name: str, call: Callable[[], Any]) -> Any:
        """One NVML call; None when this GPU does not support it (and it is not asked again)."""
        if name in device.unsupported:
            return None
        try:
            return call()
        except lib.NVMLError as exc:
            if _code(exc) in _codes(lib, "NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_NO_PERMISSION"):
                device.unsupported.add(name)
                return None
            raise

    def _process_utilization(self, lib: Any, device: _Device) -> dict[int, tuple[int, int]]:
        """pid -> (mean SM %, mean memory %) over the samples NVML took since the last read."""
        if PROCESS_UTILIZATION in device.unsupported:
            return {}
        try:
            samples = lib.nvmlDeviceGetProcessUtilization(device.handle, device.last_sample_us)
        except lib.NVMLError as exc:
            code = _code(exc)
            if code == _const(lib, "NVML_ERROR_NOT_FOUND"):
                return {}  # no sample since the last read: idle, or the sampler has not run yet
            if code in _codes(lib, "NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_NO_PERMISSION"):
                device.unsupported.add(PROCESS_UTILIZATION)
                return {}
            raise
        sums: dict[int, list[int]] = {}
        for sample in samples:
            pid = int(sample.pid)
            stamp = int(sample.timeStamp)
            if pid <= 0 or stamp <= device.last_sample_us:
                continue  # an unused slot in NVML's buffer, or a sample already counted
            acc = sums.setdefault(pid, [0, 0, 0])
            acc[0] += int(sample.smUtil)
            acc[1] += int(sample.memUtil)
            acc[2] += 1
        device.last_sample_us = max([device.last_sample_us, *(int(s.timeStamp) for s in samples)])
        return {pid: (round(sm / n), round(mem / n)) for pid, (sm, mem, n) in sums.items()}


def _processes(lib: Any, handle: Any, call: str) -> Any:
    """Compute or graphics processes, falling back to the v2 call on drivers older than the binding
    (they lack both `_v3` calls; pynvml raises NVMLLibraryMismatchError, not an NVMLError)."""
    mismatch = getattr(lib, "NVMLLibraryMismatchError", None)
    try:
        return getattr(lib, call)(handle)
    except Exception as exc:
        if mismatch is None or not isinstance(exc, mismatch):
            raise
        return getattr(lib, f"{call}_v2")(handle)


def _memory(value: Any) -> int | None:
    return None if value is None else int(value)


def _str(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _code(exc: BaseException) -> int:
    return int(getattr(exc, "value", -1))


def _const(lib: Any, name: str) -> int:
    return int(getattr(lib, name, _CODES[name]))


def _codes(lib: Any, *names: str) -> tuple[int, ...]:
    return tuple(_const(lib, name) for name in names)


def _text(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # pynvml's __str__ asks the library, which may be the thing that is broken
        text = ""
    return text or f"NVML error {_code(exc)}"

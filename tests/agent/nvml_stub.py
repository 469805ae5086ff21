"""NVML without a GPU: tests/fixtures/nvml_stub.c built as libnvidia-ml.so.1, for the real pynvml.

The stub is compiled with gcc once per test session and put first on the library path, in one
of two ways, so that nvidia-ml-py's own ctypes code and the agent's real `GpuSensor()` (default
loader, no fake module) run against it:

- in a child process: `LD_LIBRARY_PATH=<stub dir>` (`child_env`), read by the loader at start;
- in this process: `ctypes.CDLL(<stub>, RTLD_GLOBAL)` before pynvml's first `nvmlInit`; glibc's
  `dlopen("libnvidia-ml.so.1")` then returns the loaded library by its soname (`load_in_process`,
  which checks that pynvml really reaches the stub).

What the "hardware" looks like is a text file (see the C source), written by `NvmlStub` and
re-read by the stub on every call: a test changes the GPUs between polls with `set()`/`write()`.
In-process, `NvmlStub.calls()` and `.inits()` read the stub's call counters.

A test module takes the fixtures by naming them (pytest finds fixtures among a module's names;
an import would be flagged by ruff's F811 at every test that takes it as an argument):
`import nvml_stub`, then `stub_nvml = nvml_stub.stub_nvml` and the fixtures it depends on.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "fixtures" / "nvml_stub.c"
SONAME = "libnvidia-ml.so.1"
DRIVER_VERSION = "999.99-umbra-stub"
STATE_ENV = "UMBRA_NVML_STUB"
GIB = 2**30

_built: dict[tuple[Path, bool], Path] = {}
_loaded: ctypes.CDLL | None = None


def build(root: Path, *, old_driver: bool = False) -> Path:
    """The stub compiled into a directory of its own under `root` (once per process): that directory.

    old_driver: without the `_v3` process calls, as a driver older than the binding.
    """
    key = (root, old_driver)
    if key not in _built:
        compiler = shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            raise RuntimeError("a C compiler (gcc) is needed to build the stand-in libnvidia-ml.so.1")
        out = root / ("nvml-old-driver" if old_driver else "nvml")
        out.mkdir(parents=True, exist_ok=True)
        flags = ["-DUMBRA_STUB_NO_V3"] if old_driver else []
        command = [compiler, "-shared", "-fPIC", "-O2", "-Wall", f"-Wl,-soname,{SONAME}", *flags]
        subprocess.run([*command, "-o", str(out / SONAME), str(SOURCE)], check=True)
        _built[key] = out
    return _built[key]


def load_in_process(directory: Path) -> ctypes.CDLL:
    """Load the stub into this process, ahead of any libnvidia-ml, and check pynvml reaches it."""
    global _loaded
    if _loaded is not None:
        return _loaded
    import pynvml

    if pynvml.nvmlLib is not None:
        raise RuntimeError("pynvml loaded a libnvidia-ml before the stub: it cannot take its place now")
    lib = ctypes.CDLL(str(directory / SONAME), mode=ctypes.RTLD_GLOBAL)
    lib.umbraStubCalls.restype = ctypes.c_ulong
    lib.umbraStubCalls.argtypes = [ctypes.c_char_p]
    lib.umbraStubInits.restype = ctypes.c_int
    state = directory / "check.state"
    state.write_text(Gpu().lines(0))
    previous = os.environ.get(STATE_ENV)
    os.environ[STATE_ENV] = str(state)
    try:
        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
    finally:
        if previous is None:
            del os.environ[STATE_ENV]
        else:
            os.environ[STATE_ENV] = previous
    if version != DRIVER_VERSION:
        raise RuntimeError(f"pynvml reached a libnvidia-ml other than the stub (driver {version!r})")
    _loaded = lib
    return lib


def child_env(directory: Path, state: Path, **extra: str) -> dict[str, str]:
    """The environment of a child process that loads the stub in `directory` as its NVML."""
    path = os.environ.get("LD_LIBRARY_PATH")
    return {
        **os.environ,
        "LD_LIBRARY_PATH": f"{directory}:{path}" if path else str(directory),
        STATE_ENV: str(state),
        **extra,
    }


@dataclass
class Gpu:
    """One GPU as the stub shows it. Memory used is the processes' sum unless given."""

    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    memory_total: int = 80 * GIB
    memory_used: int | None = None
    utilization: tuple[int, int] = (0, 0)  # (gpu %, memory %)
    compute: dict[int, int | None] = field(default_factory=dict)  # pid -> used bytes (None: n/a)
    graphics: dict[int, int | None] = field(default_factory=dict)
    process_util: dict[int, tuple[int, int]] = field(default_factory=dict)  # pid -> (sm %, mem %)
    sample_stamp: int | None = None  # the samples' timestamp (µs); None: the time of each call
    late: int = 0  # the last `late` compute processes start between NVML's sizing and listing calls
    unsupported: set[str] = field(default_factory=set)  # NVML calls answering NOT_SUPPORTED
    lost: bool = False  # GPU_IS_LOST on every call
    lost_from: str = ""  # GPU_IS_LOST from this call on (until lost_from is cleared)

    def lines(self, index: int) -> str:
        used = self.memory_used
        if used is None:
            used = sum(m or 0 for m in {**self.graphics, **self.compute}.values())
        out = [
            f"gpu {index} {self.name.replace(' ', '_')} {self.uuid} {self.memory_total} {used} "
            f"{self.utilization[0]} {self.utilization[1]}"
        ]
        out += [f"proc {index} {pid} {_bytes(m)}" for pid, m in self.compute.items()]
        out += [f"gproc {index} {pid} {_bytes(m)}" for pid, m in self.graphics.items()]
        stamp = "" if self.sample_stamp is None else f" {self.sample_stamp}"
        out += [f"sample {index} {pid} {sm} {mem}{stamp}" for pid, (sm, mem) in self.process_util.items()]
        out += [f"unsupported {index} {call}" for call in sorted(self.unsupported)]
        if self.late:
            out.append(f"late {index} {self.late}")
        if self.lost:
            out.append(f"lost {index}")
        if self.lost_from:
            out.append(f"lost {index} {self.lost_from}")
        return "".join(line + "\n" for line in out)


class NvmlStub:
    """The stub's state file, and (in-process) its call counters.

    `driver`: "" (working), "missing" (DRIVER_NOT_LOADED at init), "noperm" (NO_PERMISSION at
    init) or "failing" (every call, nvmlInit included, answers UNKNOWN).
    """

    def __init__(self, path: Path, lib: ctypes.CDLL | None = None) -> None:
        self.path = path
        self.gpus: list[Gpu] = []
        self.driver = ""
        self._lib = lib

    def set(self, *gpus: Gpu, driver: str = "") -> None:
        self.gpus, self.driver = list(gpus), driver
        self.write()

    def write(self) -> None:
        """Replace the state file atomically: a reader in another process sees old or new."""
        text = "".join(gpu.lines(i) for i, gpu in enumerate(self.gpus))
        if self.driver:
            text += f"driver {self.driver}\n"
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(self.path)

    def calls(self, name: str | None = None) -> int:
        """How often this process called NVML function `name` (None: any) since the stub loaded."""
        assert self._lib is not None, "call counters are for the in-process stub"
        return int(self._lib.umbraStubCalls(name.encode() if name else None))

    def inits(self) -> int:
        """nvmlInit calls not yet undone by nvmlShutdown."""
        assert self._lib is not None, "the init count is the in-process stub's"
        return int(self._lib.umbraStubInits())


def _bytes(value: int | None) -> str:
    return "na" if value is None else str(value)


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def nvml_stub_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory holding the built libnvidia-ml.so.1 (what LD_LIBRARY_PATH names)."""
    return build(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def old_driver_stub_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stub of a driver older than the binding: no `_v3` process calls."""
    return build(tmp_path_factory.getbasetemp(), old_driver=True)


@pytest.fixture
def stub_nvml(nvml_stub_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NvmlStub]:
    """The stub loaded in this process, with a fresh state file (one idle GPU until set).

    Afterwards NVML is left shut down, as every test must leave it (pynvml keeps global state);
    a test that left it initialised fails here.
    """
    import pynvml

    lib = load_in_process(nvml_stub_dir)
    stub = NvmlStub(tmp_path / "nvml.state", lib)
    stub.set(Gpu())
    monkeypatch.setenv(STATE_ENV, str(stub.path))
    yield stub
    left = stub.inits()
    stub.set(Gpu())  # a working driver, so that what is left can be shut down
    while stub.inits() > 0:
        pynvml.nvmlShutdown()
    assert left == 0, f"the test left NVML initialised ({left} nvmlInit without nvmlShutdown)"

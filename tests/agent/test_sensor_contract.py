"""The sensor contract, in psutil's manner (its tests/test_contracts.py): one suite, every sensor.

Every sensor, on this platform, declares its schema (the observation types it yields, whose
fields are its columns, as an osquery table spec) and its capabilities; says whether it can run
here, cheaply and with a reason whenever it is not fully active; starts; yields only what its
schema declares, field by field; polls with bounded memory while what it watches keeps changing;
and stops, leaving no thread or descriptor behind.

Each sensor runs for real against what it watches: real processes, loopback sockets and
packets, model files in a watched directory, and the NVML stub of tests/fixtures/nvml_stub.c
behind the real pynvml. A sensor is added to the suite by one line in RIGS: its class and a
builder that returns it with a `stir`, the small change in the world that gives it something
new to see before each poll.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import pkgutil
import platform
import shutil
import socket
import subprocess
import threading
import time
import tracemalloc
import types
import typing
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nvml_stub
import pytest
from conftest import SpawnRuntime, port_or_free
from net_testkit import real_client_hello
from nvml_stub import Gpu, NvmlStub
from test_modelfiles_formats import make_gguf

import agent.sensors
from agent.catalog.runtimes import load_runtime_catalog
from agent.modelfiles import ModelFileInfo
from agent.observations import Observation
from agent.sensors.aitools.sensor import AiToolsSensor
from agent.sensors.base import Sensor, SensorCapabilities, SensorState, SensorStatus
from agent.sensors.files.sensor import FileSensor
from agent.sensors.gpu import GpuSensor
from agent.sensors.network.flows import FlowAnalyzer
from agent.sensors.network.sensor import NetworkSensor
from agent.sensors.network.socket_table import SocketTableSensor
from agent.sensors.process.sensor import ProcessSensor

# The NVML stub's fixtures, made this module's (pytest finds fixtures among a module's names).
nvml_stub_dir = nvml_stub.nvml_stub_dir
stub_nvml = nvml_stub.stub_nvml

POLLS = 100  # polls in the memory check, each after a stir
WARM_POLLS = 10  # polls before it measures: caches filled, first-poll work done
MAX_GROWTH = 1 << 20  # bytes still held after POLLS polls beyond what WARM_POLLS held: generous
SEE_TIMEOUT = 15.0  # seconds a sensor has to see its first stir


@dataclass
class Rig:
    sensor: Sensor
    stir: Callable[[], None]  # a change in the world for the sensor to see at its next poll
    name: str = ""  # its key in RIGS


@dataclass
class Bench:
    """What a rig builder may use: a scratch directory, clean-ups, and pytest's fixtures by name."""

    tmp_path: Path
    cleanup: contextlib.ExitStack
    request: pytest.FixtureRequest

    def fixture(self, name: str) -> Any:
        return self.request.getfixturevalue(name)


# --- the rigs: one builder per sensor -------------------------------------------------------------


def process_rig(bench: Bench) -> Rig:
    """A runtime (`ollama serve`) to follow; each stir starts and reaps a short-lived process."""
    spawn: SpawnRuntime = bench.fixture("spawn_runtime")
    spawn(["ollama", "serve"], listen=[f"127.0.0.1:{port_or_free(11434)}"])
    sensor = ProcessSensor(load_runtime_catalog().is_candidate)
    return Rig(sensor, lambda: subprocess.run(["true"], check=True))


def gpu_rig(bench: Bench) -> Rig:
    """One GPU running a real process; each stir has NVML name one more process that /proc does
    not know (gone, or in another PID namespace) beside it, as a busy GPU does."""
    stub: NvmlStub = bench.fixture("stub_nvml")
    spawn: SpawnRuntime = bench.fixture("spawn_runtime")
    worker = spawn(["python3", "train.py"])
    ghosts = iter(range(4_194_304, 8_388_608))  # above Linux's largest pid_max

    def stir() -> None:
        ghost = next(ghosts)
        stub.set(
            Gpu(
                utilization=(90, 40),
                compute={worker.pid: 4 * nvml_stub.GIB, ghost: nvml_stub.GIB},
                process_util={worker.pid: (85, 30)},
            )
        )

    stir()
    sensor = GpuSensor(interval=0.0, facts_interval=0.0)
    bench.cleanup.callback(sensor.stop)  # before the stub checks NVML was left shut down
    return Rig(sensor, stir)


def _loopback_server(bench: Bench, address: str) -> tuple[socket.socket, int]:
    """A listener that accepts and reads until each client closes, on its own thread."""
    listener = socket.create_server((address, 0))
    listener.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2.0)
                with contextlib.suppress(OSError):
                    while conn.recv(65536):
                        pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def close() -> None:
        done.set()
        thread.join(timeout=5)
        listener.close()

    bench.cleanup.callback(close)
    return listener, int(listener.getsockname()[1])


def capture_rig(bench: Bench) -> Rig:
    """Live capture on lo; each stir opens a connection that sends a real ClientHello naming a new
    watched host. A small flow table, so that the stirs go past its bound."""
    _, port = _loopback_server(bench, "127.0.0.1")
    count = iter(range(1_000_000))

    def stir() -> None:
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(real_client_hello(f"api{next(count)}.contract.example"))

    sensor = NetworkSensor(
        "lo",
        watch=lambda host: host.endswith(".contract.example"),
        analyzer=FlowAnalyzer(max_flows=16, idle_timeout=120.0),
    )
    return Rig(sensor, stir)


def socket_table_rig(bench: Bench) -> Rig:
    """Connections to an address a catalog name resolves to (an injected resolver); each stir
    opens one more and closes the oldest."""
    address = "127.0.0.79"  # an address no other test talks to
    _, port = _loopback_server(bench, address)
    sensor = SocketTableSensor(
        ["api.contract.example"],
        resolver=lambda name: [address] if name == "api.contract.example" else [],
        resolve_per_second=1000.0,
        capture_reason="contract test",
    )
    held: deque[socket.socket] = deque()

    def stir() -> None:
        held.append(socket.create_connection((address, port)))
        while len(held) > 2:
            held.popleft().close()

    def close_all() -> None:
        while held:
            held.popleft().close()

    bench.cleanup.callback(close_all)
    return Rig(sensor, stir)


def files_rig(bench: Bench) -> Rig:
    """A watched directory; each stir copies a real GGUF file in under a new name and deletes the
    oldest copy. Small bounds (models, tracked files), so that the stirs go past them."""
    models = bench.tmp_path / "models"
    models.mkdir()
    original, _ = make_gguf(bench.tmp_path / "tiny.gguf")
    copies: deque[Path] = deque()
    count = iter(range(1_000_000))

    def stir() -> None:
        copy = models / f"tiny-{next(count)}.gguf"
        shutil.copyfile(original, copy)
        copies.append(copy)
        while len(copies) > 8:
            copies.popleft().unlink()

    sensor = FileSensor(
        state_path=bench.tmp_path / "files.db",
        homes=[],
        paths=[str(models)],
        default_roots=False,
        scan_homes=False,
        media_prefixes=[str(bench.tmp_path / "media")],
        settle_seconds=0.1,
        max_models=16,
        max_tracked_files=32,
        find_writers=False,
    )
    return Rig(sensor, stir)


def aitools_rig(bench: Bench) -> Rig:
    """A home with a Cursor MCP configuration; each stir rewrites it with one more server (and
    drops the oldest), so every inventory sees a changed file. Inventories on every poll."""
    home = bench.tmp_path / "home" / "dev"
    config = home / ".cursor" / "mcp.json"
    config.parent.mkdir(parents=True)
    count = iter(range(1_000_000))
    names: deque[str] = deque()

    def stir() -> None:
        names.append(f"server-{next(count)}")
        while len(names) > 8:
            names.popleft()
        servers = {n: {"command": "npx", "args": ["-y", f"@modelcontextprotocol/{n}"]} for n in names}
        config.write_text(json.dumps({"mcpServers": servers}))

    sensor = AiToolsSensor(homes=[str(home)], interval=0.0, machine_wide=False)
    return Rig(sensor, stir)


#: Every sensor: its class and its rig. Adding a sensor to the contract is one line here.
RIGS: dict[str, tuple[type[Sensor], Callable[[Bench], Rig]]] = {
    "process": (ProcessSensor, process_rig),
    "gpu": (GpuSensor, gpu_rig),
    "network": (NetworkSensor, capture_rig),
    "socket_table": (SocketTableSensor, socket_table_rig),
    "files": (FileSensor, files_rig),
    "aitools": (AiToolsSensor, aitools_rig),
}
NEEDS_ROOT_HERE = {"network"}  # rigs that cannot run without root (packet capture)


@pytest.fixture(params=sorted(RIGS))
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    if request.param in NEEDS_ROOT_HERE and os.geteuid() != 0:
        pytest.skip("packet capture needs root (CAP_NET_RAW)")
    cls, build = RIGS[request.param]
    with contextlib.ExitStack() as cleanup:
        built = dataclasses.replace(build(Bench(tmp_path, cleanup, request)), name=request.param)
        assert type(built.sensor) is cls
        cleanup.callback(built.sensor.stop)  # stop() twice must be harmless: the tests stop it too
        yield built


# --- the schema, checked field by field -------------------------------------------------------------

OBSERVATION_TYPES = frozenset(
    t for member in typing.get_args(Observation) for t in (typing.get_args(member) or (member,))
)


def _hints(cls: type) -> dict[str, Any]:
    # ModelFileInfo is imported by agent.observations for type checking only.
    return typing.get_type_hints(cls, localns={"ModelFileInfo": ModelFileInfo})


def _violations(value: Any, hint: Any, where: str) -> list[str]:
    """How `value` breaks the type `hint` (a field's annotation); [] when it conforms."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return []
    if origin in (typing.Union, types.UnionType):
        options = [_violations(value, option, where) for option in typing.get_args(hint)]
        return [] if any(not o for o in options) else [f"{where}: {value!r} is not {hint}"]
    if origin is tuple:
        if not isinstance(value, tuple):
            return [f"{where}: {type(value).__name__}, not a tuple"]
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return [v for i, item in enumerate(value) for v in _violations(item, args[0], f"{where}[{i}]")]
        if len(args) != len(value):
            return [f"{where}: {len(value)} items, not {len(args)}"]
        pairs = enumerate(zip(value, args, strict=True))
        return [v for i, (item, a) in pairs for v in _violations(item, a, f"{where}[{i}]")]
    if origin is not None:  # a generic mapping (ModelFileInfo.extra): its container only
        return [] if isinstance(value, origin) else [f"{where}: {type(value).__name__}, not {hint}"]
    if hint is type(None):
        return [] if value is None else [f"{where}: {value!r} is not None"]
    if hint is float:  # PEP 484: an int is a float
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [f"{where}: {value!r} is not a float"]
    if hint is int and isinstance(value, bool):
        return [f"{where}: {value!r} is a bool, not an int"]
    if not isinstance(value, hint):
        return [f"{where}: {type(value).__name__}, not {hint.__name__}"]
    if dataclasses.is_dataclass(hint):
        hints = _hints(hint)
        return [
            v
            for f in dataclasses.fields(hint)
            for v in _violations(getattr(value, f.name), hints[f.name], f"{where}.{f.name}")
        ]
    return []


def _check_schema(sensor: Sensor, observations: object) -> None:
    assert isinstance(observations, list | tuple), f"poll() returned {type(observations).__name__}"
    for obs in observations:
        kind = type(obs).__name__
        assert isinstance(obs, sensor.produces), f"{sensor.name} yielded a {kind}, not in its schema"
        wrong = _violations(obs, type(obs), kind)
        assert not wrong, wrong


def _poll_until_seen(rig: Rig) -> list[Observation]:
    """Stir and poll until the sensor sees something (each poll's observations checked)."""
    deadline = time.monotonic() + SEE_TIMEOUT
    while True:
        rig.stir()
        observations = list(rig.sensor.poll())
        _check_schema(rig.sensor, observations)
        if observations:
            return observations
        assert time.monotonic() < deadline, f"{rig.sensor.name} saw nothing in {SEE_TIMEOUT:.0f} s"
        time.sleep(0.1)


# --- the contract -----------------------------------------------------------------------------------


def test_every_sensor_in_the_agent_is_in_the_suite() -> None:
    def subclasses(cls: type) -> set[type]:
        return {c for s in cls.__subclasses__() for c in {s, *subclasses(s)}}

    for module in pkgutil.walk_packages(agent.sensors.__path__, "agent.sensors."):
        importlib.import_module(module.name)
    found = {c for c in subclasses(Sensor) if c.__module__.startswith("agent.")}
    covered = {cls for cls, _ in RIGS.values()}
    assert found, "no sensor found under agent.sensors"
    assert found <= covered, f"sensors without a rig: {sorted(c.__name__ for c in found - covered)}"


def test_declares_its_schema_and_capabilities(rig: Rig) -> None:
    sensor = rig.sensor
    assert isinstance(sensor.name, str) and sensor.name
    caps = sensor.capabilities
    assert isinstance(caps, SensorCapabilities)
    assert isinstance(caps.needs_root, bool)
    assert caps.platforms and all(isinstance(p, str) for p in caps.platforms)
    assert platform.system() in caps.platforms, "every sensor runs on Linux"
    assert isinstance(sensor.produces, tuple) and sensor.produces, (
        "a schema names an observation type or more"
    )
    for cls in sensor.produces:
        assert cls in OBSERVATION_TYPES, f"{cls.__name__} is not an agent.observations.Observation"
        frozen = dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
        assert frozen, f"{cls.__name__} is not frozen data"
        assert set(_hints(cls)) >= {f.name for f in dataclasses.fields(cls)}, (
            f"{cls.__name__} has untyped fields"
        )


def test_status_is_cheap_repeatable_and_says_why(rig: Rig) -> None:
    sensor = rig.sensor
    status = sensor.status()
    assert isinstance(status, SensorStatus) and isinstance(status.state, SensorState)
    assert status.name == sensor.name and isinstance(status.reason, str)
    assert status.state is not SensorState.INACTIVE, f"{sensor.name} cannot run here: {status.reason}"
    assert status.state is SensorState.ACTIVE or status.reason, "a sensor not fully active says why"
    assert sensor.status() == status, "status() without a poll between says the same"


def test_starts_yields_its_schema_and_stops_clean(rig: Rig) -> None:
    sensor = rig.sensor
    threads = set(threading.enumerate())
    descriptors = _descriptors()
    sensor.start()
    status = sensor.status()
    assert status.name == sensor.name and status.state is not SensorState.INACTIVE, status.reason
    seen = _poll_until_seen(rig)
    assert {type(o) for o in seen} <= set(sensor.produces)
    sensor.stop()
    left = [t for t in threading.enumerate() if t not in threads and t.is_alive()]
    assert not left, f"threads left running after stop(): {[t.name for t in left]}"
    tcp = _tcp_sockets()  # the stirs' connections, not the sensor's
    left_open = {
        fd: target for fd, target in _descriptors().items() - descriptors.items() if target not in tcp
    }
    assert not left_open, f"descriptors left open after stop(): {left_open}"
    sensor.stop()  # a second stop is harmless


def _descriptors() -> dict[str, str]:
    """This process's open descriptors: number -> what they are."""
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
    return out


def _tcp_sockets() -> set[str]:
    """The TCP sockets of this network namespace, as /proc/self/fd names them ("socket:[inode]")."""
    found = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/self/net/{table}") as lines:
            next(lines)
            found |= {f"socket:[{line.split()[9]}]" for line in lines}
    return found


def test_polls_with_bounded_memory(rig: Rig) -> None:
    sensor = rig.sensor
    sensor.start()
    _poll_until_seen(rig)
    for _ in range(WARM_POLLS):
        rig.stir()
        _check_schema(sensor, sensor.poll())
    tracemalloc.start()
    try:
        held = tracemalloc.get_traced_memory()[0]
        for _ in range(POLLS):
            rig.stir()
            sensor.poll()
        grown = tracemalloc.get_traced_memory()[0] - held
    finally:
        tracemalloc.stop()
        sensor.stop()
    assert grown < MAX_GROWTH, f"{sensor.name} held {grown} more bytes after {POLLS} polls"

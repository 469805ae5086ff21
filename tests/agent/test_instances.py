"""Every live instance is visible: real processes through the real process sensor and pipeline.

Two processes of one program (one executable, one user) are one finding, because a restart must
not make a new one; the finding lists every live instance with its pid, command line, user and
listening sockets, and two exposed ports are two exposures. Client processes of one AI service:
the same, through the socket-table sensor on real connections.
"""

from __future__ import annotations

import math
import os
import pwd
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import nvml_stub
import pytest
from conftest import SpawnBinary, SpawnRuntime, port_or_free
from nvml_stub import Gpu, NvmlStub
from umbra import codec
from umbra.v1 import finding_pb2 as fpb

from agent.catalog.endpoints import default_endpoint_catalog
from agent.catalog.runtimes import load_runtime_catalog
from agent.delivery.tracker import MAX_REMEMBERED_OCCURRENCES, FindingTracker
from agent.detection.finetune import FineTuningDetector
from agent.detection.gpu import GpuWorkloadDetector
from agent.detection.instances import MAX_LISTED, Instances
from agent.detection.network import NetworkDetector
from agent.detection.runtime import RuntimeDetector
from agent.observations import NetworkObservation, ProcessObservation
from agent.pipeline import Detector, Pipeline
from agent.policy.rules import Policy
from agent.sensors.base import Sensor
from agent.sensors.gpu import GpuSensor
from agent.sensors.network.socket_table import SocketTableSensor, catalog_names
from agent.sensors.process.sensor import ProcessSensor

CATALOG = load_runtime_catalog()
ME = pwd.getpwuid(os.getuid()).pw_name
GIB = 2**30
nvml_stub_dir = nvml_stub.nvml_stub_dir  # the stand-in NVML's fixtures, made this module's
stub_nvml = nvml_stub.stub_nvml


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Agent:
    """The agent's pipeline around real sensors, with what it sent on each poll."""

    def __init__(self, sensor: Sensor, detector: Detector) -> None:
        self.tracker = FindingTracker("test-host", refresh_interval=3600)
        self.pipeline = Pipeline([sensor], [detector], Policy(), self.tracker)
        self.sent: list[list[fpb.Finding]] = []

    def poll_until(self, done: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.sent.append(self.pipeline.poll())
            if done():
                return
            assert time.monotonic() < deadline, f"not seen within {timeout} s: {what}"
            time.sleep(0.1)

    def findings(self, kind: fpb.FindingKind.ValueType, pids: set[int]) -> list[fpb.Finding]:
        """The current findings of `kind` that list any of `pids` as an instance."""
        return [f for f in self.tracker.current() if f.kind == kind and pids & set(instances(f))]


def instances(finding: fpb.Finding) -> dict[int, fpb.InstanceEvidence]:
    return {e.instance.process.pid: e.instance for e in finding.evidence if e.HasField("instance")}


def ports(instance: fpb.InstanceEvidence) -> list[tuple[str, int]]:
    return [(s.address, s.port) for s in instance.listening]


@pytest.fixture
def process_agent() -> Iterator[Agent]:
    sensor = ProcessSensor(CATALOG.is_candidate, exec_events=False)
    sensor.start()
    yield Agent(sensor, RuntimeDetector(CATALOG))
    sensor.stop()


def test_server_and_runner_of_one_runtime_are_both_visible_and_sent_once(
    process_agent: Agent, spawn_binary: SpawnBinary
) -> None:
    serve_port, runner_port = port_or_free(11434), _free_port()
    serve = spawn_binary(["ollama", "serve"], listen=[f"127.0.0.1:{serve_port}"])
    runner = spawn_binary(
        ["ollama", "runner", "--model", "/models/blobs/sha256-1", "--port", str(runner_port)],
        listen=[f"127.0.0.1:{runner_port}"],
    )
    ours = {serve.pid, runner.pid}

    def both_listed() -> bool:
        found = process_agent.findings(fpb.KIND_LOCAL_MODEL_RUNTIME, ours)
        return len(found) == 1 and ours <= set(instances(found[0]))

    process_agent.poll_until(both_listed, "one finding listing both ollama processes")
    (finding,) = process_agent.findings(fpb.KIND_LOCAL_MODEL_RUNTIME, ours)
    listed = instances(finding)
    assert set(listed) == ours, "exactly the live instances of this executable"
    assert list(listed) == [serve.pid, runner.pid], "the oldest first"
    assert listed[serve.pid].process.cmdline == ["ollama", "serve"]
    assert listed[runner.pid].process.cmdline[:2] == ["ollama", "runner"]
    assert ports(listed[serve.pid]) == [("127.0.0.1", serve_port)]
    assert ports(listed[runner.pid]) == [("127.0.0.1", runner_port)]
    assert {i.process.username for i in listed.values()} == {ME}
    assert all(i.process.start_time.seconds > 0 for i in listed.values())
    # The finding's process is the oldest instance, its count the instances seen.
    assert finding.process.pid == serve.pid and finding.count == 2
    assert f"2 live instances: pid {serve.pid} on 127.0.0.1:{serve_port}" in finding.summary
    assert f"pid {runner.pid} on 127.0.0.1:{runner_port}" in finding.summary
    sockets = {(e.socket.address, e.socket.port) for e in finding.evidence if e.HasField("socket")}
    assert sockets == {("127.0.0.1", serve_port), ("127.0.0.1", runner_port)}
    assert not process_agent.findings(fpb.KIND_MODEL_SERVER_EXPOSED, ours), "loopback is no exposure"

    # Both instances are seen on every poll: nothing new is sent for them.
    before = len(process_agent.sent)
    for _ in range(3):
        process_agent.sent.append(process_agent.pipeline.poll())
    resent = [f for batch in process_agent.sent[before:] for f in batch if f.id == finding.id]
    assert resent == [], "two unchanged instances make no traffic"

    # The runner exits: it leaves the list on the next poll, and the server stays.
    runner.kill()
    runner.wait()
    process_agent.poll_until(
        lambda: set(instances(process_agent.findings(fpb.KIND_LOCAL_MODEL_RUNTIME, ours)[0])) == {serve.pid},
        "the runner gone from the list",
    )
    (after,) = process_agent.findings(fpb.KIND_LOCAL_MODEL_RUNTIME, ours)
    assert after.id == finding.id and after.count == 2 and "live instances" not in after.summary


def test_two_servers_on_two_exposed_ports_are_two_exposures_each_with_its_own_process(
    process_agent: Agent, spawn_binary: SpawnBinary
) -> None:
    first_port, second_port = _free_port(), _free_port()
    first = spawn_binary(["llama-server", "--port", str(first_port)], listen=[f"0.0.0.0:{first_port}"])
    second = spawn_binary(["llama-server", "--port", str(second_port)], listen=[f"0.0.0.0:{second_port}"])
    ours = {first.pid, second.pid}

    def seen() -> bool:
        exposed = process_agent.findings(fpb.KIND_MODEL_SERVER_EXPOSED, ours)
        runtime = process_agent.findings(fpb.KIND_LOCAL_MODEL_RUNTIME, ours)
        return len(exposed) == 2 and len(runtime) == 1 and set(instances(runtime[0])) == ours

    process_agent.poll_until(seen, "two exposures and one runtime listing both servers")
    by_port = {
        next(e.socket.port for e in f.evidence if e.HasField("socket")): f
        for f in process_agent.findings(fpb.KIND_MODEL_SERVER_EXPOSED, ours)
    }
    assert set(by_port) == {first_port, second_port}
    for port, proc in ((first_port, first), (second_port, second)):
        exposure = by_port[port]
        assert exposure.process.pid == proc.pid
        assert set(instances(exposure)) == {proc.pid}
        assert ports(instances(exposure)[proc.pid]) == [("0.0.0.0", port)]
        assert exposure.process.cmdline == ["llama-server", "--port", str(port)]


def test_restarts_of_one_program_grow_the_count_not_the_findings(
    process_agent: Agent, spawn_binary: SpawnBinary
) -> None:
    port = port_or_free(11434)
    pids: list[int] = []
    ids: set[str] = set()
    for run in range(1, 4):
        proc = spawn_binary(["ollama", "serve"], listen=[f"127.0.0.1:{port}"])
        pids.append(proc.pid)
        process_agent.poll_until(
            lambda: bool(process_agent.findings(fpb.KIND_LOCAL_MODEL_RUNTIME, {proc.pid})),  # noqa: B023
            f"restart {run}",
        )
        (finding,) = process_agent.findings(fpb.KIND_LOCAL_MODEL_RUNTIME, set(pids))
        ids.add(finding.id)
        assert set(instances(finding)) == {proc.pid}, "the dead instances are not listed"
        assert finding.process.pid == proc.pid and finding.count == run
        sends = [f for batch in process_agent.sent for f in batch if f.id == finding.id]
        assert len(sends) == run, "one send per start, none per poll"
        proc.kill()
        proc.wait()
        process_agent.pipeline.poll()  # the exit is seen before the next start
    assert len(ids) == 1, "three runs of one program are one finding"


def test_two_instances_of_one_workload_on_one_gpu_are_both_listed_and_not_resent(
    stub_nvml: NvmlStub, spawn_runtime: SpawnRuntime, tmp_path: Path
) -> None:
    torch = tmp_path / "libtorch_cuda.so"
    torch.write_bytes(b"\x7fELF" + bytes(4096))
    script = str(tmp_path / "infer.py")  # one script: one workload, run twice
    first, second = (spawn_runtime(["python3", script], maps=[torch]) for _ in range(2))
    gpu = Gpu(uuid="GPU-aaaa", compute={first.pid: 2 * GIB, second.pid: 6 * GIB})
    stub_nvml.set(gpu)
    agent = Agent(GpuSensor(interval=0.0), GpuWorkloadDetector(CATALOG))
    agent.pipeline.start()
    try:
        agent.poll_until(lambda: bool(agent.findings(fpb.KIND_GPU_AI_WORKLOAD, {first.pid})), "the workload")
        (finding,) = agent.findings(fpb.KIND_GPU_AI_WORKLOAD, {first.pid, second.pid})
        assert list(instances(finding)) == [first.pid, second.pid]
        assert finding.process.pid == first.pid and finding.count == 2
        memory = sorted(e.gpu.memory_used_bytes for e in finding.evidence if e.HasField("gpu"))
        assert memory == [2 * GIB, 6 * GIB], "each instance's peak"
        before = len(agent.sent)
        for _ in range(3):
            agent.sent.append(agent.pipeline.poll())
        assert [f for batch in agent.sent[before:] for f in batch] == [], "two instances, no flip-flop"

        del gpu.compute[second.pid]  # the second leaves the GPU
        stub_nvml.write()
        (gone,) = agent.pipeline.poll()
        assert list(instances(gone)) == [first.pid] and gone.id == finding.id
    finally:
        agent.pipeline.stop()


def test_the_ranks_of_one_training_job_are_each_listed(spawn_runtime: SpawnRuntime, tmp_path: Path) -> None:
    script = str(tmp_path / "train.py")
    ranks = [
        spawn_runtime(["python3", script, "--deepspeed", "ds.json", "--local_rank", str(rank)])
        for rank in range(3)
    ]
    ours = {r.pid for r in ranks}
    sensor = ProcessSensor(CATALOG.is_candidate, exec_events=False)
    agent = Agent(sensor, FineTuningDetector())

    def all_listed() -> bool:
        found = agent.findings(fpb.KIND_FINE_TUNING, ours)
        return len(found) == 1 and set(instances(found[0])) == ours

    agent.poll_until(all_listed, "one training finding listing every rank")
    (finding,) = agent.findings(fpb.KIND_FINE_TUNING, ours)
    listed = instances(finding)
    assert [listed[r.pid].process.cmdline[-1] for r in ranks] == ["0", "1", "2"]
    assert finding.count == 3 and "3 live instances" in finding.summary


HOLD = """
import socket, sys, time
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])))
print("connected", flush=True)
time.sleep(60)
"""


def test_two_client_processes_of_one_service_are_both_visible(tmp_path: Path) -> None:
    address = "127.0.0.78"  # an address no other test talks to
    listener = socket.create_server((address, 0))
    port = int(listener.getsockname()[1])
    names = catalog_names(default_endpoint_catalog())
    sensor = SocketTableSensor(
        names,
        resolver=lambda name: [address] if name == "api.openai.com" else [],
        resolve_per_second=5000,
        capture_reason="test",
    )
    script = tmp_path / "chat_client.py"
    script.write_text(HOLD)
    clients: list[subprocess.Popen[str]] = []
    sensor.start()
    try:
        deadline = time.monotonic() + 20
        while sensor.rounds < 1:
            assert time.monotonic() < deadline, "the catalog names were not resolved"
            time.sleep(0.05)
        agent = Agent(sensor, NetworkDetector(default_endpoint_catalog()))
        for _ in range(2):
            client = subprocess.Popen(
                [sys.executable, str(script), address, str(port)], stdout=subprocess.PIPE, text=True
            )
            clients.append(client)
            assert client.stdout is not None and client.stdout.readline().strip() == "connected"
        ours = {c.pid for c in clients}

        def both_listed() -> bool:
            found = agent.findings(fpb.KIND_AI_SERVICE_ACCESS, ours)
            return len(found) == 1 and set(instances(found[0])) == ours

        agent.poll_until(both_listed, "one finding listing both client processes")
        (finding,) = agent.findings(fpb.KIND_AI_SERVICE_ACCESS, ours)
        listed = instances(finding)
        for client in clients:
            assert listed[client.pid].process.cmdline == [sys.executable, str(script), address, str(port)]
            assert listed[client.pid].process.username == ME
            assert not listed[client.pid].listening
        assert finding.count == 2, "one connection each"
        assert "2 client processes lately" in finding.summary
        assert codec.kind_name(finding.kind) == "AI_SERVICE_ACCESS"
    finally:
        sensor.stop()
        for client in clients:
            client.kill()
            client.wait()
        listener.close()


def _client(pid: int, started: float) -> ProcessObservation:
    return ProcessObservation(
        pid, 1, "python3", "/usr/bin/python3.11", ("python3", "chat.py"), "eve", started
    )


def _flow(process: ProcessObservation, at: float) -> NetworkObservation:
    return NetworkObservation(
        "api.openai.com", "tls_sni", "10.0.0.2", 40000 + process.pid % 1000, "1.2.3.4", 443, "tcp",
        at, at, 900, 4000, 6, process=process,
    )  # fmt: skip


def test_a_client_stays_listed_for_the_window_after_its_last_flow() -> None:
    detector = NetworkDetector(default_endpoint_catalog(), client_window=300.0)
    old, new = _client(101, 10.0), _client(102, 20.0)
    detector.detect(_flow(old, 1000.0))
    (both,) = detector.detect(_flow(new, 1200.0))
    assert list(instances_of(both.evidence)) == [101, 102] and both.process is not None
    assert both.process.pid == 102, "the flow's own process is the finding's"
    (alone,) = detector.detect(_flow(new, 1301.0))
    assert list(instances_of(alone.evidence)) == [102], "no flow from 101 for over 300 s"


def test_memory_is_bounded_by_programs_and_instances() -> None:
    detector = NetworkDetector(default_endpoint_catalog())
    bounded = Instances(window=math.inf, max_listed=4, max_remembered=8, max_programs=3)
    for pid in range(100, 150):
        (draft,) = detector.detect(_flow(_client(pid, float(pid)), 1000.0))
        live = bounded.live(draft)
        listed = [d.process.pid for d in live.listed if d.process is not None]
        assert live.total == min(8, pid - 99)
        assert listed == list(range(max(100, pid - 7), pid + 1))[:4], "the oldest of the 8 last seen"
    assert len(bounded) == 1
    for n in range(10):  # other programs push the least recently seen out
        (draft,) = detector.detect(_flow(replace(_client(1, 1.0), exe=f"/opt/tool{n}"), 2000.0))
        bounded.live(draft)
    assert len(bounded) == 3


def instances_of(evidence: list[fpb.Evidence]) -> dict[int, fpb.InstanceEvidence]:
    return {e.instance.process.pid: e.instance for e in evidence if e.HasField("instance")}


def test_more_live_instances_than_the_tracker_remembers_do_not_resend_every_poll() -> None:
    # A training job's ranks and their data-loader workers: 40 live processes of one program.
    detector = RuntimeDetector(CATALOG)
    tracker = FindingTracker("test-host", refresh_interval=3600)
    workers = [
        ProcessObservation(1000 + i, 1, "ollama", "/usr/bin/ollama", ("ollama", "runner"), "eve", 100.0 + i)
        for i in range(MAX_REMEMBERED_OCCURRENCES + 8)
    ]
    sends = []
    for poll in range(5):
        detector.begin_poll(workers)
        for obs in workers:
            for draft in detector.detect(obs):
                sent = tracker.observe(draft, Policy().decide(draft) or fpb.PolicyDecision(), 1000.0 + poll)
                sends.append((poll, sent))
    first = [s for p, s in sends if p == 0 and s is not None]
    assert len(first) == len(workers), "one send per instance arriving (the total changes)"
    assert [s for p, s in sends if p > 0 and s is not None] == [], "later polls send nothing"
    (finding,) = tracker.current()
    assert finding.count == MAX_LISTED and len(instances(finding)) == MAX_LISTED
    assert f"{len(workers)} live instances ({len(workers) - MAX_LISTED} not listed)" in finding.summary

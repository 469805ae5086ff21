"""GPU smoke test: the real NVML, a real PyTorch CUDA process, and what Umbra makes of them.

Run on a host with an NVIDIA GPU, its driver, PyTorch with CUDA, and Umbra's agent
dependencies (psutil, nvidia-ml-py, protobuf, grpcio):

    python scripts/gpu_smoke.py [--seconds 60] [--memory-gib 2] [--window 20] [--no-training]

It starts one child process that imports torch, allocates `--memory-gib` GiB on GPU 0 and keeps
the GPU busy with matrix products. By default the child looks like a fine-tuning job: it runs as
`python train.py --per_device_train_batch_size 4 --output_dir OUT` and every few seconds writes
`OUT/checkpoint-N/optimizer.pt` and `adapter_model.safetensors` (holding them open for a moment,
as a large checkpoint is). With --no-training it is a plain `python infer.py`.

Then it polls the real GPU sensor (agent/sensors/gpu.py) for `--seconds`, runs the GPU and
FINE_TUNING detectors through the real pipeline with a sustained-use window of `--window`
seconds, and prints: the sensor's status, every GPU and the child's GPU observation each poll,
the wall and CPU time of each NVML read (the driver's cost), and the findings as JSON.
Exit status 0 when the child was seen on the GPU with GPU_AI_WORKLOAD (and FINE_TUNING unless
--no-training), 1 otherwise, 2 when this host cannot run the test.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "proto")]

from umbra import codec  # noqa: E402
from umbra.v1 import finding_pb2 as fpb  # noqa: E402

from agent.catalog.runtimes import load_runtime_catalog  # noqa: E402
from agent.delivery.tracker import FindingTracker  # noqa: E402
from agent.detection.finetune import FineTuningDetector  # noqa: E402
from agent.detection.gpu import GpuUsage, GpuWorkloadDetector  # noqa: E402
from agent.observations import GpuDeviceObservation, GpuProcessObservation, Observation  # noqa: E402
from agent.pipeline import Detector, Pipeline  # noqa: E402
from agent.policy.rules import Policy  # noqa: E402
from agent.sensors.base import Sensor, SensorState, SensorStatus  # noqa: E402
from agent.sensors.gpu import GpuSensor  # noqa: E402
from agent.system.nvml import Nvml  # noqa: E402

CHILD = textwrap.dedent(
    """
    import os, sys, time
    import torch

    gib = float(os.environ["SMOKE_GIB"])
    out = os.environ.get("SMOKE_OUT", "")
    dev = torch.device("cuda:0")
    hold = torch.empty(int(gib * 2**30), dtype=torch.uint8, device=dev)  # the memory NVML reports
    a = torch.randn(4096, 4096, device=dev)
    b = torch.randn(4096, 4096, device=dev)
    print("ready", flush=True)
    step, last = 0, time.monotonic()
    while True:
        for _ in range(20):
            a = torch.tanh(a @ b)  # keep the SMs busy
        torch.cuda.synchronize()
        step += 1
        if out and time.monotonic() - last > 4:
            last = time.monotonic()
            ckpt = os.path.join(out, f"checkpoint-{step}")
            os.makedirs(ckpt, exist_ok=True)
            with open(os.path.join(ckpt, "optimizer.pt"), "wb") as f1, open(
                os.path.join(ckpt, "adapter_model.safetensors"), "wb"
            ) as f2:
                torch.save({"step": step, "state": a[:256].cpu()}, f1)
                f2.write(b"\\0" * 4096)
                time.sleep(3)  # a 3B model's optimizer state takes longer than this to write
    """
)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--memory-gib", type=float, default=2.0)
    parser.add_argument("--window", type=float, default=20.0, help="sustained-use window (the agent's: 60 s)")
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--no-training", action="store_true")
    args = parser.parse_args()

    sensor = GpuSensor(interval=0.0)
    status = sensor.status()
    print(f"gpu sensor: {status.state.value}{f' ({status.reason})' if status.reason else ''}")
    if status.state is SensorState.INACTIVE:
        return 2
    if importlib.util.find_spec("torch") is None:
        print("PyTorch is not installed here: the child process needs it", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as work:
        script = Path(work) / ("infer.py" if args.no_training else "train.py")
        script.write_text(CHILD)
        argv = [sys.executable, script.name]
        env = {**os.environ, "SMOKE_GIB": str(args.memory_gib)}
        if not args.no_training:
            out = Path(work) / "out"
            out.mkdir()
            argv += ["--per_device_train_batch_size", "4", "--output_dir", str(out)]
            env["SMOKE_OUT"] = str(out)
        child = subprocess.Popen(argv, cwd=work, env=env, stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                print("the PyTorch child did not start", file=sys.stderr)
                return 2
            print(f"child: pid {child.pid}: {' '.join(argv[1:])}")
            return watch(sensor, child.pid, args)
        finally:
            child.kill()
            child.wait()


def watch(sensor: GpuSensor, pid: int, args: argparse.Namespace) -> int:
    catalog = load_runtime_catalog()
    usage = GpuUsage(window=args.window, min_samples=max(2, int(args.window / args.interval / 2)))
    tracker = FindingTracker("gpu-smoke")
    recorder = _Recorder(sensor)
    detectors: list[Detector] = [GpuWorkloadDetector(catalog), FineTuningDetector(usage=usage)]
    pipeline = Pipeline([recorder], detectors, Policy(), tracker)

    # The driver's cost of one read, alone (no /proc, no detectors).
    session = Nvml()
    session.open()
    walls, cpus = [], []
    for _ in range(20):
        wall, cpu = time.perf_counter(), time.process_time()
        read = session.read()
        walls.append((time.perf_counter() - wall) * 1e6)
        cpus.append((time.process_time() - cpu) * 1e6)
    session.close()
    gpus = len(read.gpus)
    procs = sum(len(g.processes) for g in read.gpus)
    print(
        f"NVML read, {gpus} GPU(s), {procs} process(es): wall median {statistics.median(walls):,.0f} µs, "
        f"CPU median {statistics.median(cpus):,.0f} µs"
    )

    pipeline.start()
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        pipeline.poll()  # sensor, detectors, policy, tracker: the agent's own path
        poll_ms = (time.perf_counter() - started) * 1000
        for obs in recorder.last:
            if isinstance(obs, GpuDeviceObservation):
                print(
                    f"  GPU {obs.index} {obs.name} {obs.uuid}: {_gib(obs.memory_used_bytes)}/"
                    f"{_gib(obs.memory_total_bytes)} GiB, util {obs.utilization_percent}%, "
                    f"{obs.process_count} process(es), unsupported {list(obs.unsupported)}"
                )
            elif isinstance(obs, GpuProcessObservation) and obs.process.pid == pid:
                p = obs.process
                print(
                    f"  pid {p.pid} on GPU {obs.gpu_index}: {_gib(obs.used_memory_bytes)} GiB, "
                    f"SM {obs.sm_utilization_percent}%, {obs.context}; libraries {list(p.libraries)[:6]}; "
                    f"writing {[os.path.basename(w) for w in p.written_files]}"
                )
        print(f"poll: {poll_ms:.1f} ms wall, sensor status {sensor.status().state.value}")
        time.sleep(max(0.0, args.interval - (time.perf_counter() - started)))
    pipeline.stop()

    findings = [f for f in tracker.current() if f.process.pid == pid]
    for finding in findings:
        print(json.dumps(codec.finding_to_dict(finding), indent=1))
    kinds = {f.kind for f in findings}
    wanted = {fpb.KIND_GPU_AI_WORKLOAD} | (set() if args.no_training else {fpb.KIND_FINE_TUNING})
    missing = sorted(codec.kind_name(k) for k in wanted - kinds)
    print("OK" if not missing else f"MISSING: {', '.join(missing)}")
    return 0 if not missing else 1


class _Recorder(Sensor):
    """The GPU sensor, keeping what it saw last so the smoke test can print it."""

    name = GpuSensor.name
    capabilities = GpuSensor.capabilities

    def __init__(self, inner: GpuSensor) -> None:
        self.inner = inner
        self.last: list[Observation] = []

    def status(self) -> SensorStatus:
        return self.inner.status()

    def start(self) -> None:
        self.inner.start()

    def poll(self) -> Sequence[Observation]:
        self.last = list(self.inner.poll())
        return self.last

    def stop(self) -> None:
        self.inner.stop()


def _gib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**30:.2f}"


if __name__ == "__main__":
    sys.exit(main())

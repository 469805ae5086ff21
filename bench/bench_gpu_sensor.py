"""GPU sensor cost: one NVML poll with N GPU processes, against the NVML stub and real processes.

The real nvidia-ml-py runs against tests/fixtures/nvml_stub.c, built with gcc as
libnvidia-ml.so.1 and loaded into this process ahead of any driver (tests/agent/nvml_stub.py),
so these figures are Umbra's own CPU per poll plus pynvml's ctypes calls: reading the NVML
answers, attributing every PID to a real process through /proc (identity once per process,
open files every poll for processes that may train, maps every `facts_interval`), and the two
GPU detectors. The stub answers each call by re-reading its state file (a few µs per call),
where a driver makes an ioctl. Half the N processes are Python processes that map a (fake)
libtorch_cuda.so and hold a checkpoint open for writing, as a trainer does; the other half are
`sleep` processes, as a game or a renderer would be. They are split over 2 GPUs.

On a real GPU each NVML call is an ioctl into the driver, from a few microseconds to about a
millisecond (process utilisation on a busy GPU is the slowest), about 7 calls per GPU a poll:
there the poll's wall time is dominated by the driver. `scripts/gpu_smoke.py` prints the real
figure on a GPU host.

    .venv/bin/python bench/bench_gpu_sensor.py [--processes 100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "agent"))

from nvml_stub import STATE_ENV, Gpu, NvmlStub, build, load_in_process  # noqa: E402
from umbra import codec  # noqa: E402

from agent.catalog.runtimes import load_runtime_catalog  # noqa: E402
from agent.delivery.tracker import FindingDraft  # noqa: E402
from agent.detection.finetune import FineTuningDetector  # noqa: E402
from agent.detection.gpu import GpuWorkloadDetector  # noqa: E402
from agent.observations import GpuProcessObservation, Observation  # noqa: E402
from agent.pipeline import Detector  # noqa: E402
from agent.sensors.gpu import GpuSensor  # noqa: E402
from agent.system.nvml import Nvml  # noqa: E402

GIB = 2**30
FAKE = ROOT / "tests" / "fixtures" / "fake_runtime.py"


def cpu_us(fn: Callable[[], object]) -> float:
    """CPU microseconds (user + system) of one call."""
    start = time.process_time()
    fn()
    return (time.process_time() - start) * 1e6


def gpus_for(pids: list[int]) -> list[Gpu]:
    gpus = [Gpu(uuid=f"GPU-{i}") for i in range(2)]
    for n, pid in enumerate(pids):
        gpu = gpus[n % 2]
        gpu.compute[pid] = (n % 7 + 1) * GIB
        gpu.process_util[pid] = (n % 100, n % 50)
    return gpus


def spawn(n: int, home: Path) -> list[subprocess.Popen[bytes]]:
    lib = home / "libtorch_cuda.so"
    lib.write_bytes(b"\x7fELF" + bytes(4096))
    procs = []
    for i in range(n):
        if i % 2:
            procs.append(subprocess.Popen(["sleep", "600"]))
            continue
        ckpt = home / f"run{i}" / "checkpoint-100"
        ckpt.mkdir(parents=True)
        env = {**os.environ, "UMBRA_FAKE_MAP": str(lib), "UMBRA_FAKE_WRITE": str(ckpt / "optimizer.pt")}
        procs.append(
            subprocess.Popen(
                [sys.executable, str(FAKE), "--per_device_train_batch_size", "4"],
                env=env,
                stdout=subprocess.PIPE,
            )
        )
    for p in procs:
        if p.stdout is not None:
            p.stdout.readline()  # "ready": mapped and holding its checkpoint
    return procs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    catalog = load_runtime_catalog()
    with tempfile.TemporaryDirectory() as home:
        stub = NvmlStub(Path(home) / "nvml.state", load_in_process(build(Path(home))))
        os.environ[STATE_ENV] = str(stub.path)
        extra = spawn(args.processes, Path(home))
        try:
            stub.set(*gpus_for([p.pid for p in extra]))
            nvml_only, cold, warm, detect = [], [], [], []
            drafts: list[FindingDraft] = []
            observations: list[Observation] = []
            for _ in range(args.rounds):
                session = Nvml()  # the real pynvml, reaching the stub
                session.open()
                session.read()
                nvml_only.append(statistics.median(cpu_us(session.read) for _ in range(20)))
                session.close()

                sensor = GpuSensor(interval=0.0)
                sensor.start()
                cold.append(cpu_us(sensor.poll))
                warm.append(statistics.median(cpu_us(sensor.poll) for _ in range(10)))
                observations = list(sensor.poll())
                detectors: list[Detector] = [GpuWorkloadDetector(catalog), FineTuningDetector()]

                def run_detectors(
                    obs: list[Observation] = observations, ds: list[Detector] = detectors
                ) -> None:
                    drafts[:] = [d for o in obs for det in ds for d in det.detect(o)]

                detect.append(statistics.median(cpu_us(run_detectors) for _ in range(10)))
                sensor.stop()
            assert stub.inits() == 0, "NVML left initialised"
        finally:
            for p in extra:
                p.kill()
            for p in extra:
                p.wait()
    seen = sum(1 for o in observations if isinstance(o, GpuProcessObservation))
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(Counter(codec.kind_name(d.kind) for d in drafts).items()))
    header = ("figure", "median", "goal", "note")
    rows = [
        (
            "GPU processes (2 GPUs) / observed",
            f"{args.processes} / {seen}",
            "equal",
            "half trainers, half sleep",
        ),
        ("drafts per poll", f"{len(drafts)}", "", kinds),
        (
            "CPU, NVML read only (µs/poll)",
            f"{statistics.median(nvml_only):,.0f}",
            "",
            "pynvml + stub; GPUs add ioctls",
        ),
        (
            "CPU, first poll, all processes new (µs)",
            f"{statistics.median(cold):,.0f}",
            "< 50,000",
            "identity, maps, open files, environment",
        ),
        (
            "CPU, steady-state poll (µs)",
            f"{statistics.median(warm):,.0f}",
            "< 10,000",
            "start time each; open files of trainers",
        ),
        (
            "CPU, GPU + FINE_TUNING detectors (µs/poll)",
            f"{statistics.median(detect):,.0f}",
            "< 10,000",
            "50 AI workloads, 50 fine-tuning jobs",
        ),
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()

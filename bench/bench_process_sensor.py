"""Process sensor cost and detection latency, on this machine, with N extra real processes.

Prints a table: CPU per poll when everything is already known (the steady state), CPU for a
pass where all N processes are new (agent start, or a fork storm), and how long a new
runtime takes to be observed. Goals from the process/GPU issue: a full pass over 1,000
processes well under 100 ms of CPU, a new process seen within 2 s.

    .venv/bin/python bench/bench_process_sensor.py [--processes 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from agent.catalog.runtimes import RuntimeCatalog, load_runtime_catalog
from agent.sensors.process.sensor import ProcessSensor

FAKE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "fake_runtime.py"


def cpu_of(fn: Callable[[], object]) -> float:
    """CPU milliseconds (user + system) of one call."""
    start = time.process_time()
    fn()
    return (time.process_time() - start) * 1000


def detection_latency(catalog: RuntimeCatalog, interval: float) -> float:
    """ms from spawning `ollama serve` to its observation, with the agent's poll loop running
    in the background at `interval` and the spawn landing at a random point of the cycle."""
    sensor = ProcessSensor(catalog.is_candidate)
    sensor.poll()
    seen = threading.Event()
    target: list[int] = []

    def loop() -> None:
        while not seen.is_set():
            observed = {o.pid for o in sensor.poll()}
            if target and target[0] in observed:
                seen.set()
            time.sleep(interval)

    with tempfile.TemporaryDirectory() as home:
        (Path(home) / "ollama").symlink_to(sys.executable)
        (Path(home) / "serve").write_text(FAKE.read_text())
        poller = threading.Thread(target=loop, daemon=True)
        poller.start()
        time.sleep(random.uniform(0, interval))
        started = time.monotonic()
        proc = subprocess.Popen(
            ["ollama", "serve"],
            executable=str(Path(home) / "ollama"),
            cwd=home,
            env={**os.environ, "UMBRA_FAKE_LISTEN": ""},
            stdout=subprocess.DEVNULL,
        )
        target.append(proc.pid)
        seen.wait(timeout=30)
        elapsed = (time.monotonic() - started) * 1000
        proc.kill()
        proc.wait()
        poller.join()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--interval", type=float, default=2.0, help="poll interval (the agent's default: 2 s)"
    )
    args = parser.parse_args()
    catalog = load_runtime_catalog()
    extra = [subprocess.Popen(["sleep", "600"]) for _ in range(args.processes)]
    try:
        total = len(psutil.pids())
        cold, warm, latency = [], [], []
        for _ in range(args.rounds):
            sensor = ProcessSensor(catalog.is_candidate)
            cold.append(cpu_of(sensor.poll))
            warm.append(statistics.median(cpu_of(sensor.poll) for _ in range(5)))
            latency.append(detection_latency(catalog, args.interval))
    finally:
        for p in extra:
            p.kill()
        for p in extra:
            p.wait()

    rows = [
        ("processes on the host", f"{total}", "", ""),
        (
            "CPU, pass with all processes new (ms)",
            f"{statistics.median(cold):.1f}",
            "< 100 per 1,000",
            "osquery processes table: full /proc walk each query",
        ),
        ("CPU, steady-state poll (ms)", f"{statistics.median(warm):.2f}", "< 10", "only new PIDs are read"),
        (
            f"new runtime observed after (ms), {args.interval:g} s poll",
            f"{statistics.median(latency):.0f}",
            "< 2000",
            "the poll interval bounds it",
        ),
    ]
    widths = [max(len(r[i]) for r in [("figure", "median", "goal", "peer / note"), *rows]) for i in range(4)]
    for row in [("figure", "median", "goal", "peer / note"), tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()

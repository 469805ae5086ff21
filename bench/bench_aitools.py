"""AI tooling sensor cost on this machine: a first pass over a home of N files, the steady state.

The sensor never walks a home: it opens the catalog's configuration files, lists a few
directories (browser profiles, editor extensions, npm roots) and reads the package.json and
manifests of catalogued items only. So its first pass must cost the same in a home of 100,000
files as in an empty one. Prints a table (figure, median, goal, note):
- first inventory (cold process table) of a home with N files, every MCP client's configuration,
  200 browser extensions and 300 editor extensions (a few of them AI);
- an inventory again (steady state: what each `interval` costs);
- a poll between inventories (running agents and MCP servers only) with P extra processes, every
  one known (the steady state), and one where all P are new.

    .venv/bin/python bench/bench_aitools.py [--files 100000] [--processes 500] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "agent"))  # the home builder

from test_aitools_sensor import make_home

from agent.sensors.aitools.sensor import AiToolsSensor


def cpu_ms(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return (time.process_time() - start) * 1000


def fill(home: Path, files: int) -> None:
    """N ordinary files: source trees, node_modules, caches (what a developer's home holds)."""
    for i in range(files):
        d = home / ("src", "node_modules", ".cache", "Documents")[i % 4] / f"d{i // 500}"
        if i % 500 == 0 or not d.exists():
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_text("x")
    chrome = home / ".config/google-chrome/Default/Extensions"
    for i in range(200):
        ext = chrome / ("".join("abcdefghijklmnop"[(i * 7 + k) % 16] for k in range(32))) / "1.0_0"
        ext.mkdir(parents=True, exist_ok=True)
        (ext / "manifest.json").write_text(json.dumps({"name": f"ext {i}", "permissions": ["tabs"]}))
    claude = chrome / "fcoeoabgfenejglbffodgkkbkcdhcgfn/1.0.56_0"
    claude.mkdir(parents=True)
    (claude / "manifest.json").write_text(json.dumps({"name": "Claude", "permissions": ["<all_urls>"]}))
    for i in range(300):
        ext = home / ".vscode/extensions" / f"publisher{i}.tool{i}-1.{i}.0"
        ext.mkdir(parents=True)
        (ext / "package.json").write_text(json.dumps({"version": f"1.{i}.0"}))
    copilot = home / ".vscode/extensions/github.copilot-1.300.0"
    copilot.mkdir(parents=True)
    (copilot / "package.json").write_text(json.dumps({"version": "1.300.0"}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--processes", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = make_home(Path(tmp))
        built = time.monotonic()
        fill(home, args.files)
        build_s = time.monotonic() - built
        sensor = AiToolsSensor(homes=[str(home)], interval=3600.0, machine_wide=False)
        first_wall = time.perf_counter()
        first_cpu = cpu_ms(sensor.poll)
        first_wall = (time.perf_counter() - first_wall) * 1000
        found = len(sensor.last_inventory)
        read = sensor.reader.read
        again = [cpu_ms(lambda: sensor.inventory(time.time())) for _ in range(args.rounds)]
        steady = [cpu_ms(sensor.poll) for _ in range(args.rounds)]
        extra = [
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            for _ in range(args.processes)
        ]
        try:
            time.sleep(1.0)
            new_all = cpu_ms(sensor.poll)
            time.sleep(6.0)  # past the young-process window: every process known
            sensor.poll()
            known = [cpu_ms(sensor.poll) for _ in range(args.rounds)]
            total = sum(1 for name in os.listdir("/proc") if name.isdigit())
        finally:
            for proc in extra:
                proc.kill()
            for proc in extra:
                proc.wait()
    rows = [
        (
            f"first inventory, home of {args.files:,} files (CPU ms)",
            f"{first_cpu:.0f} ({first_wall:.0f} wall)",
            "< 500 ms",
            f"{found} items, {read} files read; building the home took {build_s:.0f} s",
        ),
        (
            "inventory again (CPU ms)",
            f"{statistics.median(again):.0f}",
            "< 200 ms",
            "every `interval` (300 s)",
        ),
        (
            "poll between inventories (CPU ms)",
            f"{statistics.median(steady):.1f}",
            "< 20 ms",
            "running processes only",
        ),
        (
            f"poll, {args.processes} new processes (CPU ms)",
            f"{new_all:.0f}",
            "< 200 ms",
            "each new PID read once (name, cmdline, parent)",
        ),
        (
            f"poll, {args.processes} known processes (CPU ms)",
            f"{statistics.median(known):.1f}",
            "< 20 ms",
            f"{total} processes in all",
        ),
    ]
    header = ("figure", "median", "goal", "note")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()

"""Benchmark: the one-file agent's size and how fast it answers.

Builds it with `make binary` (about a minute) unless --binary names one. Reported: the file's
size, and the wall time of `env -i umbra-agent --version` and `status` warm (the page cache
holds the file; each run still unpacks the archive into a fresh temporary folder, which is most
of the time), median and 90th percentile over --runs runs after two warm-ups. Peer: the same
commands from the Python install (the virtualenv's console script).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from umbra.table import Column, render_table

ROOT = Path(__file__).resolve().parents[1]
SIZE_GOAL_MB = 45.0
VERSION_GOAL_S = 0.5


def _build(out: Path) -> Path:
    subprocess.run(
        [
            "make",
            "-s",
            "-o",
            ".venv/.installed",
            "binary",
            f"BIN={Path(sys.executable).parent}",
            f"DIST={out}/dist",
            f"WORK={out}/work",
        ],
        cwd=ROOT,
        check=True,
    )
    return out / "dist" / "umbra-agent"


def _times(argv: list[str], runs: int) -> tuple[list[float], float]:
    """Wall seconds of each run, and the mean CPU seconds (user + system) a run took: the CPU
    figure holds when other work shares the machine, the wall figure does not."""
    for _ in range(2):
        subprocess.run(argv, capture_output=True, check=True)
    took = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        took.append(time.perf_counter() - started)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / runs
    return took, cpu


def _p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", type=Path, help="an existing build/dist/umbra-agent (default: build one)")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="umbra-bench-binary-") as tmp:
        binary = args.binary or _build(Path(tmp))
        python_cli = str(Path(sys.executable).parent / "umbra-agent")
        size_mb = binary.stat().st_size / 1e6
        config = Path(tmp) / "agent.toml"
        config.write_text(f'[agent]\nstate_dir = "{tmp}/state"\n')
        status = ["status", "--format", "json", "--config", str(config)]
        version, version_cpu = _times(["env", "-i", str(binary), "--version"], args.runs)
        peer_version, peer_version_cpu = _times([python_cli, "--version"], args.runs)
        status_t, status_cpu = _times(["env", "-i", str(binary), *status], max(5, args.runs // 4))
        peer_status, peer_status_cpu = _times([python_cli, *status], max(5, args.runs // 4))
        load = os.getloadavg()[0]
    rows = [
        ["size", f"{size_mb:.1f} MB", f"< {SIZE_GOAL_MB:.0f} MB", "Python install: the venv, hundreds of MB"],
        [
            "--version warm, median / p90",
            f"{statistics.median(version):.2f} / {_p90(version):.2f} s",
            f"< {VERSION_GOAL_S} s",
            f"Python install {statistics.median(peer_version):.2f} / {_p90(peer_version):.2f} s",
        ],
        [
            "--version CPU (user+sys)",
            f"{version_cpu:.2f} s",
            f"< {VERSION_GOAL_S} s",
            f"Python install {peer_version_cpu:.2f} s",
        ],
        [
            "status warm, median",
            f"{statistics.median(status_t):.2f} s",
            "",
            f"Python install {statistics.median(peer_status):.2f} s",
        ],
        ["status CPU (user+sys)", f"{status_cpu:.2f} s", "", f"Python install {peer_status_cpu:.2f} s"],
    ]
    columns = [Column("FIGURE"), Column("MEASURED", align="right"), Column("GOAL"), Column("PEER", flex=True)]
    print(render_table(columns, rows))
    print(f"(load average {load:.1f} on {os.cpu_count()} CPUs while measuring)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

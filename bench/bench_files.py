"""File sensor cost on this machine: identification per file, hashing, and a first scan.

Prints a table (figure, value, goal, note):
- identification: header bytes read and microseconds per file, for real model files written by
  their libraries and for an ordinary file (the quick 16-byte check is what most files cost);
- hashing: SHA-256 throughput unthrottled (page cache warm), and the worker's CPU while it hashes
  at the configured rate;
- first scan: a generated tree of N ordinary files with 20 models among them, unthrottled (the
  walk itself) and at the default budgets (what the agent costs), then a restart with the cache.

    .venv/bin/python bench/bench_files.py [--files 100000] [--models 20]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the test builders

from agent.modelfiles import identify_file, looks_like_model_quick
from agent.sensors.files.sensor import FileSensor
from agent.system.hashing import TokenBucket, sha256_file
from tests.agent.test_modelfiles_formats import make_gguf, make_onnx, make_safetensors

DEFAULT_HASH_MIB = 64.0


def identification(tmp: Path) -> list[tuple[str, str, str, str]]:
    rows = []
    samples = {
        "gguf": make_gguf(tmp / "a.gguf", vocab=2000)[0],
        "safetensors": make_safetensors(tmp / "b.safetensors")[0],
        "onnx": make_onnx(tmp / "c.onnx")[0],
    }
    text = tmp / "notes.txt"
    text.write_text("ordinary text\n" * 2000)
    for name, path in samples.items():
        times = []
        for _ in range(300):
            t = time.perf_counter()
            ident = identify_file(path)
            times.append(time.perf_counter() - t)
        assert ident.is_model
        rows.append(
            (
                f"identify {name} (µs, header bytes)",
                f"{statistics.median(times) * 1e6:.0f} µs, {ident.bytes_read} B",
                "< 1000 µs",
                "full parse",
            )
        )
    times = []
    for _ in range(2000):
        t = time.perf_counter()
        with open(text, "rb") as f:
            looks_like_model_quick(f.read(16))
        times.append(time.perf_counter() - t)
    rows.append(
        (
            "quick check, ordinary file (µs, bytes)",
            f"{statistics.median(times) * 1e6:.1f} µs, 16 B",
            "< 50 µs",
            "open + 16-byte read; most files stop here",
        )
    )
    return rows


def hashing(tmp: Path, mib: int) -> list[tuple[str, str, str, str]]:
    big = tmp / "big.bin"
    with open(big, "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(mib):
            f.write(block)
    sha256_file(str(big))  # warm the page cache
    t, c = time.perf_counter(), time.thread_time()
    sha256_file(str(big))
    wall, cpu = time.perf_counter() - t, time.thread_time() - c
    rows = [
        (
            "SHA-256 unthrottled (MB/s)",
            f"{mib * 1.048576 / wall:.0f}",
            "",
            f"{mib} MiB, warm cache, {cpu:.2f} s CPU",
        )
    ]
    rate = DEFAULT_HASH_MIB * 2**20
    seconds = 3.0
    out: dict[str, float] = {}

    def throttled() -> None:
        bucket = TokenBucket(rate, burst=rate / 10)
        t0, c0 = time.perf_counter(), time.thread_time()
        done = 0
        with open(big, "rb") as f:
            while time.perf_counter() - t0 < seconds:
                chunk = f.read(1 << 20)
                if not chunk:
                    f.seek(0)
                    continue
                done += len(chunk)
                hashlib.sha256(chunk)
                wait = bucket.take(len(chunk))
                if wait:
                    time.sleep(wait)
        out["wall"], out["cpu"], out["bytes"] = time.perf_counter() - t0, time.thread_time() - c0, done

    th = threading.Thread(target=throttled)
    th.start()
    th.join()
    achieved = out["bytes"] / out["wall"] / 2**20
    rows.append(
        (
            f"hashing at {DEFAULT_HASH_MIB:g} MiB/s: CPU of one core (%)",
            f"{100 * out['cpu'] / out['wall']:.1f}",
            "< 10",
            f"achieved {achieved:.1f} MiB/s over {out['wall']:.1f} s",
        )
    )
    return rows


def make_tree(root: Path, files: int, models: int) -> list[Path]:
    rng = random.Random(7)
    per_dir = 100
    model_paths: list[Path] = []
    model_src = make_gguf(root.parent / "seed.gguf")[0]
    st_src = make_safetensors(root.parent / "seed.safetensors")[0]
    chosen = set(rng.sample(range(files), models))
    for i in range(files):
        d = root / f"d{i // (per_dir * 50)}" / f"s{i // per_dir}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        if i in chosen:
            src = model_src if len(model_paths) % 2 == 0 else st_src
            p = d / f"file{i}.dat"
            shutil.copyfile(src, p)
            with open(p, "r+b") as f:  # unique content, same header: a distinct hash each
                f.seek(0, 2)
                size = f.tell()
                f.seek(size - 8)
                f.write(i.to_bytes(8, "little"))
            model_paths.append(p)
            continue
        size = rng.choice((0, 100, 700, 2000, 6000, 20000))
        (d / f"file{i}.txt").write_bytes(b"x" * size)
    return model_paths


def scan_once(root: Path, state: Path, models: int, throttled: bool) -> tuple[float, float, int]:
    kwargs: dict[str, float] = {}
    if not throttled:
        kwargs = {
            "files_per_second": 1e9,
            "read_bytes_per_second": 1e12,
            "hash_bytes_per_second": 1e12,
            "cpu_percent": 100.0,
        }
    sensor = FileSensor(
        state_path=state,
        homes=[],
        paths=[str(root)],
        default_roots=False,
        scan_homes=False,
        media_prefixes=["/nonexistent-media"],
        low_priority=False,
        **kwargs,  # type: ignore[arg-type]
    )
    c0, t0 = time.process_time(), time.perf_counter()
    sensor.start()
    sensor.first_scan_done.wait(600)
    while sum(1 for m in sensor.inventory() if m.sha256) < models and time.perf_counter() - t0 < 600:
        time.sleep(0.01)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    found = len(sensor.inventory())
    sensor.stop()
    return wall, cpu, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--hash-mib", type=int, default=256)
    args = parser.parse_args()
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="umbra-bench-files-") as tmp_name:
        tmp = Path(tmp_name)
        rows += identification(tmp)
        rows += hashing(tmp, args.hash_mib)
        (tmp / "big.bin").unlink()
        tree = tmp / "tree"
        t = time.perf_counter()
        make_tree(tree, args.files, args.models)
        made = time.perf_counter() - t
        wall, cpu, found = scan_once(tree, tmp / "s1.db", args.models, throttled=False)
        rows.append(
            (
                f"first scan, {args.files:,} files + {args.models} models, unthrottled (s)",
                f"{wall:.1f}",
                "< 60",
                f"CPU {cpu:.1f} s; models found {found}/{args.models}, all hashed; tree made in {made:.0f} s",
            )
        )
        wall2, cpu2, found2 = scan_once(tree, tmp / "s1.db", args.models, throttled=False)
        rows.append(
            (
                "restart with the cache, unthrottled (s)",
                f"{wall2:.1f}",
                "",
                f"CPU {cpu2:.1f} s; judged files are not re-read, hashes not recomputed; found {found2}",
            )
        )
        wall3, cpu3, found3 = scan_once(tree, tmp / "s3.db", args.models, throttled=True)
        rows.append(
            (
                "first scan at default budgets (s)",
                f"{wall3:.1f}",
                "",
                f"2,000 files/s, 8 MiB/s reads, {DEFAULT_HASH_MIB:g} MiB/s hashing: CPU {cpu3:.1f} s "
                f"({100 * cpu3 / wall3:.0f}% of a core); found {found3}",
            )
        )
    widths = [max(len(r[i]) for r in [("figure", "value", "goal", "note"), *rows]) for i in range(4)]
    header = ("figure", "value", "goal", "note")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()

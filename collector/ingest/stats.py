"""The collector's counters: kept per process, shared between the processes of `serve --workers N`
through one small JSON file each, and summed for /healthz."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

#: Upper bounds (seconds) of the store-latency histogram: a commit with one fsync takes milliseconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class ServerStats:
    """Counters since start, reported by /healthz and logged at shutdown."""

    streams_opened: int = 0
    streams_active: int = 0
    streams_refused: int = 0
    batches_stored: int = 0
    batches_invalid: int = 0
    findings_new: int = 0
    findings_updated: int = 0
    findings_unchanged: int = 0
    heartbeats: int = 0
    inventories: int = 0
    store_errors: int = 0
    commits: int = 0  # transactions the batch writer made (batches_stored / commits = grouping)
    malformed_messages: int = 0
    streams_broken: int = 0  # ended by the transport: cancelled, oversized message, reset
    enrollments: int = 0
    renewals: int = 0
    enrollments_refused: int = 0
    policy_pushes: int = 0
    hosts_marked_silent: int = 0
    hosts_back: int = 0
    refused_by_status: dict[str, int] = field(default_factory=dict)
    #: Batch-writer commit times: count per bucket (upper bound in seconds, as "%g"), sum in us.
    store_latency_buckets: dict[str, int] = field(default_factory=dict)
    store_latency_count: int = 0
    store_latency_us: int = 0

    def refused(self, code: grpc.StatusCode) -> None:
        self.refused_by_status[code.name] = self.refused_by_status.get(code.name, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def store_latency(self, seconds: float) -> None:
        """Count one commit's duration in its histogram bucket (the last bucket is +Inf)."""
        self.store_latency_count += 1
        self.store_latency_us += int(seconds * 1e6)
        for bound in LATENCY_BUCKETS:
            if seconds <= bound:
                key = f"{bound:g}"
                self.store_latency_buckets[key] = self.store_latency_buckets.get(key, 0) + 1
                return


def write_worker_stats(stats: ServerStats, stats_dir: Path | None, worker_name: str) -> None:
    """Publish this process's counters for the other workers (atomically: write, then rename)."""
    if stats_dir is None:
        return
    path = stats_dir / f"worker-{worker_name}.json"
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(OSError):
        tmp.write_text(json.dumps(stats.to_dict()))
        os.replace(tmp, path)


def merged_stats(stats: ServerStats, stats_dir: Path | None, worker_name: str) -> tuple[dict[str, Any], int]:
    """This process's counters plus the other workers' last published ones, and the worker count."""
    counters = stats.to_dict()
    workers = 1
    if stats_dir is None:
        return counters, workers
    for path in sorted(stats_dir.glob("worker-*.json")):
        if path.name == f"worker-{worker_name}.json":
            continue
        try:
            other = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        workers += 1
        for key, value in other.items():
            if isinstance(value, int) and isinstance(counters.get(key), int):
                counters[key] += value
            elif isinstance(value, dict) and isinstance(counters.get(key), dict):
                for k, v in value.items():
                    counters[key][k] = counters[key].get(k, 0) + v
    return counters, workers

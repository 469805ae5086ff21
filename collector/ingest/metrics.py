"""Prometheus metrics at /metrics: findings ingested, batches refused by reason, streams open,
store latency, hosts by state.

`serve --workers N` runs N processes and only worker 0 serves HTTP. Rather than prometheus-client's
multiprocess mode (an environment variable set before import, one mmap file per process and
metric, and cleanup of dead workers' files), the metrics are built at scrape time from the
counters every worker already publishes for /healthz (stats.merged_stats: this process's live
counters plus the others' last published ones, at most --monitor-interval old). So /metrics and
/healthz always agree, and a scrape sees the sum over all workers, as a Prometheus user expects
from one collector service. Hosts by state are read from the store at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .stats import LATENCY_BUCKETS


class _FromCounters(Collector):
    def __init__(
        self, counters: Callable[[], Mapping[str, Any]], host_states: Callable[[], Mapping[str, int]]
    ):
        self._counters = counters
        self._host_states = host_states

    def collect(self) -> Iterator[Metric]:
        c = self._counters()
        ingested = CounterMetricFamily(
            "umbra_findings_ingested", "Findings in stored batches, by what the store did", labels=["result"]
        )
        for result in ("new", "updated", "unchanged"):
            ingested.add_metric([result], c.get(f"findings_{result}", 0))
        yield ingested
        yield CounterMetricFamily(
            "umbra_batches_stored", "Batches stored and acknowledged", value=c.get("batches_stored", 0)
        )
        refused = CounterMetricFamily(
            "umbra_batches_refused", "Batches refused, by reason", labels=["reason"]
        )
        refused.add_metric(["invalid"], c.get("batches_invalid", 0))
        refused.add_metric(["store_unavailable"], c.get("store_errors", 0))
        yield refused
        streams_refused = CounterMetricFamily(
            "umbra_refusals", "Streams and enrollments refused, by gRPC status", labels=["code"]
        )
        for code, n in sorted(c.get("refused_by_status", {}).items()):
            streams_refused.add_metric([code], n)
        yield streams_refused
        yield GaugeMetricFamily(
            "umbra_streams_open", "Agent streams open now", value=c.get("streams_active", 0)
        )
        buckets = c.get("store_latency_buckets", {})
        cumulative, total = [], 0
        for bound in LATENCY_BUCKETS:
            total += buckets.get(f"{bound:g}", 0)
            cumulative.append((f"{bound:g}", total))
        count = c.get("store_latency_count", 0)
        cumulative.append(("+Inf", count))
        yield HistogramMetricFamily(
            "umbra_store_commit_seconds",
            "Time the batch writer takes to store one group of batches (one transaction)",
            buckets=cumulative,
            sum_value=c.get("store_latency_us", 0) / 1e6,
        )
        hosts = GaugeMetricFamily("umbra_hosts", "Known hosts by state", labels=["state"])
        for state, n in sorted(self._host_states().items()):
            hosts.add_metric([state], n)
        yield hosts


def metrics_endpoint(
    counters: Callable[[], Mapping[str, Any]], host_states: Callable[[], Mapping[str, int]]
) -> Callable[[], tuple[bytes, str]]:
    """What the HTTP API calls on GET /metrics: (body, content type) in Prometheus's text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_FromCounters(counters, host_states))
    return lambda: (generate_latest(registry), CONTENT_TYPE_LATEST)

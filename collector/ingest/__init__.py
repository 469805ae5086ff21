"""Ingest: the gRPC side of the collector, one module a job.

listeners (options, TLS, ports) -> stream (one stream per agent) and enroll (certificates) ->
writer (group commit to the store), with budget (memory bound), fleet (state the streams share),
monitor (revocations, policy, silence), stats (counters), and server (all of it as one).
"""

from __future__ import annotations

from .budget import Budget
from .limits import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_MAX_STREAMS_PER_HOST,
    DEFAULT_MONITOR_INTERVAL,
    DEFAULT_SILENT_AFTER,
    MAX_MESSAGE_BYTES,
)
from .listeners import BindError, ServerTLS, server_options
from .server import CollectorServer, serve
from .stats import ServerStats

__all__ = [
    "DEFAULT_GRACE_SECONDS",
    "DEFAULT_MAX_STREAMS_PER_HOST",
    "DEFAULT_MONITOR_INTERVAL",
    "DEFAULT_SILENT_AFTER",
    "MAX_MESSAGE_BYTES",
    "BindError",
    "Budget",
    "CollectorServer",
    "ServerStats",
    "ServerTLS",
    "serve",
    "server_options",
]

"""Limits and defaults of the ingest side, in one place (the agent's channel options agree with them)."""

from __future__ import annotations

import datetime as dt

STREAM_SERVICE = "umbra.v1.StreamService"
ENROLL_SERVICE = "umbra.v1.EnrollService"
#: Largest AgentMessage accepted; agents must keep batches below it.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
#: Agents may send keepalive pings no more often than this (gRPC closes abusive connections).
MIN_CLIENT_PING_INTERVAL_MS = 10_000
DEFAULT_GRACE_SECONDS = 5.0
DEFAULT_SILENT_AFTER = 300.0
DEFAULT_MONITOR_INTERVAL = 5.0
DEFAULT_MAX_STREAMS_PER_HOST = 2
DEFAULT_HELLO_TIMEOUT = 30.0
DEFAULT_AGENT_CERT_VALIDITY = dt.timedelta(days=30)
#: Enroll requests are small (a CSR); anything bigger is refused early.
MAX_ENROLL_BYTES = 64 * 1024
#: Batches of one stream received but not yet acked; beyond it HTTP/2 flow control holds the agent.
MAX_PENDING_BATCHES_PER_STREAM = 8
#: Findings committed in one transaction at most (a group of batches).
MAX_FINDINGS_PER_COMMIT = 50_000
#: Bytes of batches received and not yet stored, over all streams (a memory bound).
MAX_PENDING_BYTES = 16 * 1024 * 1024  # ~125,000 findings; parsed and prepared, ~4 KiB per KiB
#: All RPCs at once; beyond it gRPC answers RESOURCE_EXHAUSTED.
MAX_CONCURRENT_RPCS = 20_000

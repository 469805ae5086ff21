"""The read side: every view the CLI, the HTTP API (and the console and reports) show, over the
`Store` interface only. Aggregates are computed by the database (see storage.reads); nothing here
holds all findings.

findings (pages with a cursor), risk (host, user and fleet scores), documents (the host list and
fleet document), activity (services, runtimes, compute, transfers, model census, silent hosts),
snapshots (daily risk, trends), admin (tokens, agents, policy), export (OCSF, JSONL, CSV).
"""

from __future__ import annotations

from .findings import BadQuery, FindingsResult, finding_filter, list_findings
from .times import iso_seconds

__all__ = ["BadQuery", "FindingsResult", "finding_filter", "iso_seconds", "list_findings"]

"""Fleet activity views: AI services, local runtimes and exposed servers, GPU and fine-tuning,
AI agents, MCP servers and AI extensions, the model census, exfiltration and downloads, silent
hosts. Each is one grouped query."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from umbra.v1 import finding_pb2

from ..storage.base import HostContact, Store
from ..storage.reads import ActivityRow, FindingFilter, ModelRow, RuntimeRow, ServiceRow

COMPUTE_KINDS = (finding_pb2.KIND_GPU_AI_WORKLOAD, finding_pb2.KIND_FINE_TUNING)
TRANSFER_KINDS = (finding_pb2.KIND_MODEL_EXFILTRATION, finding_pb2.KIND_MODEL_DOWNLOAD)
AITOOL_KINDS = (finding_pb2.KIND_AI_AGENT, finding_pb2.KIND_MCP_SERVER, finding_pb2.KIND_AI_EXTENSION)


def services(store: Store, since: float | None = None) -> list[ServiceRow]:
    """AI services used across the fleet: hosts, processes, bytes up, approved or not."""
    return store.services(since)


def service_categories(store: Store, names: Sequence[str]) -> dict[str, str]:
    """Each AI service's category ("chat_app", "model_api"... as the agent's catalog names it; ""
    when its findings carry none), read from its newest finding: one indexed lookup per service,
    so the cost follows the number of services, never the number of findings."""
    out: dict[str, str] = {}
    for name in names:
        page = store.findings_page(FindingFilter(service=name), 1)
        out[name] = next(
            (
                str(ev.get("category", ""))
                for f in page.findings
                for ev in f["evidence"]
                if ev.get("type") == "network" and ev.get("host_name") == name
            ),
            "",
        )
    return out


def runtimes(store: Store, since: float | None = None) -> list[RuntimeRow]:
    """Local model runtimes across the fleet, with the hosts where one is exposed."""
    return store.runtimes(since)


def compute(store: Store, since: float | None = None) -> list[ActivityRow]:
    """GPU AI workloads and fine-tuning, per host."""
    return store.activity([int(k) for k in COMPUTE_KINDS], since)


def transfers(store: Store, since: float | None = None) -> list[ActivityRow]:
    """Model exfiltration and downloads, per host, with their bytes."""
    return store.activity([int(k) for k in TRANSFER_KINDS], since)


def aitools(store: Store, since: float | None = None) -> list[ActivityRow]:
    """AI agents, MCP servers and AI extensions, per host: which hosts hold them, how many unapproved."""
    return store.activity([int(k) for k in AITOOL_KINDS], since)


def census(store: Store, limit: int = 100, holders: int = 10) -> list[ModelRow]:
    """Distinct model weights by SHA-256; unapproved weights on several hosts come first."""
    return store.model_census(limit, holders)


@dataclass(frozen=True)
class SilentHost:
    host_id: str
    last_seen: float
    silent_since: float  # when the collector marked it; 0.0 when only overdue

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def silent_hosts(store: Store, silent_after: float, now: float | None = None) -> list[SilentHost]:
    """Hosts marked silent, or without contact for `silent_after` seconds; longest silent first."""
    now = time.time() if now is None else now
    out = [
        SilentHost(c.host_id, c.last_seen, c.silent_since)
        for c in store.host_contacts()
        if _is_silent(c, silent_after, now)
    ]
    return sorted(out, key=lambda s: (s.last_seen, s.host_id))


def _is_silent(c: HostContact, silent_after: float, now: float) -> bool:
    return c.silent_since > 0 or now - c.last_seen >= silent_after


def host_states(store: Store, silent_after: float, now: float | None = None) -> dict[str, int]:
    """Known hosts by state: "reporting", or "silent" (marked, or without contact for `silent_after`)."""
    now = time.time() if now is None else now
    states = {"reporting": 0, "silent": 0}
    for c in store.host_contacts():
        states["silent" if _is_silent(c, silent_after, now) else "reporting"] += 1
    return states

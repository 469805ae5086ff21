"""AI_SERVICE_ACCESS and AI_DATA_UPLOAD from network observations.

A flow whose host name (DNS question, TLS/QUIC SNI, HTTP Host, or a CNAME a DNS answer gave
for it) is in the endpoint catalog is an AI_SERVICE_ACCESS, approved or not: the policy decides
that, the detector only says what it saw. When the client sent more than `upload_threshold`
bytes on one flow to a service the policy does not approve, that is also an AI_DATA_UPLOAD. Its
summary says who counted the bytes (the kernel, for a TCP socket the live sensor could read, or
the captured packets) and, for a count from packets while the capture lost some, that it may be
short.

Confidence says how directly the name ties to the traffic:

==========================================  ==========
name came from                              confidence
==========================================  ==========
TLS or QUIC SNI, HTTP Host                  0.95
a DNS question for the name                 0.90
a flow to an address a DNS answer gave      0.60 (shared CDN addresses serve many names)
a CNAME target in a DNS answer              -0.05
nothing: an Encrypted Client Hello hid it   0.50 (an info finding per program and provider)
==========================================  ==========

An Encrypted Client Hello to a fronting provider (netparse/tls.py: ECH_PUBLIC_NAMES) names the
provider, not the server: the flow takes the name a DNS answer gave its address (0.60, as any
flow named so), or, with none, becomes the info finding above rather than nothing.

One finding per service host and client executable; the client processes seen on its flows in
the last `client_window` seconds are each listed with their pid, command line and user
(instances.py), so two scripts calling one API are both visible and a script run every minute
is one finding whose count grows.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from typing import Final

from umbra import codec
from umbra.codec import human_size as size
from umbra.v1 import finding_pb2 as fpb

from agent.catalog.aitools import AgentEntry, AiToolsCatalog, default_aitools_catalog
from agent.catalog.endpoints import EndpointCatalog, EndpointMatch
from agent.delivery.tracker import FindingDraft
from agent.detection.evidence import ai_agent_evidence, network_evidence
from agent.detection.instances import Instances, with_instances
from agent.observations import AiAgentObservation, NetworkObservation, ProcessObservation
from agent.policy.rules import Policy

__all__ = ["DEFAULT_UPLOAD_THRESHOLD", "NetworkDetector"]

DEFAULT_UPLOAD_THRESHOLD: Final = 1_000_000  # bytes out on one flow (IP bytes, headers included)
CLIENT_WINDOW: Final = 300.0  # seconds a client process stays listed after its last flow
CONF_HANDSHAKE: Final = 0.95
CONF_DNS_QUESTION: Final = 0.90
CONF_DNS_ADDRESS: Final = 0.60
CONF_ECH_HIDDEN: Final = 0.50  # some service behind the provider; policy's default floor keeps it
ALIAS_PENALTY: Final = 0.05
_UPLOAD_SEVERITY: Final = {
    "info": fpb.SEVERITY_LOW,
    "low": fpb.SEVERITY_MEDIUM,
    "medium": fpb.SEVERITY_HIGH,
    "high": fpb.SEVERITY_HIGH,
    "critical": fpb.SEVERITY_CRITICAL,
}


class NetworkDetector:
    """Network observations + the endpoint catalog -> drafts. No I/O."""

    def __init__(
        self,
        catalog: EndpointCatalog,
        *,
        approved: Collection[str] = (),
        upload_threshold: int = DEFAULT_UPLOAD_THRESHOLD,
        client_window: float = CLIENT_WINDOW,
        agents: AiToolsCatalog | None = None,
    ) -> None:
        self.catalog = catalog
        self._agents = agents  # the AI tooling catalog, loaded at the first flow with a process
        self.approved = frozenset(approved)
        self.upload_threshold = upload_threshold
        self.clients = Instances(window=client_window)

    def apply_policy(self, policy: Policy) -> None:
        """A new policy (pushed by the collector): its approved services and upload threshold."""
        self.approved = policy.approved_services
        self.upload_threshold = policy.upload_threshold_bytes

    def detect(self, obs: object) -> list[FindingDraft]:
        """Drafts for one observation; [] for observations of other kinds or unknown hosts."""
        if not isinstance(obs, NetworkObservation):
            return []
        match, via_alias = self._match(obs)
        if match is None:
            return self._hidden(obs)
        entry = match.entry
        confidence = (
            CONF_HANDSHAKE
            if obs.source in ("tls_sni", "quic_sni", "http_host")
            else CONF_DNS_ADDRESS
            if obs.resolved
            else CONF_DNS_QUESTION
        ) - (ALIAS_PENALTY if via_alias else 0.0)
        process = obs.process
        who = (process.exe or process.name) if process is not None else "none"
        user = process.username if process is not None else ""
        evidence = network_evidence(obs, entry)
        alias = f" (via {match.host_name})" if via_alias else ""
        agent = self._agent(process)
        by, extra = "", []
        if process is not None:  # "by Claude Code (pid 4242, node)" when an AI agent is the client
            by = f" by {process.name} (pid {process.pid})"
            if agent is not None:
                by = f" by {agent.name} (pid {process.pid}, {process.name})"
                extra = [ai_agent_evidence(AiAgentObservation(agent.id, "process", process.exe), agent)]
        drafts = [
            FindingDraft(
                kind=fpb.KIND_AI_SERVICE_ACCESS,
                key=f"{entry.vendor}|{obs.host_name}|{who}",
                severity=codec.severity_value(entry.risk),
                confidence=confidence,
                summary=f"{entry.product} ({entry.vendor}) contacted: {obs.host_name}{alias}{by}, "
                f"{_source_text(obs)}",
                occurrence=obs.occurrence,
                subject=entry.id,
                user=user,
                process=process,
                evidence=[evidence, *extra],
            )
        ]
        approved = self.catalog.approval_rule(entry, self.approved) is not None
        if not approved and obs.bytes_out > self.upload_threshold:
            drafts.append(
                FindingDraft(
                    kind=fpb.KIND_AI_DATA_UPLOAD,
                    key=f"{entry.vendor}|{obs.host_name}|{who}",
                    severity=_UPLOAD_SEVERITY[entry.risk],
                    confidence=confidence,
                    summary=f"{size(obs.bytes_out)} sent to {entry.product} ({obs.host_name}){by}, "
                    f"{_counted_by(obs)}",
                    occurrence=obs.occurrence,
                    subject=entry.id,
                    user=user,
                    process=process,
                    evidence=[evidence, *extra],
                )
            )
        return [self._with_clients(d, obs.last_seen) for d in drafts]

    def _agent(self, process: ProcessObservation | None) -> AgentEntry | None:
        """The AI agent a flow's client process is (Claude Code, Codex CLI ...), if any."""
        if process is None:
            return None
        if self._agents is None:
            self._agents = default_aitools_catalog()
        return self._agents.agent_of_process(process.name, process.cmdline)

    def _with_clients(self, draft: FindingDraft, at: float) -> FindingDraft:
        """The flow's draft listing every client process of its finding seen lately (none for a
        flow without a process: a capture file)."""
        if draft.process is None:
            return draft
        listed, total = self.clients.live(draft, at)
        clients = [d.process for d in listed if d.process is not None]
        return with_instances(draft, clients, total, "client processes lately")

    def _hidden(self, obs: NetworkObservation) -> list[FindingDraft]:
        """A flow whose Encrypted Client Hello hid its real server behind a fronting provider,
        with no DNS answer naming it: not dropped, but an info finding per program and provider
        (it may be an AI service; nothing on the wire says which)."""
        if not obs.ech_outer_name:
            return []
        process = obs.process
        who = (process.exe or process.name) if process is not None else "none"
        by = f" by {process.name} (pid {process.pid})" if process is not None else ""
        draft = FindingDraft(
            kind=fpb.KIND_AI_SERVICE_ACCESS,
            key=f"ech|{obs.ech_outer_name}|{who}",
            severity=fpb.SEVERITY_INFO,
            confidence=CONF_ECH_HIDDEN,
            summary=f"Encrypted Client Hello to {obs.ech_outer_name}{by}: the real server name is hidden "
            f"({obs.server_ip}:{obs.server_port}/{obs.transport}, no DNS answer named the address)",
            occurrence=obs.occurrence,
            subject=f"ech:{obs.ech_outer_name}",
            user=process.username if process is not None else "",
            process=process,
            evidence=[network_evidence(obs, None)],
        )
        return [self._with_clients(draft, obs.last_seen)]

    def _match(self, obs: NetworkObservation) -> tuple[EndpointMatch | None, bool]:
        match = self.catalog.match(obs.host_name)
        if match is not None:
            return match, False
        for alias in obs.aliases:
            match = self.catalog.match(alias)
            if match is not None:
                return match, True
        return None, False


def _counted_by(obs: NetworkObservation) -> str:
    """Who counted an upload's bytes, and whether the count may be short."""
    text = _COUNTED_BY.get(obs.bytes_source, "counted from captured packets")
    if obs.capture_drops and obs.bytes_source != "kernel":
        text += f"; the capture lost {obs.capture_drops:,} packets meanwhile, so it may be short"
    return text


_COUNTED_BY: Final = {
    "kernel": "counted by the kernel (the socket's TCP counters)",
    "kernel+capture": "counted by the kernel until the socket closed unread, then from captured packets",
}


def _source_text(obs: NetworkObservation) -> str:
    if obs.ech_outer_name and obs.source == "dns":
        plain = _source_text(replace(obs, ech_outer_name=""))
        return f"{plain}; an Encrypted Client Hello to {obs.ech_outer_name} hid the name"
    where = f"{obs.server_ip}:{obs.server_port}/{obs.transport}"
    if obs.source == "dns":
        if obs.resolved:
            return f"flow to {where}, an address a DNS answer gave for the name"
        return f"DNS question to {where}"
    if obs.source == "socket_table":
        return f"connection to {where}, an address this host resolves the name to (no capture here)"
    return {"tls_sni": "TLS SNI", "quic_sni": "QUIC SNI", "http_host": "HTTP Host"}.get(
        obs.source, obs.source
    ) + (f" to {where}")

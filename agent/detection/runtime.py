"""LOCAL_MODEL_RUNTIME and MODEL_SERVER_EXPOSED from process observations."""

from __future__ import annotations

from umbra import codec
from umbra.v1 import finding_pb2 as fpb

from agent.catalog.runtimes import RuntimeCatalog, RuntimeMatch
from agent.findings import FindingDraft
from agent.observations import ListeningSocket, ProcessObservation


class RuntimeDetector:
    def __init__(self, catalog: RuntimeCatalog) -> None:
        self.catalog = catalog

    def detect(self, obs: ProcessObservation) -> list[FindingDraft]:
        matches = self.catalog.match(
            obs.name, obs.exe, obs.cmdline, [s.port for s in obs.listening], cwd=obs.cwd or None
        )
        if not matches:
            return []
        match = matches[0]
        drafts = [self._runtime(obs, match)]
        drafts.extend(self._exposed(obs, match, sock) for sock in obs.listening if sock.exposed)
        return drafts

    def _runtime(self, obs: ProcessObservation, match: RuntimeMatch) -> FindingDraft:
        entry = match.entry
        listening = f", listening on {', '.join(map(str, obs.listening))}" if obs.listening else ""
        return FindingDraft(
            kind=fpb.KIND_LOCAL_MODEL_RUNTIME,
            key=f"{entry.id}|{obs.exe or obs.name}|{obs.username}",
            severity=codec.severity_value(entry.severity),
            confidence=match.confidence,
            summary=f"{entry.name} running as {obs.username or 'an unknown user'} "
            f"(pid {obs.pid}, {obs.name}){listening}",
            occurrence=obs.instance_key,
            subject=entry.id,
            user=obs.username,
            process=obs,
            evidence=[_runtime_evidence(match), *(_socket_evidence(s) for s in obs.listening)],
        )

    def _exposed(self, obs: ProcessObservation, match: RuntimeMatch, sock: ListeningSocket) -> FindingDraft:
        entry = match.entry
        return FindingDraft(
            kind=fpb.KIND_MODEL_SERVER_EXPOSED,
            key=f"{entry.id}|{obs.exe or obs.name}|{sock.address}|{sock.port}",
            severity=fpb.SEVERITY_HIGH,
            confidence=match.confidence,
            summary=f"{entry.name} accepts connections from the network on {sock} (pid {obs.pid})",
            occurrence=obs.instance_key,
            subject=entry.id,
            user=obs.username,
            process=obs,
            evidence=[_runtime_evidence(match), _socket_evidence(sock)],
        )


def _runtime_evidence(match: RuntimeMatch) -> fpb.Evidence:
    return fpb.Evidence(
        runtime=fpb.RuntimeEvidence(
            runtime_id=match.entry.id,
            runtime_name=match.entry.name,
            matched_on=list(match.matched_on),
            reasons=list(match.reasons),
        )
    )


def _socket_evidence(sock: ListeningSocket) -> fpb.Evidence:
    return fpb.Evidence(
        socket=fpb.SocketEvidence(
            address=sock.address, port=sock.port, transport=sock.transport, exposed=sock.exposed
        )
    )

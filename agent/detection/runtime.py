"""LOCAL_MODEL_RUNTIME and MODEL_SERVER_EXPOSED from process observations.

A runtime is recognised by what the catalog knows (name, executable, command line, default
port) and, beyond names, by what the process does: the AI libraries it maps and the model
weights it maps or holds open. A renamed llama.cpp binary, or `python worker.py` that maps a
GGUF file, is still a runtime; the evidence says why, and the confidence says how sure.

One LOCAL_MODEL_RUNTIME per program (runtime, executable, user) and one MODEL_SERVER_EXPOSED per
endpoint (runtime, executable, address, port), each listing every live instance (instances.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from umbra import codec
from umbra.v1 import finding_pb2 as fpb

from agent.catalog.process_signals import LibrarySignal, ProcessSignals, default_process_signals
from agent.catalog.runtimes import RuntimeCatalog, RuntimeEntry
from agent.delivery.tracker import FindingDraft
from agent.detection.drafts import process_draft
from agent.detection.evidence import model_file_evidence, runtime_evidence, socket_evidence
from agent.detection.instances import Instances, program_draft
from agent.observations import ListeningSocket, Observation, ProcessObservation

# Confidence of a runtime known only by its behaviour (no catalog name or command line).
CONFIDENCE_MODEL_FILE = 0.85  # it maps or holds model weights
CONFIDENCE_INFERENCE_LIBRARY = 0.7  # it maps an inference engine (libllama, onnxruntime ...)
CONFIDENCE_BOTH = 0.95
BEHAVIOUR_BONUS = 0.05  # per behaviour (libraries, weights) that confirms a catalog match


class RuntimeDetector:
    def __init__(self, catalog: RuntimeCatalog, signals: ProcessSignals | None = None) -> None:
        self.catalog = catalog
        self.signals = signals or default_process_signals()
        self.instances = Instances(live_by=(ProcessObservation,))

    def begin_poll(self, observations: Sequence[Observation]) -> None:
        self.instances.begin_poll(observations)

    def detect(self, obs: Observation) -> list[FindingDraft]:
        if not isinstance(obs, ProcessObservation):
            return []  # GPU observations: agent/detection/gpu.py
        identified = self._identify(obs)
        if identified is None:
            return []
        entry, confidence, matched_on, reasons = identified
        evidence = runtime_evidence(
            obs, entry.id if entry else "", entry.name if entry else "", matched_on, reasons
        )
        drafts = [_runtime(obs, entry, confidence, evidence)]
        drafts.extend(
            _exposed(obs, entry, confidence, evidence, sock) for sock in obs.listening if sock.exposed
        )
        return [program_draft(d, self.instances.live(d)) for d in drafts]

    def _identify(
        self, obs: ProcessObservation
    ) -> tuple[RuntimeEntry | None, float, list[str], list[str]] | None:
        """(catalog entry or None for an unnamed runtime, confidence, matched_on, reasons)."""
        inference = [s for s in map(self.signals.library, obs.libraries) if s and s.category == "inference"]
        behaviour_on, behaviour_reasons = _behaviour(obs, inference)
        matches = self.catalog.match(
            obs.name, obs.exe, obs.cmdline, [s.port for s in obs.listening], cwd=obs.cwd or None
        )
        if matches:
            match = matches[0]
            bonus = BEHAVIOUR_BONUS * len(behaviour_on)
            return (
                match.entry,
                min(0.99, match.confidence + bonus),
                [*match.matched_on, *behaviour_on],
                [*match.reasons, *behaviour_reasons],
            )
        if not behaviour_on:
            return None
        if obs.model_files and inference:
            confidence = CONFIDENCE_BOTH
        elif obs.model_files:
            confidence = CONFIDENCE_MODEL_FILE
        else:
            confidence = CONFIDENCE_INFERENCE_LIBRARY
        hinted = next((s.runtime for s in inference if s.runtime), "")
        return self.catalog.get(hinted) if hinted else None, confidence, behaviour_on, behaviour_reasons


def _runtime(
    obs: ProcessObservation, entry: RuntimeEntry | None, confidence: float, evidence: fpb.Evidence
) -> FindingDraft:
    label = _label(entry, obs)
    listening = f", listening on {', '.join(map(str, obs.listening))}" if obs.listening else ""
    weights = f", with {os.path.basename(obs.model_files[0])} loaded" if obs.model_files else ""
    return process_draft(
        obs,
        fpb.KIND_LOCAL_MODEL_RUNTIME,
        f"{entry.id if entry else 'unnamed'}|{obs.exe or obs.name}|{obs.username}",
        codec.severity_value(entry.severity if entry else "medium"),
        confidence,
        f"{label} running as {obs.username or 'an unknown user'} (pid {obs.pid}, {obs.name})"
        f"{weights}{listening}",
        subject=entry.id if entry else "",
        evidence=[
            evidence,
            *(socket_evidence(s) for s in obs.listening),
            *(model_file_evidence(m) for m in obs.models),
        ],
    )


def _exposed(
    obs: ProcessObservation,
    entry: RuntimeEntry | None,
    confidence: float,
    evidence: fpb.Evidence,
    sock: ListeningSocket,
) -> FindingDraft:
    return process_draft(
        obs,
        fpb.KIND_MODEL_SERVER_EXPOSED,
        f"{entry.id if entry else 'unnamed'}|{obs.exe or obs.name}|{sock.address}|{sock.port}",
        fpb.SEVERITY_HIGH,
        confidence,
        f"{_label(entry, obs)} accepts connections from the network on {sock} (pid {obs.pid})",
        subject=entry.id if entry else "",
        evidence=[evidence, socket_evidence(sock)],
    )


def _behaviour(obs: ProcessObservation, inference: list[LibrarySignal]) -> tuple[list[str], list[str]]:
    matched_on: list[str] = []
    reasons: list[str] = []
    if inference:
        matched_on.append("library")
        names = ", ".join(dict.fromkeys(s.name for s in inference))
        reasons.append(f"maps inference libraries ({names})")
    if obs.model_files:
        matched_on.append("model_file")
        more = f" and {len(obs.model_files) - 1} more" if len(obs.model_files) > 1 else ""
        reasons.append(f"maps or holds model weights {obs.model_files[0]}{more}")
    return matched_on, reasons


def _label(entry: RuntimeEntry | None, obs: ProcessObservation) -> str:
    return entry.name if entry else f"An unnamed model runtime ({obs.name})"

"""MODEL_ARTIFACT, MODEL_DOWNLOAD and MODEL_EXFILTRATION from the file sensor's observations.

=====================  ==========================  ===========================================
kind                   dedupe key                  severity (unapproved)
=====================  ==========================  ===========================================
MODEL_ARTIFACT         the file's path             low: weights at rest
MODEL_DOWNLOAD         hub and SHA-256             medium: weights pulled onto the host
MODEL_EXFILTRATION     SHA-256 and destination     critical to removable media or a sync folder
                       (mount point, sync folder,  (the weights have left the company's
                       archive, new name)          control); high into an archive, under a
                                                   disguising name, or uploaded; low when the
                                                   content was not verified (identified_by
                                                   "size" or "writer")
=====================  ==========================  ===========================================

Weights count as exfiltrated only when their content says so (the header, read from the copy
or from the archive's entry) or their hash is a known model's. When an archive's entry cannot
be read (a 7z solid block), the sensor reports it only as "same size as X, content not
verified", and this finding is low with the sensor's low confidence: a size is not evidence an
investigation can rest on.

MODEL_ARTIFACT is one finding per path, not per content: the inventory is per path, a policy
by directory decides per path, and a finding never flips between two copies. Copies carry the
same sha256 in their evidence, so the console can group them. Occurrences of a download or an
exfiltration are the destination paths (a model copied twice onto one stick is one finding,
count 2).

Files the file sensor's rule demotes (agent/sensors/files/significance.py: below the size or
parameter floor, shipped by a package, arrays without model context) are all three kinds at
info, whatever they would be, with the rule's reasons in the evidence.

Policy (agent/policy/rules.py): an approved hash approves all three kinds (approved weights are not
sensitive); an approved directory approves an artifact or a download below it, and an
exfiltration only when its destination is below it (an approved folder is no licence to carry
its models out). Approved findings are kept at info severity with the rule.
"""

from __future__ import annotations

import os

from umbra.codec import human_size as size
from umbra.v1 import finding_pb2 as fpb

from agent.delivery.tracker import FindingDraft
from agent.detection.evidence import hub_evidence, model_file_evidence, transfer_evidence
from agent.modelfiles.model import human_count
from agent.observations import ModelFileObservation, ModelTransferObservation, Observation

SEVERITY_BY_DESTINATION = {
    "removable_media": fpb.SEVERITY_CRITICAL,
    "sync_folder": fpb.SEVERITY_CRITICAL,
    "archive": fpb.SEVERITY_HIGH,
    "rename": fpb.SEVERITY_HIGH,
    "upload": fpb.SEVERITY_HIGH,
    "hub": fpb.SEVERITY_HIGH,
}
_WHERE = {
    "removable_media": "copied to removable media",
    "sync_folder": "copied to a cloud-sync folder",
    "archive": "packed into an archive",
    "rename": "disguised under an innocent name",
    "upload": "uploaded off the host",
    "hub": "pushed to a model hub",
}
VERIFIED = frozenset({"content", "hash"})  # the ways a transfer's bytes are known to be weights


class ArtifactDetector:
    def detect(self, obs: Observation) -> list[FindingDraft]:
        if isinstance(obs, ModelFileObservation):
            drafts = [self._artifact(obs)]
            if obs.origin == "download":
                drafts.append(self._download(obs))
            return drafts
        if isinstance(obs, ModelTransferObservation):
            return [self._exfiltration(obs)]
        return []  # training artifacts: agent/detection/finetune.py

    def _artifact(self, obs: ModelFileObservation) -> FindingDraft:
        return FindingDraft(
            kind=fpb.KIND_MODEL_ARTIFACT,
            key=obs.path,
            severity=_demoted(obs, fpb.SEVERITY_LOW),
            confidence=obs.confidence,
            summary=f"Model weights {_describe(obs)} at {obs.path}"
            + (f" (info: {obs.reasons[0]})" if obs.demoted and obs.reasons else ""),
            occurrence=f"{obs.sha256 or obs.path}@{obs.size_bytes}",
            subject=obs.sha256,
            user=obs.owner,
            process=obs.writer,
            evidence=[model_file_evidence(obs)],
        )

    def _download(self, obs: ModelFileObservation) -> FindingDraft:
        hub = obs.hub
        by = f" by {obs.writer.name} (pid {obs.writer.pid})" if obs.writer else ""
        origin = f" from {hub}" if hub else ""
        evidence = [model_file_evidence(obs)]
        if (hub_source := hub_evidence(obs)) is not None:
            evidence.append(hub_source)
        return FindingDraft(
            kind=fpb.KIND_MODEL_DOWNLOAD,
            key=f"{hub}|{obs.sha256 or obs.path}",
            severity=_demoted(obs, fpb.SEVERITY_MEDIUM),
            confidence=obs.confidence,
            summary=f"Model weights {_describe(obs)} downloaded{origin}{by}: {obs.path}",
            occurrence=obs.path,
            subject=obs.sha256,
            user=obs.writer.username if obs.writer and obs.writer.username else obs.owner,
            process=obs.writer,
            evidence=evidence,
        )

    def _exfiltration(self, obs: ModelTransferObservation) -> FindingDraft:
        what = obs.model_name or obs.format or "model weights"
        by = f" by {obs.process.name} (pid {obs.process.pid})" if obs.process else ""
        source = f" from {obs.source_path}" if obs.source_path else ""
        verified = obs.identified_by in VERIFIED
        severity = SEVERITY_BY_DESTINATION.get(obs.kind, fpb.SEVERITY_HIGH) if verified else fpb.SEVERITY_LOW
        member = f"|{obs.member}" if not verified else ""  # unhashed entries: one finding each
        return FindingDraft(
            kind=fpb.KIND_MODEL_EXFILTRATION,
            key=f"{obs.sha256}|{obs.destination_root or obs.destination}{member}",
            severity=_demoted(obs, severity),
            confidence=obs.confidence,
            summary=f"{'Model weights' if verified else 'Possibly model weights'} ({what}, "
            f"{size(obs.size_bytes)}) {_WHERE.get(obs.kind, obs.kind)}"
            f"{source}{by}: {obs.destination}" + (f" ({obs.reason})" if obs.reason else ""),
            occurrence=obs.destination,
            subject=obs.sha256,
            user=obs.process.username if obs.process and obs.process.username else obs.owner,
            process=obs.process,
            evidence=transfer_evidence(obs),
        )


def _demoted(
    obs: ModelFileObservation | ModelTransferObservation, severity: fpb.Severity.ValueType
) -> fpb.Severity.ValueType:
    return fpb.SEVERITY_INFO if obs.demoted else severity


def _describe(obs: ModelFileObservation) -> str:
    parts = [obs.format]
    if obs.model_name:
        parts.append(obs.model_name)
    elif obs.architecture:
        parts.append(obs.architecture)
    if obs.parameter_count:
        parts.append(f"{human_count(obs.parameter_count)} parameters")
    if obs.quantization:
        parts.append(obs.quantization)
    parts.append(size(obs.size_bytes))
    return f"({', '.join(parts)})" if parts else os.path.basename(obs.path)

"""A policy pushed by the collector replaces every approval the local policy had, and keeps
what the fleet policy does not speak about (the endpoint catalog, approved paths)."""

from __future__ import annotations

from umbra.v1 import finding_pb2 as fpb

from agent.catalog.endpoints import default_endpoint_catalog
from agent.delivery.tracker import FindingDraft
from agent.policy.fleet import FleetPolicy
from agent.policy.rules import Policy

SHA = "ab" * 32


def _draft(kind: fpb.FindingKind.ValueType, subject: str) -> FindingDraft:
    return FindingDraft(
        kind=kind,
        key="k",
        severity=fpb.SEVERITY_MEDIUM,
        confidence=0.9,
        summary="s",
        occurrence="o",
        subject=subject,
    )


def test_pushed_policy_applies_services_hashes_and_thresholds() -> None:
    local = Policy(
        approved_runtimes=frozenset({"ollama"}),
        approved_paths=("/srv/models",),
        endpoints=default_endpoint_catalog(),
    )
    fleet = FleetPolicy(
        version=7,
        approved_runtimes=("vllm",),
        approved_services=("anthropic",),
        approved_model_hashes=(SHA.upper(),),
        thresholds={"min_confidence": 0.6, "upload_bytes": 5e6},
    )
    policy = fleet.detection_policy(local)
    assert policy.version == 7
    assert policy.approved_runtimes == frozenset({"vllm"})
    assert policy.approved_model_hashes == frozenset({SHA})
    assert (policy.min_confidence, policy.upload_threshold_bytes) == (0.6, 5_000_000)
    assert policy.approved_paths == ("/srv/models",) and policy.endpoints is local.endpoints

    service = policy.decide(_draft(fpb.KIND_AI_SERVICE_ACCESS, "anthropic-api"))
    assert service is not None and service.approved and service.rule == "approved_services:anthropic"
    model = policy.decide(_draft(fpb.KIND_MODEL_ARTIFACT, SHA))
    assert model is not None and model.rule == f"approved_model_hashes:{SHA}"
    runtime = policy.decide(_draft(fpb.KIND_LOCAL_MODEL_RUNTIME, "ollama"))
    assert runtime is not None and not runtime.approved, "the pushed policy replaced the local approvals"


def test_pushed_threshold_and_services_reach_the_network_detector() -> None:
    """The upload threshold and approved services are read by the network detector itself, so a
    pushed policy must reach it, not only the pipeline's judge."""
    from agent.delivery.tracker import FindingTracker
    from agent.detection.network import NetworkDetector
    from agent.pipeline import Pipeline
    from agent.sensors.network.flows import NetworkObservation

    catalog = default_endpoint_catalog()
    local = Policy(endpoints=catalog, upload_threshold_bytes=1_000_000)
    detector = NetworkDetector(catalog, approved=local.approved_services, upload_threshold=1_000_000)
    pipeline = Pipeline([], [detector], local, FindingTracker("host-1", 60.0))
    upload = NetworkObservation(
        "api.openai.com", "tls_sni", "10.0.0.2", 40000, "10.9.9.9", 443, "tcp", 1.0, 2.0, 2_000_000, 10, 9
    )

    def kinds() -> set[int]:
        return {d.kind for d in detector.detect(upload)}

    assert fpb.KIND_AI_DATA_UPLOAD in kinds(), "2 MB is over the local 1 MB threshold"
    pipeline.apply_policy(FleetPolicy(version=2, thresholds={"upload_bytes": 5e6}).detection_policy(local))
    assert pipeline.policy.version == 2
    assert kinds() == {fpb.KIND_AI_SERVICE_ACCESS}, "the pushed 5 MB threshold is in force"
    pipeline.apply_policy(FleetPolicy(version=3, approved_services=("openai",)).detection_policy(local))
    assert detector.upload_threshold == 1_000_000, "a threshold the new policy leaves out is the local one"
    assert kinds() == {fpb.KIND_AI_SERVICE_ACCESS}, "uploads to an approved service are not findings"


def test_every_rule_kind_of_the_wire_contract_fills_the_fleet_policy() -> None:
    """The rule kinds come from umbra.contract, which the collector's encoder uses too: a rule of
    each kind lands in its list, and a threshold rule in the thresholds."""
    from dataclasses import fields

    from umbra import contract
    from umbra.v1 import agent_pb2 as apb

    rules = [
        apb.PolicyRule(name=field, kind=kind, values=[f"v-{kind}"])
        for kind, field in contract.LIST_RULES.items()
    ]
    rules.append(
        apb.PolicyRule(name=contract.THRESHOLD_UPLOAD_BYTES, kind=contract.RULE_THRESHOLD, values=["5e6"])
    )
    rules.append(apb.PolicyRule(name="x", kind="approved_nothing_known", values=["ignored"]))
    fleet = FleetPolicy.from_wire(apb.Policy(version=4, rules=rules))
    assert set(contract.LIST_RULES.values()) <= {f.name for f in fields(FleetPolicy)}
    for kind, field in contract.LIST_RULES.items():
        assert getattr(fleet, field) == (f"v-{kind}",)
    assert fleet.thresholds == {contract.THRESHOLD_UPLOAD_BYTES: 5e6}
    assert fleet.detection_policy(Policy()).upload_threshold_bytes == 5_000_000

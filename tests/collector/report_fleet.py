"""A realistic fleet for the report tests (and the README's sample page): what each host said and
found, as plain data, so tests can compute every expected number from these lists themselves.

Names include markup on purpose: a host, a user and a process named like an attack must show as
text in the HTML and the PDF."""

from __future__ import annotations

from dataclasses import dataclass, field

from umbra import codec
from umbra.contract import PROTOCOL_VERSION
from umbra.v1 import agent_pb2, finding_pb2

from collector.storage.base import Store
from collector.storage.reads import SnapshotRow

DAY = 86400.0
HOSTILE_HOST = "ws-<script>alert('host')</script>"
HOSTILE_USER = "<b onmouseover=alert(1)>mallory</b>"
HOSTILE_PROCESS = "<img src=x onerror=alert('proc')>"
SHARED_SHA = "ab" * 32  # unapproved weights on three hosts
APPROVED_SHA = "cd" * 32


@dataclass(frozen=True)
class F:
    """One finding of the fixture: the facts the report counts."""

    id: str
    kind: str
    severity: str = "medium"
    approved: bool = False
    age_days: float = 1.0
    user: str = "alice"
    process: str = "python3"
    runtime: str = ""
    service: str = ""
    vendor: str = ""
    category: str = ""
    bytes_out: int = 0
    sha256: str = ""
    path: str = ""
    transfer: bool = False


@dataclass(frozen=True)
class H:
    host_id: str
    hostname: str
    sensors: dict[str, int]  # name -> agent_pb2 sensor state
    findings: tuple[F, ...] = ()
    enrolled: bool = True
    revoked: bool = False
    silent: bool = False
    extra: dict[str, str] = field(default_factory=dict)


ACTIVE, DEGRADED, INACTIVE = (
    agent_pb2.SENSOR_STATE_ACTIVE,
    agent_pb2.SENSOR_STATE_DEGRADED,
    agent_pb2.SENSOR_STATE_INACTIVE,
)
ALL_ACTIVE = {"process": ACTIVE, "network": ACTIVE, "files": ACTIVE, "gpu": ACTIVE}

OPENAI_API = dict(service="api.openai.com", vendor="OpenAI", category="model_api")
CHATGPT = dict(service="chatgpt.com", vendor="OpenAI", category="chat_app")
CLAUDE = dict(service="claude.ai", vendor="Anthropic", category="chat_app")
ANTHROPIC_API = dict(service="api.anthropic.com", vendor="Anthropic", category="model_api")
HF = dict(service="huggingface.co", vendor="Hugging Face", category="model_hub")

FLEET: tuple[H, ...] = (
    H(
        "h-dev-01",
        "dev-01",
        ALL_ACTIVE,
        (
            F("s1", "AI_SERVICE_ACCESS", "low", process="curl", **CHATGPT),  # type: ignore[arg-type]
            F("s2", "AI_SERVICE_ACCESS", "medium", process="python3", **OPENAI_API),  # type: ignore[arg-type]
            F("u1", "AI_DATA_UPLOAD", "high", process="python3", bytes_out=9_400_000, **OPENAI_API),  # type: ignore[arg-type]
            F("r1", "LOCAL_MODEL_RUNTIME", "medium", process="ollama", runtime="ollama"),
            F("x1", "MODEL_SERVER_EXPOSED", "high", process="ollama", runtime="ollama"),
            F("m1", "MODEL_ARTIFACT", "medium", sha256=SHARED_SHA, path="/home/alice/models/llama.gguf"),
            F("d1", "MODEL_DOWNLOAD", "medium", process="huggingface-cli", bytes_out=4_100_000_000, **HF),  # type: ignore[arg-type]
            F("old1", "AI_SERVICE_ACCESS", "high", age_days=60, process="curl", **CLAUDE),  # type: ignore[arg-type]
        ),
    ),
    H(
        "h-ml-02",
        "ml-02",
        ALL_ACTIVE,
        (
            F("g1", "GPU_AI_WORKLOAD", "medium", user="bob", process="python3"),
            F("t1", "FINE_TUNING", "high", user="bob", process="torchrun"),
            F("m2", "MODEL_ARTIFACT", "medium", user="bob", sha256=SHARED_SHA, path="/data/llama.gguf"),
            F(
                "m3",
                "MODEL_ARTIFACT",
                "low",
                approved=True,
                user="bob",
                sha256=APPROVED_SHA,
                path="/data/ok.gguf",
            ),
            F("a1", "AI_SERVICE_ACCESS", "low", approved=True, user="bob", **ANTHROPIC_API),  # type: ignore[arg-type]
            F("r2", "LOCAL_MODEL_RUNTIME", "low", approved=True, user="bob", process="vllm", runtime="vllm"),
        ),
    ),
    H(
        HOSTILE_HOST,
        "<i>evil</i>",
        {"process": ACTIVE, "network": DEGRADED, "files": ACTIVE, "gpu": INACTIVE},
        (
            F(
                "e1",
                "MODEL_EXFILTRATION",
                "critical",
                user=HOSTILE_USER,
                process=HOSTILE_PROCESS,
                sha256=SHARED_SHA,
                path="/home/m/llama.gguf",
                bytes_out=4_100_000_000,
                transfer=True,
            ),
            F(
                "m4",
                "MODEL_ARTIFACT",
                "medium",
                user=HOSTILE_USER,
                sha256=SHARED_SHA,
                path="/home/m/llama.gguf",
            ),
            F("c1", "AI_SERVICE_ACCESS", "medium", user=HOSTILE_USER, process=HOSTILE_PROCESS, **CLAUDE),  # type: ignore[arg-type]
        ),
    ),
    H(
        "h-fin-04",
        "fin-04",
        {"process": ACTIVE, "network": ACTIVE, "files": INACTIVE, "gpu": INACTIVE},
        (F("s3", "AI_SERVICE_ACCESS", "medium", user="carol", process="chrome", **CHATGPT),),  # type: ignore[arg-type]
        enrolled=True,
        revoked=True,
    ),
    H("h-quiet-05", "quiet-05", ALL_ACTIVE, (), silent=True),
    H("h-new-06", "new-06", {"process": ACTIVE}, (), enrolled=False),
)

#: Daily fleet snapshots kept by the collector: (days ago, score, level, findings, unapproved).
TREND = (
    (13, 20.0, "low", 4, 3),
    (9, 35.5, "medium", 8, 6),
    (5, 61.0, "high", 14, 11),
    (1, 72.4, "high", 19, 15),
)


def proto_finding(f: F, now: float) -> finding_pb2.Finding:
    evidence = []
    if f.runtime:
        evidence.append(finding_pb2.Evidence(runtime=finding_pb2.RuntimeEvidence(runtime_id=f.runtime)))
    if f.service:
        evidence.append(
            finding_pb2.Evidence(
                network=finding_pb2.NetworkEvidence(
                    host_name=f.service,
                    vendor=f.vendor,
                    category=f.category,
                    bytes_out=f.bytes_out,
                    source="tls_sni",
                )
            )
        )
    if f.sha256 and not f.transfer:
        evidence.append(
            finding_pb2.Evidence(
                model_file=finding_pb2.ModelFileEvidence(
                    path=f.path,
                    format="gguf",
                    sha256=f.sha256,
                    size_bytes=4_100_000_000,
                    architecture="llama",
                    parameter_count=7_241_732_096,
                )
            )
        )
    if f.transfer:
        evidence.append(
            finding_pb2.Evidence(
                transfer=finding_pb2.TransferEvidence(
                    source_path=f.path, destination="/media/usb0", sha256=f.sha256, size_bytes=f.bytes_out
                )
            )
        )
    out = finding_pb2.Finding(
        id=f.id,
        kind=codec.kind_value(f.kind),
        severity=codec.severity_value(f.severity),
        confidence=1.0,
        user=f.user,
        summary=f"{f.kind} by {f.process}",
        process=finding_pb2.Process(pid=1000, name=f.process, username=f.user),
        policy=finding_pb2.PolicyDecision(approved=f.approved, rule="fixture"),
        evidence=evidence,
    )
    out.last_seen.CopyFrom(codec.timestamp(now - f.age_days * DAY))
    out.first_seen.CopyFrom(codec.timestamp(now - f.age_days * DAY - 3600))
    return out


def load_fleet(store: Store, now: float) -> None:
    """Put FLEET and TREND into `store` through its ingest interface, as agents would."""
    for serial, h in enumerate(FLEET, start=1):
        hello = agent_pb2.Hello(
            host=agent_pb2.HostFacts(host_id=h.host_id, hostname=h.hostname, os="Linux", os_release="6.1"),
            agent_version="0.1.0",
            protocol_version=PROTOCOL_VERSION,
            sensors=[agent_pb2.SensorStatus(name=n, state=s) for n, s in h.sensors.items()],
        )
        store.upsert_host(h.host_id, hello, "ipv4:10.0.0.1:5000")
        if h.enrolled:
            store.register_agent(h.host_id, serial, now + 30 * DAY, h.hostname, renewal=False)
        if h.revoked:
            store.revoke_agent(h.host_id, now)
        if h.findings:
            store.store_batch(h.host_id, 1, [proto_finding(f, now) for f in h.findings])
        if h.silent:
            health = finding_pb2.Finding(
                id=f"silent-{h.host_id}",
                kind=codec.kind_value("AGENT_HEALTH"),
                severity=codec.severity_value("medium"),
                confidence=1.0,
                summary="host silent",
            )
            health.last_seen.CopyFrom(codec.timestamp(now - 2 * DAY))
            health.first_seen.CopyFrom(codec.timestamp(now - 2 * DAY))
            store.record_health(h.host_id, health, now - 2 * DAY)
    store.record_risk_snapshot(
        [
            SnapshotRow(_day(now - ago * DAY), "fleet", "", score, level, n, unappr)
            for ago, score, level, n, unappr in TREND
        ]
    )


def _day(when: float) -> str:
    from collector.query.times import utc_day

    return utc_day(when)

"""Detection and policy for model files on hand-built observations (no I/O), and the pure parsers
the file sensor relies on (mountinfo, the location catalog, disguising renames)."""

from __future__ import annotations

import pytest
from umbra.v1 import finding_pb2 as fpb

from agent.catalog import CatalogError
from agent.catalog.locations import default_location_catalog, parse_location_catalog
from agent.detection.artifacts import ArtifactDetector
from agent.detection.finetune import FineTuningDetector
from agent.observations import (
    ModelFileObservation,
    ModelTransferObservation,
    ProcessObservation,
    TrainingArtifactObservation,
)
from agent.policy.rules import Policy
from agent.sensors.files.renames import disguised
from agent.system.hashing import SeenSet, TokenBucket
from agent.system.mounts import parse_mountinfo

SHA = "ab" * 32
WRITER = ProcessObservation(4242, 1, "python3", "/usr/bin/python3", ("python3", "train.py"), "alice", 1000.0)


def model(**kw: object) -> ModelFileObservation:
    base: dict[str, object] = {
        "path": "/home/alice/Downloads/x.gguf",
        "format": "gguf",
        "size_bytes": 4_000_000_000,
        "sha256": SHA,
        "confidence": 0.99,
        "parameter_count": 8_000_000_000,
        "model_name": "Llama 3",
        "owner": "alice",
    }
    base.update(kw)
    return ModelFileObservation(**base)  # type: ignore[arg-type]


def test_artifact_is_one_finding_per_path() -> None:
    (draft,) = ArtifactDetector().detect(model())
    assert draft.kind == fpb.KIND_MODEL_ARTIFACT and draft.key == "/home/alice/Downloads/x.gguf"
    assert draft.severity == fpb.SEVERITY_LOW and draft.subject == SHA and draft.user == "alice"
    assert "8B parameters" in draft.summary
    assert draft.evidence[0].model_file.sha256 == SHA


def test_download_carries_hub_and_writer() -> None:
    obs = model(origin="download", hub="huggingface.co/meta-llama/Llama-3-8B", writer=WRITER)
    _, download = ArtifactDetector().detect(obs)
    assert download.kind == fpb.KIND_MODEL_DOWNLOAD and download.severity == fpb.SEVERITY_MEDIUM
    assert download.key == f"huggingface.co/meta-llama/Llama-3-8B|{SHA}" and download.process is WRITER
    net = download.evidence[1].network
    assert (net.host_name, net.product, net.bytes_in) == (
        "huggingface.co",
        "meta-llama/Llama-3-8B",
        4_000_000_000,
    )


@pytest.mark.parametrize(
    ("kind", "severity"),
    [
        ("removable_media", fpb.SEVERITY_CRITICAL),
        ("sync_folder", fpb.SEVERITY_CRITICAL),
        ("archive", fpb.SEVERITY_HIGH),
        ("rename", fpb.SEVERITY_HIGH),
    ],
)
def test_exfiltration_severity_and_key(kind: str, severity: int) -> None:
    obs = ModelTransferObservation("/m/x.gguf", "/media/alice/USB/x.dat", kind, SHA, 10, "/media/alice/USB")
    (draft,) = ArtifactDetector().detect(obs)
    assert draft.kind == fpb.KIND_MODEL_EXFILTRATION and draft.severity == severity
    assert draft.key == f"{SHA}|/media/alice/USB" and draft.occurrence == "/media/alice/USB/x.dat"
    t = draft.evidence[0].transfer
    assert (t.source_path, t.destination_kind, t.sha256) == ("/m/x.gguf", kind, SHA)


def packed(**kw: object) -> ModelTransferObservation:
    base: dict[str, object] = {
        "source_path": "",
        "destination": "/home/alice/Downloads/backup.7z",
        "kind": "archive",
        "sha256": "",
        "size_bytes": 4_000_000_000,
        "destination_root": "/home/alice/Downloads/backup.7z",
        "format": "gguf",
        "confidence": 0.5,
        "reason": "holds x.gguf (7z listing): same size as /m/x.gguf, content not verified",
        "identified_by": "size",
        "member": "x.gguf",
    }
    base.update(kw)
    return ModelTransferObservation(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("identified_by", ["size", "writer"])
def test_unverified_weights_are_low_whatever_the_destination(identified_by: str) -> None:
    """Weights known only by a size (or a writer's reads) are never high: the summary says they
    may be weights and why, and the evidence says how they were identified."""
    (draft,) = ArtifactDetector().detect(packed(identified_by=identified_by))
    assert draft.severity == fpb.SEVERITY_LOW and draft.confidence == 0.5
    assert draft.summary.startswith("Possibly model weights") and "content not verified" in draft.summary
    t = draft.evidence[0].transfer
    assert (t.identified_by, t.archive_member, t.sha256, t.source_path) == (identified_by, "x.gguf", "", "")
    assert draft.evidence[1].model_file.path == "/home/alice/Downloads/backup.7z!/x.gguf"
    assert Policy().decide(draft) is not None  # at the default confidence floor: reported


@pytest.mark.parametrize("identified_by", ["content", "hash"])
def test_verified_archive_entry_is_high_with_its_own_hash(identified_by: str) -> None:
    obs = packed(
        identified_by=identified_by,
        sha256=SHA,
        confidence=0.95,
        reason="holds x.gguf (zip listing), gguf weights by content",
        source_path="/m/x.gguf",
        source_known_by="writer",
    )
    (draft,) = ArtifactDetector().detect(obs)
    assert draft.severity == fpb.SEVERITY_HIGH and draft.summary.startswith("Model weights")
    assert draft.key == f"{SHA}|/home/alice/Downloads/backup.7z"
    t = draft.evidence[0].transfer
    assert (t.sha256, t.identified_by, t.source_path, t.source_known_by) == (
        SHA,
        identified_by,
        "/m/x.gguf",
        "writer",
    )
    assert draft.evidence[1].model_file.sha256 == SHA


def test_policy_rules_for_model_kinds() -> None:
    detector = ArtifactDetector()
    policy = Policy(approved_model_hashes=frozenset({SHA}), approved_paths=("/srv/models/",))
    (by_hash,) = detector.detect(model())
    assert policy.decide(by_hash) == fpb.PolicyDecision(approved=True, rule=f"approved_model_hashes:{SHA}")
    (by_dir,) = detector.detect(model(sha256="cd" * 32, path="/srv/models/a/b.gguf"))
    assert policy.decide(by_dir) == fpb.PolicyDecision(approved=True, rule="approved_paths:/srv/models/")
    (sibling,) = detector.detect(model(sha256="cd" * 32, path="/srv/models-old/b.gguf"))
    assert policy.decide(sibling) == fpb.PolicyDecision(approved=False, rule="default:unapproved")
    # An approved folder is no licence to carry its models out; a destination below one is approved.
    (out,) = detector.detect(
        ModelTransferObservation("/srv/models/b.gguf", "/media/u/b.gguf", "removable_media", "cd" * 32, 1)
    )
    assert not policy.decide(out).approved  # type: ignore[union-attr]
    (into,) = detector.detect(
        ModelTransferObservation("/home/b.gguf", "/srv/models/b.gguf", "sync_folder", "cd" * 32, 1)
    )
    assert policy.decide(into) == fpb.PolicyDecision(approved=True, rule="approved_paths:/srv/models/")


def test_low_confidence_formats_are_not_findings() -> None:
    (draft,) = ArtifactDetector().detect(model(format="numpy", confidence=0.4))
    assert Policy().decide(draft) is None


def test_training_artifact_with_writer_feeds_fine_tuning() -> None:
    detector = FineTuningDetector()
    obs = TrainingArtifactObservation("/home/alice/out/checkpoint-500", "trainer_checkpoint", "alice", WRITER)
    (draft,) = detector.detect(obs)
    assert draft.kind == fpb.KIND_FINE_TUNING and draft.process is not None and draft.process.pid == 4242
    assert "written_file" in draft.evidence[0].runtime.matched_on
    assert detector.detect(TrainingArtifactObservation("/x/adapter_model.safetensors", "lora_adapter")) == []
    assert ArtifactDetector().detect(obs) == []


def test_parse_mountinfo_unescapes_paths() -> None:
    text = (
        "36 35 98:0 /mnt1 /mnt/parent\\040dir rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"
        "40 1 8:17 / /media/alice/USB\\040STICK rw,nosuid shared:7 - vfat /dev/sdb1 rw\n"
        "garbage line\n"
    )
    mounts = parse_mountinfo(text)
    assert [(m.mount_point, m.fstype, m.source, m.major, m.minor) for m in mounts] == [
        ("/mnt/parent dir", "ext3", "/dev/root", 98, 0),
        ("/media/alice/USB STICK", "vfat", "/dev/sdb1", 8, 17),
    ]


@pytest.mark.parametrize(
    ("old", "new", "fmt", "hidden"),
    [
        ("a/x.gguf", "a/x.pdf", "gguf", True),
        ("a/x.gguf", "a/x.bin", "gguf", True),
        ("a/x.gguf", "a/x.dat", "gguf", True),
        ("a/x.gguf", "a/y.gguf", "gguf", False),
        ("a/blob.incomplete", "a/blob", "safetensors", False),
        ("a/x.safetensors", "a/x.safetensors", "safetensors", False),
        ("a/notes.txt", "a/x.pdf", "gguf", False),
    ],
)
def test_disguising_renames(old: str, new: str, fmt: str, hidden: bool) -> None:
    assert disguised(old, new, fmt) is hidden


def test_location_catalog_is_valid_and_strict() -> None:
    cat = default_location_catalog()
    ids = {loc.id for loc in cat.locations}
    assert {"huggingface-hub", "ollama", "lmstudio", "llama-cpp", "gpt4all", "downloads"} <= ids
    assert {s.id for s in cat.sync_folders} >= {
        "dropbox",
        "onedrive",
        "google-drive",
        "icloud-drive",
        "box",
        "nextcloud",
    }
    assert "/media" in cat.media_prefixes and "/run/media" in cat.media_prefixes
    assert all(loc.source.startswith("https://") for loc in cat.locations)
    bad = 'schema_version = 1\n[[location]]\nid="x"\nname="x"\nkind="attic"\npaths=["~/x"]\nsource="https://x"\n'
    with pytest.raises(CatalogError, match="kind"):
        parse_location_catalog(bad + '[media]\nprefixes=["/media"]\nsource="https://x"\n')


def test_seen_set_and_token_bucket() -> None:
    seen = SeenSet(limit=3)
    for fp in (5, -7, 9, 11):
        seen.add(fp)
    assert 5 in seen and -7 in seen and 9 in seen and 11 not in seen  # bounded: the 4th is ignored
    again = SeenSet(limit=10, data=seen.to_bytes())
    assert -7 in again and len(again) == 3
    bucket = TokenBucket(rate=1000, burst=100)
    assert bucket.take(50) == 0.0
    assert bucket.take(150) == pytest.approx(0.1, abs=0.02)  # 100 tokens of debt at 1000/s


def test_token_bucket_says_how_long_until_it_holds_a_quantum_not_only_until_out_of_debt() -> None:
    # The file sensor sleeps until its CPU bucket holds half its burst again: waking at every token
    # spent its whole share on its own wake-ups.
    bucket = TokenBucket(rate=10, burst=1)
    bucket.take(1.5)  # 0.5 tokens of debt
    assert bucket.wait_time() == pytest.approx(0.05, abs=0.01)
    assert bucket.wait_time(0.5) == pytest.approx(0.10, abs=0.01)
    assert bucket.wait_time(5) == pytest.approx(0.15, abs=0.01)  # never more than the burst
    assert TokenBucket(rate=10, burst=1).wait_time(0.5) == 0.0  # a full bucket holds it already

"""How an exfiltration's weights were identified, which archive entry held them and how its source
is known (TransferEvidence 6-8) reach every reader: the console's finding page and the OCSF
export render evidence field by field, so the fields show with no code of their own."""

from __future__ import annotations

from umbra import codec
from umbra.v1 import finding_pb2 as fpb

from collector.console.render import Renderer
from collector.query.export import ocsf_event


def exfiltration() -> dict[str, object]:
    finding = fpb.Finding(
        id="f-1",
        kind=fpb.KIND_MODEL_EXFILTRATION,
        severity=fpb.SEVERITY_LOW,
        confidence=0.5,
        host_id="h-1",
        summary="Possibly model weights (gguf, 4.0 GB) packed into an archive: /home/a/b.7z",
        evidence=[
            fpb.Evidence(
                transfer=fpb.TransferEvidence(
                    destination="/home/a/b.7z",
                    destination_kind="archive",
                    size_bytes=4_000_000_000,
                    identified_by="size",
                    archive_member="export/llama.gguf",
                    source_known_by="writer",
                    source_path="/home/a/llama.gguf",
                )
            )
        ],
    )
    return codec.finding_to_dict(finding)


def test_finding_page_shows_how_the_weights_were_identified() -> None:
    page = (
        Renderer([])
        .env.get_template("finding.html")
        .render(who=None, nav=[], path="/findings", f=exfiltration())
    )
    for key, value in (
        ("identified_by", "size"),
        ("archive_member", "export/llama.gguf"),
        ("source_known_by", "writer"),
    ):
        assert f'<dt>{key}</dt><dd class="mono">{value}</dd>' in page, key


def test_ocsf_export_carries_them() -> None:
    (evidence,) = ocsf_event(exfiltration())["evidences"]
    data = evidence["data"]
    assert (data["identified_by"], data["archive_member"], data["source_known_by"]) == (
        "size",
        "export/llama.gguf",
        "writer",
    )

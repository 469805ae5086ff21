"""Ground truth: the network scan on 74 real captures (nDPI's test suite), malformed ones included.

`shared/pcaps/labels.tsv` lists, per capture, each host name nDPI's dissectors extracted
(DNS question, TLS or QUIC SNI, HTTP Host). We make every labelled name an AI endpoint in a test
catalog, scan each capture, and require the findings to name exactly the capture's labelled
DNS, TLS, QUIC and HTTP names: every one of them, and no other catalogued name. Every capture
must be read without an exception, within a time limit and a memory bound.

Two places where nDPI's labels are not the names themselves, handled here and nowhere else:
- nDPI keeps only the last 80 characters of a long name (dns_exfiltration.pcap's dnscat names):
  such a label matches a reported name that ends with it.
- Labels of other protocols (SMTP banner, POP3, STUN realm) are names we do not claim to read;
  they are checked only for not being reported falsely, and any we do report (the SNI of a
  STARTTLS ClientHello) must be right.
"""

from __future__ import annotations

import collections
import random
import time
import tracemalloc
from pathlib import Path

import pytest
from umbra.v1 import finding_pb2 as fpb

from agent.catalog.endpoints import EndpointCatalog, parse_endpoint_catalog
from agent.cli.pcap import analyze_pcap, scan_pcap
from agent.netparse.capture import CaptureError

PCAPS = Path(__file__).resolve().parents[3] / "shared" / "pcaps"
CAPTURES = sorted((PCAPS / "pcap").glob("*.pcap*")) if (PCAPS / "pcap").is_dir() else []
SUPPORTED = frozenset({"DNS", "TLS", "QUIC", "HTTP", "HTTP_Proxy"})
NDPI_NAME_LIMIT = 79  # nDPI's host_server_name buffer keeps this many characters (the tail)
PER_FILE_SECONDS = 10.0
PER_FILE_PEAK_BYTES = 64 << 20

pytestmark = pytest.mark.skipif(
    not CAPTURES, reason=f"no shared captures at {PCAPS} (shared/ beside the repository)"
)


def _labels() -> dict[str, dict[str, set[str]]]:
    """capture -> {"required": names, "other": names}."""
    out: dict[str, dict[str, set[str]]] = collections.defaultdict(lambda: {"required": set(), "other": set()})
    lines = (PCAPS / "labels.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["pcap", "l4", "ndpi_proto", "host"]
    for line in lines[1:]:
        capture, _l4, proto, host = line.split("\t")
        master = proto.split(".", 1)[0]
        out[capture]["required" if master in SUPPORTED else "other"].add(host.lower())
    return out


LABELS = _labels() if CAPTURES else {}


def _truncated(label: str) -> bool:
    return len(label) >= NDPI_NAME_LIMIT


def _same(label: str, name: str) -> bool:
    return name == label or (_truncated(label) and name.endswith(label))


@pytest.fixture(scope="module")
def catalog() -> EndpointCatalog:
    """Every labelled name (of any capture) as an AI service of its own."""
    hosts = sorted({h for v in LABELS.values() for group in v.values() for h in group if not _truncated(h)})
    lines = ["schema_version = 1", ""]
    for i, host in enumerate(hosts):
        lines += [
            "[[service]]",
            f'id = "label-{i}"',
            f'vendor = "Vendor {i}"',
            f'product = "{host}"',
            'category = "model_api"',
            'risk = "medium"',
            'source = "https://github.com/ntop/nDPI/tree/dev/tests/cfgs/default/pcap"',
            f'hosts = ["{host}"]',
            "",
        ]
    return parse_endpoint_catalog("\n".join(lines), "<labels.tsv>")


def test_labels_cover_the_protocols_we_read() -> None:
    assert len(CAPTURES) == 74
    required = {h for v in LABELS.values() for h in v["required"]}
    assert len(required) >= 40


@pytest.mark.timeout(60)
@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_capture(capture: Path, catalog: EndpointCatalog) -> None:
    """Read without crash, hang or unbounded memory; report the labelled names and no others."""
    tracemalloc.start()
    started = time.process_time()
    try:
        observations, stats = analyze_pcap(capture)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    elapsed = time.process_time() - started
    assert elapsed < PER_FILE_SECONDS, f"{capture.name}: {elapsed:.1f} s CPU"
    assert peak < PER_FILE_PEAK_BYTES, f"{capture.name}: peak {peak >> 20} MiB"
    assert stats.packets > 0

    labels = LABELS.get(capture.name, {"required": set(), "other": set()})
    named = {o.host_name for o in observations if not o.resolved}
    missed = {label for label in labels["required"] if not any(_same(label, n) for n in named)}
    assert not missed, f"{capture.name}: labelled names not reported: {sorted(missed)}"

    drafts = scan_pcap(capture, catalog)
    access = {d.evidence[0].network.host_name for d in drafts if d.kind == fpb.KIND_AI_SERVICE_ACCESS}
    expected = {h for h in labels["required"] | labels["other"] if not _truncated(h)}
    extra = access - expected
    assert not extra, (
        f"{capture.name}: catalogued names reported that nDPI does not label here: {sorted(extra)}"
    )
    for label in labels["required"]:
        if not _truncated(label):
            assert label in access, f"{capture.name}: no finding for {label}"
    for draft in drafts:
        assert draft.evidence[0].network.source in ("dns", "tls_sni", "quic_sni", "http_host")


def test_ground_truth_summary(catalog: EndpointCatalog) -> None:
    """The whole suite in one number line (printed with -s; asserted to be complete)."""
    expected = found = missed = extra = 0
    for capture in CAPTURES:
        labels = LABELS.get(capture.name, {"required": set(), "other": set()})
        observations, _ = analyze_pcap(capture)
        named = {o.host_name for o in observations if not o.resolved}
        hits = {label for label in labels["required"] if any(_same(label, n) for n in named)}
        expected += len(labels["required"])
        found += len(hits)
        missed += len(labels["required"]) - len(hits)
        access = {
            d.evidence[0].network.host_name
            for d in scan_pcap(capture, catalog)
            if d.kind == fpb.KIND_AI_SERVICE_ACCESS
        }
        extra += len(access - labels["required"] - labels["other"])
    print(f"\npcap ground truth: expected {expected}, found {found}, missed {missed}, extra {extra}")
    assert (found, missed, extra) == (expected, 0, 0)


@pytest.mark.timeout(120)
def test_damaged_captures_are_read_safely(tmp_path: Path) -> None:
    """Truncated and bit-flipped copies of the captures: counted errors, never an exception."""
    rng = random.Random(1234)
    for capture in CAPTURES[::3]:
        data = capture.read_bytes()
        for variant in range(3):
            damaged = bytearray(data)
            if variant == 0:
                damaged = damaged[: rng.randrange(24, len(damaged))]
            else:
                for _ in range(max(1, len(damaged) // 200)):
                    pos = rng.randrange(24, len(damaged))
                    damaged[pos] = rng.randrange(256)
            path = tmp_path / f"{variant}-{capture.name}"
            path.write_bytes(bytes(damaged))
            try:
                analyze_pcap(path)
            except CaptureError:
                pytest.fail(f"{path.name}: header intact, yet refused")


def test_not_a_capture(tmp_path: Path) -> None:
    path = tmp_path / "x.pcap"
    path.write_bytes(b"GIF89a not a capture")
    with pytest.raises(CaptureError):
        analyze_pcap(path)
